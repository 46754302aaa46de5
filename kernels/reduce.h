/* Reductions over one dimension (or all) of f32 data, accumulated in double where it matters. */
#ifndef SD_REDUCE_H
#define SD_REDUCE_H

#include <stdint.h>
#include "tensor.h"

typedef enum sd_redop { SD_RED_SUM, SD_RED_MEAN, SD_RED_VAR, SD_RED_MAX, SD_RED_MIN, SD_REDOP_COUNT } sd_redop;

const char *sd_redop_name(sd_redop op);

/* x contiguous (outer, D, inner) -> y (outer, inner). var: divides by D - 1 when unbiased (NaN
 * for D = 1), else D. max/min propagate NaN; of an empty D, sum is 0, mean/var NaN, max -inf,
 * min +inf. */
void sd_reduce_f32(sd_redop op, const float *x, int64_t outer, int64_t D, int64_t inner, int unbiased, float *y);
/* 0-based index of the first maximum (a NaN counts as the maximum), (outer, inner) results.
 * want_min: of the minimum instead. */
void sd_argmax_f32(const float *x, int64_t outer, int64_t D, int64_t inner, int want_min, int64_t *idx);

/* Tensor level. dim 0-based (negative from the end); keepdim keeps it as size 1. The output is a
 * new contiguous f32 tensor (i64 for argmax, 0-based indices). */
int sd_reduce(sd_redop op, const sd_tensor *x, int dim, int keepdim, int unbiased, sd_tensor *out);
/* over every element: a 0-dim tensor */
int sd_reduce_all(sd_redop op, const sd_tensor *x, int unbiased, sd_tensor *out);
int sd_argmax(const sd_tensor *x, int dim, int keepdim, int want_min, sd_tensor *out);
int sd_argmax_all(const sd_tensor *x, int want_min, sd_tensor *out); /* flat index, 0-dim i64 */

/* Cumulative product along dim, sequential in f32 (torch's float32 cumprod); new f32 tensor. */
void sd_cumprod_f32(const float *x, int64_t outer, int64_t D, int64_t inner, float *y);
int sd_cumprod(const sd_tensor *x, int dim, sd_tensor *out);

#endif
