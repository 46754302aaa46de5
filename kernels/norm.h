/* Normalisation over f32 buffers: group norm (optionally fused with SiLU, as the SD ResNet blocks
 * use it), layer norm over the last dim, and a numerically stable softmax. Means and variances
 * are accumulated in double. */
#ifndef SD_NORM_H
#define SD_NORM_H

#include <stdint.h>
#include "tensor.h"

/* Mean and biased variance of n floats (double accumulation, shifted by x[0]). */
void sd_moments_f32(const float *x, int64_t n, double *mean, double *var);

/* x, y contiguous (N, C, HW); weight/bias (C) or NULL; C % groups == 0. silu: apply SiLU after. */
void sd_group_norm_f32(const float *x, float *y, int64_t N, int64_t C, int64_t HW, int64_t groups,
                       const float *weight, const float *bias, float eps, int silu);
/* rows of D, each normalised; weight/bias (D) or NULL. */
void sd_layer_norm_f32(const float *x, float *y, int64_t rows, int64_t D, const float *weight,
                       const float *bias, float eps);
/* x, y contiguous (outer, D, inner); softmax over D. y may equal x. */
void sd_softmax_f32(const float *x, float *y, int64_t outer, int64_t D, int64_t inner);

/* Tensor level: new contiguous f32 outputs; inputs f32, weight/bias may be NULL. */
int sd_group_norm(const sd_tensor *x, int64_t groups, const sd_tensor *weight, const sd_tensor *bias,
                  float eps, int silu, sd_tensor *out);
int sd_layer_norm(const sd_tensor *x, const sd_tensor *weight, const sd_tensor *bias, float eps, sd_tensor *out);
int sd_softmax(const sd_tensor *x, int dim, sd_tensor *out); /* dim 0-based, negative from the end */

#endif
