/* Reductions and cumprod. */
#include <math.h>
#include <string.h>
#include "reduce.h"
#include "sd_error.h"

#define RED_PAR_MIN (1 << 15)
#define RED_TILE 256     /* inner positions per task */
#define RED_CHUNK 65536  /* elements per task of a whole-row reduction */

static const char *const redop_names[SD_REDOP_COUNT] = {"sum", "mean", "var", "max", "min"};
const char *sd_redop_name(sd_redop op) { return (unsigned)op < SD_REDOP_COUNT ? redop_names[op] : "?"; }

/* partial results of one contiguous run: sum (double), max, min (NaN-propagating) */
typedef struct part { double sum; float max, min; } part;

static part run_stats(const float *x, int64_t n, int want)
{
	part p = {0, -INFINITY, INFINITY};
	if (want == SD_RED_SUM || want == SD_RED_MEAN || want == SD_RED_VAR) {
		double a[4] = {0, 0, 0, 0};
		int64_t i = 0;
		for (; i + 4 <= n; i += 4)
			for (int j = 0; j < 4; j++) a[j] += x[i + j];
		for (; i < n; i++) a[0] += x[i];
		p.sum = (a[0] + a[1]) + (a[2] + a[3]);
	} else {
		float mx = -INFINITY, mn = INFINITY;
		int nan = 0;
		for (int64_t i = 0; i < n; i++) {
			float v = x[i];
			mx = v > mx ? v : mx;
			mn = v < mn ? v : mn;
			nan |= v != v;
		}
		if (nan) mx = mn = NAN;
		p.max = mx;
		p.min = mn;
	}
	return p;
}

static double run_sqdev(const float *x, int64_t n, double mean)
{
	double a[4] = {0, 0, 0, 0};
	int64_t i = 0;
	for (; i + 4 <= n; i += 4)
		for (int j = 0; j < 4; j++) {
			double d = x[i + j] - mean;
			a[j] += d * d;
		}
	for (; i < n; i++) {
		double d = x[i] - mean;
		a[0] += d * d;
	}
	return (a[0] + a[1]) + (a[2] + a[3]);
}

static float finish(sd_redop op, part p, double sq, int64_t D, int unbiased)
{
	switch (op) {
	case SD_RED_SUM: return (float)p.sum;
	case SD_RED_MEAN: return D ? (float)(p.sum / (double)D) : NAN;
	case SD_RED_VAR: {
		int64_t dd = unbiased ? D - 1 : D;
		return dd > 0 ? (float)(sq / (double)dd) : NAN;
	}
	case SD_RED_MAX: return p.max;
	case SD_RED_MIN: return p.min;
	default: return NAN;
	}
}

/* one whole row of D contiguous values, split over threads when long */
static float reduce_row(sd_redop op, const float *x, int64_t D, int unbiased, int parallel)
{
	int64_t chunks = parallel && D >= 2 * RED_CHUNK ? (D + RED_CHUNK - 1) / RED_CHUNK : 1;
	if (chunks == 1) {
		part p = run_stats(x, D, op);
		double sq = op == SD_RED_VAR && D ? run_sqdev(x, D, p.sum / (double)D) : 0;
		return finish(op, p, sq, D, unbiased);
	}
	part tot = {0, -INFINITY, INFINITY};
	int nan = 0;
	#pragma omp parallel
	{
		part mine = {0, -INFINITY, INFINITY};
		int mynan = 0;
		#pragma omp for schedule(static)
		for (int64_t c = 0; c < chunks; c++) {
			int64_t s = c * RED_CHUNK, len = D - s < RED_CHUNK ? D - s : RED_CHUNK;
			part p = run_stats(x + s, len, op);
			mine.sum += p.sum;
			mynan |= p.max != p.max;
			mine.max = p.max > mine.max ? p.max : mine.max;
			mine.min = p.min < mine.min ? p.min : mine.min;
		}
		#pragma omp critical
		{
			tot.sum += mine.sum;
			nan |= mynan;
			tot.max = mine.max > tot.max ? mine.max : tot.max;
			tot.min = mine.min < tot.min ? mine.min : tot.min;
		}
	}
	if (nan) tot.max = tot.min = NAN;
	double sq = 0;
	if (op == SD_RED_VAR) {
		double mean = tot.sum / (double)D;
		#pragma omp parallel for schedule(static) reduction(+ : sq)
		for (int64_t c = 0; c < chunks; c++) {
			int64_t s = c * RED_CHUNK, len = D - s < RED_CHUNK ? D - s : RED_CHUNK;
			sq += run_sqdev(x + s, len, mean);
		}
	}
	return finish(op, tot, sq, D, unbiased);
}

void sd_reduce_f32(sd_redop op, const float *x, int64_t outer, int64_t D, int64_t inner, int unbiased, float *y)
{
	if (outer <= 0 || inner <= 0) return;
	int par = outer * D * inner >= RED_PAR_MIN;
	if (inner == 1) {
		if (outer == 1) { y[0] = reduce_row(op, x, D, unbiased, par); return; }
		#pragma omp parallel for schedule(static) if (par)
		for (int64_t o = 0; o < outer; o++) y[o] = reduce_row(op, x + o * D, D, unbiased, 0);
		return;
	}
	int64_t tiles = (inner + RED_TILE - 1) / RED_TILE, tasks = outer * tiles;
	#pragma omp parallel for schedule(static) if (par)
	for (int64_t t = 0; t < tasks; t++) {
		int64_t o = t / tiles, j0 = (t % tiles) * RED_TILE;
		int64_t w = inner - j0 < RED_TILE ? inner - j0 : RED_TILE;
		const float *xo = x + o * D * inner + j0;
		float *yo = y + o * inner + j0;
		double s[RED_TILE], q[RED_TILE];
		float mx[RED_TILE], mn[RED_TILE];
		for (int64_t j = 0; j < w; j++) { s[j] = 0; q[j] = 0; mx[j] = -INFINITY; mn[j] = INFINITY; }
		if (op == SD_RED_MAX || op == SD_RED_MIN) {
			for (int64_t d = 0; d < D; d++)
				for (int64_t j = 0; j < w; j++) {
					float v = xo[d * inner + j];
					mx[j] = v > mx[j] || v != v ? v : mx[j];
					mn[j] = v < mn[j] || v != v ? v : mn[j];
				}
			/* a NaN once taken stays: comparisons with it are false */
			for (int64_t j = 0; j < w; j++) yo[j] = op == SD_RED_MAX ? mx[j] : mn[j];
			continue;
		}
		for (int64_t d = 0; d < D; d++)
			for (int64_t j = 0; j < w; j++) s[j] += xo[d * inner + j];
		if (op == SD_RED_VAR && D) {
			for (int64_t j = 0; j < w; j++) s[j] /= (double)D;
			for (int64_t d = 0; d < D; d++)
				for (int64_t j = 0; j < w; j++) {
					double dv = xo[d * inner + j] - s[j];
					q[j] += dv * dv;
				}
			for (int64_t j = 0; j < w; j++) s[j] *= (double)D;
		}
		for (int64_t j = 0; j < w; j++) {
			part p = {s[j], 0, 0};
			yo[j] = finish(op, p, q[j], D, unbiased);
		}
	}
}

void sd_argmax_f32(const float *x, int64_t outer, int64_t D, int64_t inner, int want_min, int64_t *idx)
{
	int64_t n = outer * inner;
	#pragma omp parallel for schedule(static) if (n * D >= RED_PAR_MIN)
	for (int64_t t = 0; t < n; t++) {
		int64_t o = t / inner, j = t % inner;
		const float *p = x + o * D * inner + j;
		int64_t best = 0;
		float bv = D ? p[0] : 0;
		for (int64_t d = 1; d < D && bv == bv; d++) {
			float v = p[d * inner];
			if (v != v || (want_min ? v < bv : v > bv)) { bv = v; best = d; }
		}
		idx[t] = best;
	}
}

void sd_cumprod_f32(const float *x, int64_t outer, int64_t D, int64_t inner, float *y)
{
	#pragma omp parallel for schedule(static) if (outer * D * inner >= RED_PAR_MIN)
	for (int64_t o = 0; o < outer; o++) {
		const float *xo = x + o * D * inner;
		float *yo = y + o * D * inner;
		if (D > 0) memcpy(yo, xo, sizeof(float) * (size_t)inner);
		for (int64_t d = 1; d < D; d++)
			for (int64_t j = 0; j < inner; j++) yo[d * inner + j] = yo[(d - 1) * inner + j] * xo[d * inner + j];
	}
}

/* checks, contiguous input and the (outer, D, inner) split */
static int prepare(const sd_tensor *x, int *dim, sd_tensor *xc, int64_t *outer, int64_t *D, int64_t *inner)
{
	if (x->dtype != SD_F32) return sd_seterr("expected an f32 tensor, got %s", sd_dtype_name(x->dtype));
	int nd = x->ndim;
	int d = *dim;
	if (d < 0) d += nd;
	if (nd == 0 && (d == 0 || d == -1)) d = 0; /* a 0-dim tensor: dim 1 / -1 is the element */
	else if (d < 0 || d >= nd)
		return sd_seterr("dimension %d (0-based) out of range for %s", *dim, SD_SHAPE_STR(x));
	*dim = d;
	*outer = 1;
	*inner = 1;
	*D = nd ? x->shape[d] : 1;
	for (int i = 0; i < d; i++) *outer *= x->shape[i];
	for (int i = d + 1; i < nd; i++) *inner *= x->shape[i];
	return sd_tensor_contiguous(x, xc);
}

static void out_shape(const sd_tensor *x, int dim, int keepdim, int *nd, int64_t *shape)
{
	int n = 0;
	for (int i = 0; i < x->ndim; i++) {
		if (i == dim) {
			if (keepdim) shape[n++] = 1;
		} else {
			shape[n++] = x->shape[i];
		}
	}
	*nd = n;
}

int sd_reduce(sd_redop op, const sd_tensor *x, int dim, int keepdim, int unbiased, sd_tensor *out)
{
	if ((unsigned)op >= SD_REDOP_COUNT) return sd_seterr("unknown reduction %d", (int)op);
	sd_tensor xc, r;
	int64_t outer, D, inner, shape[SD_MAX_DIMS];
	int nd;
	if (prepare(x, &dim, &xc, &outer, &D, &inner) != 0) return -1;
	if ((op == SD_RED_MAX || op == SD_RED_MIN) && D == 0 && outer * inner > 0) {
		sd_tensor_release(&xc);
		return sd_seterr("%s over the empty dimension %d of %s", sd_redop_name(op), dim + 1, SD_SHAPE_STR(x));
	}
	out_shape(x, dim, keepdim, &nd, shape);
	if (sd_tensor_new(&r, SD_F32, nd, shape) != 0) { sd_tensor_release(&xc); return -1; }
	sd_reduce_f32(op, sd_tensor_data(&xc), outer, D, inner, unbiased, sd_tensor_data(&r));
	sd_tensor_release(&xc);
	*out = r;
	return 0;
}

int sd_reduce_all(sd_redop op, const sd_tensor *x, int unbiased, sd_tensor *out)
{
	if ((unsigned)op >= SD_REDOP_COUNT) return sd_seterr("unknown reduction %d", (int)op);
	if (x->dtype != SD_F32) return sd_seterr("expected an f32 tensor, got %s", sd_dtype_name(x->dtype));
	int64_t n = sd_tensor_numel(x);
	if ((op == SD_RED_MAX || op == SD_RED_MIN) && n == 0)
		return sd_seterr("%s of the empty tensor %s", sd_redop_name(op), SD_SHAPE_STR(x));
	sd_tensor xc, r;
	if (sd_tensor_contiguous(x, &xc) != 0) return -1;
	if (sd_tensor_new(&r, SD_F32, 0, x->shape) != 0) { sd_tensor_release(&xc); return -1; }
	sd_reduce_f32(op, sd_tensor_data(&xc), 1, n, 1, unbiased, sd_tensor_data(&r));
	sd_tensor_release(&xc);
	*out = r;
	return 0;
}

int sd_argmax(const sd_tensor *x, int dim, int keepdim, int want_min, sd_tensor *out)
{
	sd_tensor xc, r;
	int64_t outer, D, inner, shape[SD_MAX_DIMS];
	int nd;
	if (prepare(x, &dim, &xc, &outer, &D, &inner) != 0) return -1;
	if (D == 0) {
		sd_tensor_release(&xc);
		return sd_seterr("%s over the empty dimension %d of %s", want_min ? "argmin" : "argmax", dim + 1, SD_SHAPE_STR(x));
	}
	out_shape(x, dim, keepdim, &nd, shape);
	if (sd_tensor_new(&r, SD_I64, nd, shape) != 0) { sd_tensor_release(&xc); return -1; }
	sd_argmax_f32(sd_tensor_data(&xc), outer, D, inner, want_min, sd_tensor_data(&r));
	sd_tensor_release(&xc);
	*out = r;
	return 0;
}

int sd_argmax_all(const sd_tensor *x, int want_min, sd_tensor *out)
{
	if (x->dtype != SD_F32) return sd_seterr("expected an f32 tensor, got %s", sd_dtype_name(x->dtype));
	int64_t n = sd_tensor_numel(x);
	if (n == 0) return sd_seterr("%s of the empty tensor %s", want_min ? "argmin" : "argmax", SD_SHAPE_STR(x));
	sd_tensor xc, r;
	if (sd_tensor_contiguous(x, &xc) != 0) return -1;
	if (sd_tensor_new(&r, SD_I64, 0, x->shape) != 0) { sd_tensor_release(&xc); return -1; }
	sd_argmax_f32(sd_tensor_data(&xc), 1, n, 1, want_min, sd_tensor_data(&r));
	sd_tensor_release(&xc);
	*out = r;
	return 0;
}

int sd_cumprod(const sd_tensor *x, int dim, sd_tensor *out)
{
	sd_tensor xc, r;
	int64_t outer, D, inner;
	if (prepare(x, &dim, &xc, &outer, &D, &inner) != 0) return -1;
	if (sd_tensor_new(&r, SD_F32, x->ndim, x->shape) != 0) { sd_tensor_release(&xc); return -1; }
	sd_cumprod_f32(sd_tensor_data(&xc), outer, D, inner, sd_tensor_data(&r));
	sd_tensor_release(&xc);
	*out = r;
	return 0;
}
