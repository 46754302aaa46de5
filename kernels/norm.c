/* Group norm, layer norm and softmax. */
#include <math.h>
#include <string.h>
#include "activation.h"
#include "cpu.h"
#include "norm.h"
#include "sd_error.h"

void sd_moments_avx512(const float *x, int64_t n, double k, double *s1, double *s2);
void sd_norm_apply_avx512(const float *x, float *y, int64_t n, float m, float ml, float s, float t);
void sd_layer_apply_avx512(const float *x, float *y, int64_t D, float m, float ml, float r, const float *w, const float *b);

#define NORM_PAR_MIN (1 << 15)

void sd_moments_f32(const float *x, int64_t n, double *mean, double *var)
{
	if (n <= 0) { *mean = 0; *var = 0; return; }
	/* Shifting by the first value keeps the one-pass sums free of cancellation unless the data
	 * lie very far from x[0] compared with their spread. */
	double k = x[0], s1, s2;
	if (sd_cpu_features()->avx512) {
		sd_moments_avx512(x, n, k, &s1, &s2);
	} else {
		double a[4] = {0, 0, 0, 0}, b[4] = {0, 0, 0, 0};
		int64_t i = 0;
		for (; i + 4 <= n; i += 4)
			for (int j = 0; j < 4; j++) {
				double d = (double)x[i + j] - k;
				a[j] += d;
				b[j] += d * d;
			}
		for (; i < n; i++) {
			double d = (double)x[i] - k;
			a[0] += d;
			b[0] += d * d;
		}
		s1 = (a[0] + a[1]) + (a[2] + a[3]);
		s2 = (b[0] + b[1]) + (b[2] + b[3]);
	}
	double m = s1 / (double)n;
	double v = s2 / (double)n - m * m;
	*mean = k + m;
	*var = v > 0 ? v : 0;
}

/* y = (x - m) * s + t over n, then SiLU when asked. The mean is m + ml (a float and the rest of
 * the double mean): x - m is exact near the mean, so data with a small spread far from zero
 * keep their precision. */
static inline void norm_apply(const float *x, float *y, int64_t n, float m, float ml, float s, float t, int silu)
{
	if (sd_cpu_features()->avx512) {
		sd_norm_apply_avx512(x, y, n, m, ml, s, t);
	} else {
		#pragma omp simd
		for (int64_t i = 0; i < n; i++) y[i] = ((x[i] - m) - ml) * s + t;
	}
	if (silu) sd_act_f32_serial(SD_ACT_SILU, y, y, (size_t)n);
}

void sd_group_norm_f32(const float *x, float *y, int64_t N, int64_t C, int64_t HW, int64_t groups,
                       const float *weight, const float *bias, float eps, int silu)
{
	if (N <= 0 || C <= 0 || groups <= 0) return;
	int64_t cg = C / groups, ng = N * groups;
	#pragma omp parallel for schedule(dynamic, 1) if (N * C * HW >= NORM_PAR_MIN)
	for (int64_t t = 0; t < ng; t++) {
		int64_t n = t / groups, g = t % groups;
		const float *xg = x + (n * C + g * cg) * HW;
		float *yg = y + (n * C + g * cg) * HW;
		double mean, var;
		sd_moments_f32(xg, cg * HW, &mean, &var);
		float m = (float)mean, ml = (float)(mean - (double)m), rstd = (float)(1.0 / sqrt(var + (double)eps));
		for (int64_t c = 0; c < cg; c++) {
			int64_t ch = g * cg + c;
			float s = weight ? rstd * weight[ch] : rstd, sh = bias ? bias[ch] : 0.0f;
			norm_apply(xg + c * HW, yg + c * HW, HW, m, ml, s, sh, silu);
		}
	}
}

void sd_layer_norm_f32(const float *x, float *y, int64_t rows, int64_t D, const float *weight,
                       const float *bias, float eps)
{
	#pragma omp parallel for schedule(static) if (rows * D >= NORM_PAR_MIN)
	for (int64_t r = 0; r < rows; r++) {
		const float *xr = x + r * D;
		float *yr = y + r * D;
		double mean, var;
		sd_moments_f32(xr, D, &mean, &var);
		float m = (float)mean, ml = (float)(mean - (double)m), rstd = (float)(1.0 / sqrt(var + (double)eps));
		if (sd_cpu_features()->avx512) {
			sd_layer_apply_avx512(xr, yr, D, m, ml, rstd, weight, bias);
		} else if (weight && bias) {
			#pragma omp simd
			for (int64_t i = 0; i < D; i++) yr[i] = (((xr[i] - m) - ml) * rstd) * weight[i] + bias[i];
		} else if (weight) {
			#pragma omp simd
			for (int64_t i = 0; i < D; i++) yr[i] = (((xr[i] - m) - ml) * rstd) * weight[i];
		} else if (bias) {
			#pragma omp simd
			for (int64_t i = 0; i < D; i++) yr[i] = ((xr[i] - m) - ml) * rstd + bias[i];
		} else {
			#pragma omp simd
			for (int64_t i = 0; i < D; i++) yr[i] = ((xr[i] - m) - ml) * rstd;
		}
	}
}

static void softmax_row(const float *x, float *y, int64_t D)
{
	float m = -INFINITY;
	int nan = 0;
	#pragma omp simd reduction(max : m) reduction(| : nan)
	for (int64_t i = 0; i < D; i++) {
		m = x[i] > m ? x[i] : m;
		nan |= x[i] != x[i];
	}
	if (nan) m = NAN;
	#pragma omp simd
	for (int64_t i = 0; i < D; i++) y[i] = x[i] - m;
	sd_act_f32_serial(SD_ACT_EXP, y, y, (size_t)D);
	/* vector float partial sums of blocks, added in double */
	double s = 0;
	for (int64_t i0 = 0; i0 < D; i0 += 512) {
		int64_t i1 = i0 + 512 < D ? i0 + 512 : D;
		float p = 0;
		#pragma omp simd reduction(+ : p)
		for (int64_t i = i0; i < i1; i++) p += y[i];
		s += p;
	}
	float inv = (float)(1.0 / s);
	#pragma omp simd
	for (int64_t i = 0; i < D; i++) y[i] *= inv;
}

#define SM_TILE 512 /* inner positions per task when softmax runs over a non-last dim */

void sd_softmax_f32(const float *x, float *y, int64_t outer, int64_t D, int64_t inner)
{
	if (outer <= 0 || D <= 0 || inner <= 0) return;
	int par = outer * D * inner >= NORM_PAR_MIN;
	if (inner == 1) {
		#pragma omp parallel for schedule(static) if (par)
		for (int64_t o = 0; o < outer; o++) softmax_row(x + o * D, y + o * D, D);
		return;
	}
	int64_t tiles = (inner + SM_TILE - 1) / SM_TILE, tasks = outer * tiles;
	#pragma omp parallel for schedule(static) if (par)
	for (int64_t t = 0; t < tasks; t++) {
		int64_t o = t / tiles, j0 = (t % tiles) * SM_TILE;
		int64_t w = inner - j0 < SM_TILE ? inner - j0 : SM_TILE;
		const float *xo = x + o * D * inner + j0;
		float *yo = y + o * D * inner + j0;
		float m[SM_TILE];
		double s[SM_TILE];
		for (int64_t j = 0; j < w; j++) { m[j] = -INFINITY; s[j] = 0; }
		for (int64_t d = 0; d < D; d++)
			for (int64_t j = 0; j < w; j++) {
				float v = xo[d * inner + j];
				m[j] = v > m[j] || v != v ? v : m[j];
			}
		for (int64_t d = 0; d < D; d++) {
			float *yr = yo + d * inner;
			const float *xr = xo + d * inner;
			for (int64_t j = 0; j < w; j++) yr[j] = m[j] != m[j] ? m[j] : xr[j] - m[j];
			sd_act_f32_serial(SD_ACT_EXP, yr, yr, (size_t)w);
			for (int64_t j = 0; j < w; j++) s[j] += yr[j];
		}
		for (int64_t j = 0; j < w; j++) m[j] = (float)(1.0 / s[j]);
		for (int64_t d = 0; d < D; d++)
			for (int64_t j = 0; j < w; j++) yo[d * inner + j] *= m[j];
	}
}

static int vec_param(const sd_tensor *p, int64_t n, const char *what, const sd_tensor *x, sd_tensor *c)
{
	if (!sd_dtype_is_float(p->dtype)) return sd_seterr("%s must be a float tensor, got %s", what, sd_dtype_name(p->dtype));
	if (p->ndim != 1 || p->shape[0] != n)
		return sd_seterr("%s has shape %s, expected (%lld) for input %s", what, SD_SHAPE_STR(p), (long long)n, SD_SHAPE_STR(x));
	if (p->dtype != SD_F32) return sd_tensor_to(p, c, SD_F32); /* f16/bf16 weights widened */
	return sd_tensor_contiguous(p, c);
}

/* The operands of a normalisation of x with optional per-feature weight and bias of n values:
 * f32 contiguous copies (or views) of x, weight and bias, and a new f32 output of x's shape. */
typedef struct {
	sd_tensor x, weight, bias, out;
} norm_operands;

/* Fills *op; on failure nothing is held and the error is set. */
static int norm_operands_take(norm_operands *op, const sd_tensor *x, const sd_tensor *weight, const sd_tensor *bias,
                              int64_t n)
{
	*op = (norm_operands){0};
	if (weight && vec_param(weight, n, "weight", x, &op->weight) != 0) return -1;
	if (bias && vec_param(bias, n, "bias", x, &op->bias) != 0) goto fail;
	if (sd_tensor_contiguous(x, &op->x) != 0) goto fail;
	if (sd_tensor_new(&op->out, SD_F32, x->ndim, x->shape) != 0) { sd_tensor_release(&op->x); goto fail; }
	return 0;
fail:
	if (op->weight.storage) sd_tensor_release(&op->weight);
	if (op->bias.storage) sd_tensor_release(&op->bias);
	return -1;
}

/* Releases the inputs taken by norm_operands_take and hands the output to *out. */
static void norm_operands_finish(norm_operands *op, sd_tensor *out)
{
	sd_tensor_release(&op->x);
	if (op->weight.storage) sd_tensor_release(&op->weight);
	if (op->bias.storage) sd_tensor_release(&op->bias);
	*out = op->out;
}

int sd_group_norm(const sd_tensor *x, int64_t groups, const sd_tensor *weight, const sd_tensor *bias,
                  float eps, int silu, sd_tensor *out)
{
	if (x->dtype != SD_F32) return sd_seterr("expected an f32 tensor, got %s", sd_dtype_name(x->dtype));
	if (x->ndim < 2) return sd_seterr("input %s must be (N, C, ...)", SD_SHAPE_STR(x));
	int64_t C = x->shape[1];
	if (groups <= 0 || C % groups != 0)
		return sd_seterr("%lld groups do not divide the %lld channels of %s", (long long)groups, (long long)C, SD_SHAPE_STR(x));
	if (!(eps >= 0)) return sd_seterr("eps must be >= 0");
	norm_operands op;
	if (norm_operands_take(&op, x, weight, bias, C) != 0) return -1;
	int64_t N = x->shape[0], HW = 1;
	for (int i = 2; i < x->ndim; i++) HW *= x->shape[i];
	sd_group_norm_f32(sd_tensor_data(&op.x), sd_tensor_data(&op.out), N, C, HW, groups,
	                  weight ? sd_tensor_data(&op.weight) : NULL, bias ? sd_tensor_data(&op.bias) : NULL, eps, silu);
	norm_operands_finish(&op, out);
	return 0;
}

int sd_layer_norm(const sd_tensor *x, const sd_tensor *weight, const sd_tensor *bias, float eps, sd_tensor *out)
{
	if (x->dtype != SD_F32) return sd_seterr("expected an f32 tensor, got %s", sd_dtype_name(x->dtype));
	if (x->ndim < 1) return sd_seterr("input %s has no last dimension", SD_SHAPE_STR(x));
	if (!(eps >= 0)) return sd_seterr("eps must be >= 0");
	int64_t D = x->shape[x->ndim - 1];
	norm_operands op;
	if (norm_operands_take(&op, x, weight, bias, D) != 0) return -1;
	int64_t rows = D ? sd_tensor_numel(x) / D : 0;
	sd_layer_norm_f32(sd_tensor_data(&op.x), sd_tensor_data(&op.out), rows, D,
	                  weight ? sd_tensor_data(&op.weight) : NULL, bias ? sd_tensor_data(&op.bias) : NULL, eps);
	norm_operands_finish(&op, out);
	return 0;
}

int sd_softmax(const sd_tensor *x, int dim, sd_tensor *out)
{
	if (x->dtype != SD_F32) return sd_seterr("expected an f32 tensor, got %s", sd_dtype_name(x->dtype));
	int nd = x->ndim ? x->ndim : 1;
	if (dim < 0) dim += nd;
	if (dim < 0 || dim >= nd) return sd_seterr("dimension %d out of range for %s", dim, SD_SHAPE_STR(x));
	sd_tensor xc, r;
	if (sd_tensor_contiguous(x, &xc) != 0) return -1;
	if (sd_tensor_new(&r, SD_F32, x->ndim, x->shape) != 0) { sd_tensor_release(&xc); return -1; }
	int64_t outer = 1, D = x->ndim ? x->shape[dim] : 1, inner = 1;
	for (int i = 0; i < dim; i++) outer *= x->shape[i];
	for (int i = dim + 1; i < x->ndim; i++) inner *= x->shape[i];
	sd_softmax_f32(sd_tensor_data(&xc), sd_tensor_data(&r), outer, D, inner);
	sd_tensor_release(&xc);
	*out = r;
	return 0;
}
