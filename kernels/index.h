/* Joining, gathering and ranges: cat, stack, embedding lookup, linspace, arange.
 * (where is in elementwise.h, cumprod in reduce.h.) */
#ifndef SD_INDEX_H
#define SD_INDEX_H

#include <stdint.h>
#include "tensor.h"

/* Concatenate n tensors of one dtype along dim (0-based, negative from the end); shapes equal
 * except in dim. New contiguous tensor of that dtype. */
int sd_cat(const sd_tensor *const *ts, int n, int dim, sd_tensor *out);
/* Stack n tensors of one shape along a new dim (0..ndim; negative from the end, -1 = new last). */
int sd_stack(const sd_tensor *const *ts, int n, int dim, sd_tensor *out);

/* out[i, :] = weight[ids[i], :] converted to f32. ids: n integer values as doubles. Returns -1
 * (sd_seterr naming the id and its position) when one is not an integer in [0, rows). */
int sd_embedding_f32(const void *weight, sd_dtype wdt, int64_t rows, int64_t dim, const double *ids, int64_t n, float *out);
/* weight (V, D) f32/f16/bf16; ids any dtype holding integers -> (ids.shape..., D) f32 */
int sd_embedding(const sd_tensor *weight, const sd_tensor *ids, sd_tensor *out);

/* torch.linspace in float32: step = (b - a) / (n - 1) in float; i < n / 2: a + i * step, else
 * b - (n - 1 - i) * step. */
void sd_linspace_f32(float a, float b, int64_t n, float *y);
int sd_linspace(double a, double b, int64_t n, sd_tensor *out);
/* torch.arange: ceil((stop - start) / step) values start + i * step (computed in double). */
int sd_arange(double start, double stop, double step, sd_dtype dt, sd_tensor *out);

#endif
