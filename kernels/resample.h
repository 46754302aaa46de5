/* Resampling of NCHW f32 images, matching torch.nn.functional.interpolate on CPU:
 * 'nearest' (source index floor(dst * scale), scale = in/out or 1/scale_factor) and 'bilinear'
 * with align_corners=False. */
#ifndef SD_RESAMPLE_H
#define SD_RESAMPLE_H

#include <stdint.h>
#include "tensor.h"

/* x (planes, ih, iw) -> y (planes, oh, ow). sh, sw: the scale factors the caller gave (output /
 * input), or 0 to use the sizes' ratio, as torch does. 0, or -1 when out of memory. */
int sd_upsample_nearest_f32(const float *x, float *y, int64_t planes, int64_t ih, int64_t iw,
                             int64_t oh, int64_t ow, double sh, double sw);
int sd_upsample_bilinear_f32(const float *x, float *y, int64_t planes, int64_t ih, int64_t iw,
                              int64_t oh, int64_t ow, double sh, double sw);

typedef enum sd_resample_mode { SD_RESAMPLE_NEAREST, SD_RESAMPLE_BILINEAR } sd_resample_mode;

/* Tensor level: x (N, C, H, W) f32 (also (C, H, W)). Give either the output size (oh, ow > 0)
 * or the scale factors (sh, sw > 0; output size floor(in * s)). */
int sd_interpolate(const sd_tensor *x, sd_resample_mode mode, int64_t oh, int64_t ow, double sh, double sw, sd_tensor *out);

#endif
