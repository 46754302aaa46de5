/* 2-D convolution (cross-correlation, as torch.nn.functional.conv2d), NCHW, on sgemm.
 *
 * 1x1 convolutions with stride 1 and no padding are one product per image and group straight
 * on the input (no copy). Small images (<= 256 output pixels) gather all the images of the batch
 * into one im2col matrix (banded beyond 48 MB) for one product per group, scattered into NCHW;
 * f16/bf16 weights are widened once per call. The others gather the input into an im2col matrix
 * in bands of output rows, the band sized so that the workspace stays at a few MB, and multiply
 * each band. */
#ifndef SD_CONV2D_H
#define SD_CONV2D_H

#include <stdint.h>
#include "dtype.h"

typedef struct sd_conv2d_params {
	int64_t stride_h, stride_w;
	int64_t pad_h, pad_w;
	int64_t dil_h, dil_w;
	int64_t groups;
} sd_conv2d_params;

/* Output size along one axis: (in + 2 pad - dil (k - 1) - 1) / stride + 1, or a value <= 0
 * when the kernel does not fit. */
int64_t sd_conv2d_outsize(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil);

/* y (n, o, oh, ow) contiguous = conv(x (n, c, h, w) contiguous, weight (o, c/groups, kh, kw)
 * contiguous in f32/f16/bf16) + bias (o, f32, or NULL). Returns 0, or -1 after sd_seterr. */
int sd_conv2d(const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
              const void *weight, sd_dtype wdt, int64_t o, int64_t kh, int64_t kw,
              const float *bias, const sd_conv2d_params *p, float *y);

#endif
