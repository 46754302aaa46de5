/* kernels/reduce (sum/mean/var/max/min/argmax over a dim or all, cumprod) and the ranges of
 * kernels/index (linspace, arange) against naive references. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "index.h"
#include "reduce.h"
#include "sd_error.h"

static sd_tensor randt(int nd, const int64_t *shape, unsigned long long seed)
{
	sd_tensor t;
	if (sd_tensor_new(&t, SD_F32, nd, shape) != 0) abort();
	check_fill(sd_tensor_data(&t), sd_tensor_numel(&t), seed);
	return t;
}

/* reference over (outer, D, inner) of a contiguous buffer */
static double ref_reduce(sd_redop op, const float *x, int64_t D, int64_t inner, int unbiased)
{
	double s = 0, m, v = 0, mx = -INFINITY, mn = INFINITY;
	for (int64_t d = 0; d < D; d++) {
		double t = x[d * inner];
		s += t;
		if (t > mx || t != t) mx = t != t || mx != mx ? NAN : t;
		if (t < mn || t != t) mn = t != t || mn != mn ? NAN : t;
	}
	m = s / (double)D;
	for (int64_t d = 0; d < D; d++) v += (x[d * inner] - m) * (x[d * inner] - m);
	switch (op) {
	case SD_RED_SUM: return s;
	case SD_RED_MEAN: return m;
	case SD_RED_VAR: return unbiased ? (D > 1 ? v / (double)(D - 1) : NAN) : v / (double)D;
	case SD_RED_MAX: return mx;
	default: return mn;
	}
}

static int close_enough(double got, double want, double tol)
{
	if (isnan(want)) return isnan(got);
	return fabs(got - want) <= tol * (1 + fabs(want));
}

static void test_dims(void)
{
	static const int64_t shapes[][4] = {{3, 5, 7, 2}, {1, 17, 1, 33}, {4, 1, 9, 1}, {2, 3, 300, 5}};
	for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
		const int64_t *s = shapes[si];
		sd_tensor x = randt(4, s, 100 + si);
		for (int dim = -4; dim < 4; dim++) {
			int d = dim < 0 ? dim + 4 : dim;
			int64_t outer = 1, inner = 1, D = s[d];
			for (int i = 0; i < d; i++) outer *= s[i];
			for (int i = d + 1; i < 4; i++) inner *= s[i];
			for (int op = 0; op < SD_REDOP_COUNT; op++)
				for (int keep = 0; keep < 2; keep++) {
					sd_tensor r;
					int unb = (dim & 1) == 0;
					CHECK(sd_reduce((sd_redop)op, &x, dim, keep, unb, &r) == 0, "%s", sd_geterr());
					if (check_case_failed) return;
					CHECK(r.ndim == (keep ? 4 : 3), "ndim");
					if (keep) CHECK(r.shape[d] == 1, "keepdim");
					const float *pr = sd_tensor_data(&r), *px = sd_tensor_data(&x);
					int bad = 0;
					for (int64_t o = 0; o < outer; o++)
						for (int64_t j = 0; j < inner; j++) {
							double w = ref_reduce((sd_redop)op, px + o * D * inner + j, D, inner, unb);
							if (!close_enough(pr[o * inner + j], w, 1e-6)) bad++;
						}
					CHECK(bad == 0, "%s dim %d keep %d shape %zu: %d wrong", sd_redop_name((sd_redop)op), dim, keep, si, bad);
					sd_tensor_release(&r);
				}
			/* argmax / argmin against a scan */
			for (int want_min = 0; want_min < 2; want_min++) {
				sd_tensor r;
				CHECK(sd_argmax(&x, dim, 0, want_min, &r) == 0 && r.dtype == SD_I64, "argmax");
				const int64_t *pi = sd_tensor_data(&r);
				const float *px = sd_tensor_data(&x);
				int bad = 0;
				for (int64_t o = 0; o < outer; o++)
					for (int64_t j = 0; j < inner; j++) {
						const float *p = px + o * D * inner + j;
						int64_t best = 0;
						for (int64_t k = 1; k < D; k++)
							if (want_min ? p[k * inner] < p[best * inner] : p[k * inner] > p[best * inner]) best = k;
						if (pi[o * inner + j] != best) bad++;
					}
				CHECK(bad == 0, "arg%s dim %d: %d wrong", want_min ? "min" : "max", dim, bad);
				sd_tensor_release(&r);
			}
		}
		sd_tensor_release(&x);
	}
}

static void test_strided_and_all(void)
{
	int64_t s[3] = {6, 7, 8};
	sd_tensor x = randt(3, s, 5), xt, r;
	sd_tensor_transpose(&x, &xt, 0, 2); /* (8, 7, 6) */
	CHECK(sd_reduce(SD_RED_SUM, &xt, 0, 0, 0, &r) == 0, "%s", sd_geterr());
	/* sum over xt's dim 0 = sum over x's dim 2; r[j, i] = sum_k x[i, j, k] */
	const float *px = sd_tensor_data(&x), *pr = sd_tensor_data(&r);
	double w = 0;
	for (int k = 0; k < 8; k++) w += px[(4 * 7 + 3) * 8 + k];
	CHECK(fabs(pr[3 * 6 + 4] - w) < 1e-6, "strided sum");
	sd_tensor_release(&r);
	/* full reductions, including a large one (parallel partial sums) */
	int64_t sb[1] = {3000017};
	sd_tensor big = randt(1, sb, 6);
	float *pb = sd_tensor_data(&big);
	for (int64_t i = 0; i < sb[0]; i++) pb[i] += 0.25f;
	for (int op = 0; op < SD_REDOP_COUNT; op++) {
		CHECK(sd_reduce_all((sd_redop)op, &big, 1, &r) == 0 && r.ndim == 0, "all %s", sd_redop_name((sd_redop)op));
		double want = ref_reduce((sd_redop)op, pb, sb[0], 1, 1);
		float got = *(float *)sd_tensor_data(&r);
		CHECK(close_enough(got, want, 1e-6), "all %s: %.9g vs %.9g", sd_redop_name((sd_redop)op), got, want);
		sd_tensor_release(&r);
	}
	CHECK(sd_argmax_all(&big, 0, &r) == 0, "argmax all");
	int64_t best = 0;
	for (int64_t i = 1; i < sb[0]; i++)
		if (pb[i] > pb[best]) best = i;
	CHECK(*(int64_t *)sd_tensor_data(&r) == best, "argmax all");
	sd_tensor_release(&r);
	/* NaN propagates through max/min and is argmax's pick */
	pb[12345] = NAN;
	CHECK(sd_reduce_all(SD_RED_MAX, &big, 1, &r) == 0 && isnan(*(float *)sd_tensor_data(&r)), "max NaN");
	sd_tensor_release(&r);
	CHECK(sd_reduce_all(SD_RED_MIN, &big, 1, &r) == 0 && isnan(*(float *)sd_tensor_data(&r)), "min NaN");
	sd_tensor_release(&r);
	CHECK(sd_argmax_all(&big, 0, &r) == 0 && *(int64_t *)sd_tensor_data(&r) == 12345, "argmax NaN");
	sd_tensor_release(&r);
	/* var of one element: unbiased NaN, biased 0 */
	int64_t s1[2] = {3, 1};
	sd_tensor one = randt(2, s1, 1);
	CHECK(sd_reduce(SD_RED_VAR, &one, 1, 0, 1, &r) == 0 && isnan(((float *)sd_tensor_data(&r))[0]), "var n=1");
	sd_tensor_release(&r);
	CHECK(sd_reduce(SD_RED_VAR, &one, 1, 0, 0, &r) == 0 && ((float *)sd_tensor_data(&r))[0] == 0, "var biased n=1");
	sd_tensor_release(&r);
	CHECK(sd_reduce(SD_RED_SUM, &one, 2, 0, 0, &r) != 0, "dim out of range");
	sd_tensor h;
	sd_tensor_to(&one, &h, SD_F16);
	CHECK(sd_reduce(SD_RED_SUM, &h, 0, 0, 0, &r) != 0 && strstr(sd_geterr(), "f16"), "dtype error");
	sd_tensor_release(&h);
	sd_tensor_release(&one);
	sd_tensor_release(&big);
	sd_tensor_release(&xt);
	sd_tensor_release(&x);
}

static void test_cumprod(void)
{
	/* alphas_cumprod as the schedulers build it: sequential float products */
	enum { T = 1000 };
	float betas[T], want[T];
	for (int i = 0; i < T; i++) {
		float sb = sqrtf(0.00085f) + (sqrtf(0.012f) - sqrtf(0.00085f)) * (float)i / (float)(T - 1);
		betas[i] = 1.0f - sb * sb;
	}
	float acc = 1.0f;
	for (int i = 0; i < T; i++) want[i] = acc = acc * betas[i];
	int64_t s[1] = {T};
	sd_tensor x, r;
	sd_tensor_new(&x, SD_F32, 1, s);
	memcpy(sd_tensor_data(&x), betas, sizeof betas);
	CHECK(sd_cumprod(&x, 0, &r) == 0, "%s", sd_geterr());
	CHECK(memcmp(sd_tensor_data(&r), want, sizeof want) == 0, "cumprod is not the sequential float product");
	sd_tensor_release(&r);
	sd_tensor_release(&x);
	/* along a middle dim */
	int64_t s3[3] = {2, 5, 3};
	sd_tensor y = randt(3, s3, 3);
	CHECK(sd_cumprod(&y, 1, &r) == 0, "cumprod dim 1");
	const float *py = sd_tensor_data(&y), *pr = sd_tensor_data(&r);
	int bad = 0;
	for (int o = 0; o < 2; o++)
		for (int j = 0; j < 3; j++) {
			float a = 1;
			for (int d = 0; d < 5; d++) {
				a *= py[(o * 5 + d) * 3 + j];
				if (pr[(o * 5 + d) * 3 + j] != a) bad++;
			}
		}
	CHECK(bad == 0, "cumprod dim 1: %d wrong", bad);
	sd_tensor_release(&r);
	sd_tensor_release(&y);
}

static void test_ranges(void)
{
	static const struct { float a, b; int64_t n; } cases[] = {
		{0, 999, 50}, {0.00085f, 0.012f, 1000}, {1, 0, 7}, {-3.3f, 7.7f, 1}, {0, 1, 2}, {5, 5, 4}, {0, 1, 0}};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		sd_tensor r;
		CHECK(sd_linspace(cases[c].a, cases[c].b, cases[c].n, &r) == 0, "linspace");
		const float *p = sd_tensor_data(&r);
		float a = cases[c].a, b = cases[c].b;
		int64_t n = cases[c].n;
		float step = n > 1 ? (b - a) / (float)(n - 1) : 0;
		int bad = 0;
		for (int64_t i = 0; i < n; i++) {
			float w;
			if (n == 1) w = a;
			else if (i < n / 2) { float t = step * (float)i; w = a + t; }
			else { float t = step * (float)(n - 1 - i); w = b - t; }
			if (p[i] != w) bad++;
		}
		CHECK(bad == 0 && r.shape[0] == n, "linspace case %zu: %d wrong", c, bad);
		if (n > 1) CHECK(p[0] == a && p[n - 1] == b, "linspace ends exact");
		sd_tensor_release(&r);
	}
	sd_tensor r;
	CHECK(sd_arange(0, 1000, 50, SD_I64, &r) == 0 && r.shape[0] == 20, "arange i64");
	CHECK(((int64_t *)sd_tensor_data(&r))[19] == 950, "arange i64 last");
	sd_tensor_release(&r);
	CHECK(sd_arange(0.5, 2.0, 0.3, SD_F32, &r) == 0 && r.shape[0] == 5, "arange float length %lld", (long long)r.shape[0]);
	CHECK(((float *)sd_tensor_data(&r))[4] == (float)(0.5 + 4 * 0.3), "arange float values");
	sd_tensor_release(&r);
	CHECK(sd_arange(10, 0, -3, SD_F32, &r) == 0 && r.shape[0] == 4 && ((float *)sd_tensor_data(&r))[3] == 1, "arange down");
	sd_tensor_release(&r);
	CHECK(sd_arange(0, 10, -1, SD_F32, &r) != 0, "arange wrong direction");
	CHECK(sd_arange(0, 10, 0, SD_F32, &r) != 0, "arange step 0");
	CHECK(sd_arange(0, 3, 1, SD_F16, &r) == 0 && r.dtype == SD_F16, "arange f16");
	sd_tensor_release(&r);
}

int main(void)
{
	RUN("reduce: sum/mean/var/max/min/argmax over every dim, keepdim", test_dims());
	RUN("reduce: strided input, full reductions, NaN, errors", test_strided_and_all());
	RUN("reduce: cumprod is torch's sequential float32 product", test_cumprod());
	RUN("index: linspace (torch float32 algorithm) and arange", test_ranges());
	CHECK_DONE();
}
