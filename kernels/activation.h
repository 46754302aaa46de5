/* Pointwise unary functions (activations and elementary maths) over f32 buffers, vectorised with
 * SLEEF (AVX-512 when the CPU has it, else SSE2, else scalar libm). Results are within a few ulp
 * of the double-precision reference. gelu is the exact (erf) form, x Phi(x), computed with a
 * series fitted for this library (about 5x faster than SLEEF's erff) that keeps its relative
 * accuracy in the negative tail, where 1 + erf would cancel; gelu(-inf) is 0. sigmoid, silu and
 * quick_gelu are x / (1 + exp(-z)) as torch computes them; gelu_tanh is x sigmoid(2u), the tanh
 * form without its cancellation. */
#ifndef SD_ACTIVATION_H
#define SD_ACTIVATION_H

#include <stddef.h>
#include <stdint.h>
#include "tensor.h"

typedef enum sd_act {
	SD_ACT_NEG, SD_ACT_EXP, SD_ACT_LOG, SD_ACT_SQRT, SD_ACT_RSQRT, SD_ACT_ABS, SD_ACT_SIN,
	SD_ACT_COS, SD_ACT_TANH, SD_ACT_SIGMOID, SD_ACT_SILU, SD_ACT_GELU, SD_ACT_GELU_TANH,
	SD_ACT_QUICK_GELU, SD_ACT_COUNT
} sd_act;

const char *sd_act_name(sd_act op); /* "silu", ... */

/* y[i] = f(x[i]) for i < n, contiguous; y may equal x. Parallel (OpenMP) on large n. */
void sd_act_f32(sd_act op, const float *x, float *y, size_t n);
/* Single-threaded version of the same, for callers that parallelise themselves. */
void sd_act_f32_serial(sd_act op, const float *x, float *y, size_t n);
/* Scalar reference-quality single value (used for tails and strided data). */
float sd_act_scalar(sd_act op, float x);

/* GEGLU, the SD feed-forward: x is rows of 2*half values [a | b]; y (rows, half) = a * gelu(b). */
void sd_geglu_f32(const float *x, float *y, int64_t rows, int64_t half);
/* y[i] = silu(a[i] + b[i]) (y may equal a or b). */
void sd_add_silu_f32(const float *a, const float *b, float *y, size_t n);

/* Tensor level: new contiguous f32 tensor f(x); x must be f32. */
int sd_activation(sd_act op, const sd_tensor *x, sd_tensor *out);
/* x (..., 2h) f32 -> (..., h) */
int sd_geglu(const sd_tensor *x, sd_tensor *out);

#endif
