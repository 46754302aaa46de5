/* kernels/gemm against a naive double-precision product. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "dtype.h"
#include "gemm.h"

/* op(X)[i][j] for a row-major X with leading dimension ld */
static double at(const float *x, int t, int64_t ld, int64_t i, int64_t j)
{
	return t ? x[j * ld + i] : x[i * ld + j];
}

/* C_ref = alpha op(A) op(B) + beta C0; also sum |terms| per element for the tolerance */
static void ref_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha, const float *a,
                     int64_t lda, const float *b, int64_t ldb, double beta, const float *c0,
                     int64_t ldc, double *want, double *mag)
{
	for (int64_t i = 0; i < m; i++)
		for (int64_t j = 0; j < n; j++) {
			double s = 0, sa = 0;
			for (int64_t p = 0; p < k; p++) {
				double t = at(a, ta, lda, i, p) * at(b, tb, ldb, p, j);
				s += t;
				sa += fabs(t);
			}
			double c = beta != 0 ? beta * c0[i * ldc + j] : 0;
			want[i * n + j] = alpha * s + c;
			mag[i * n + j] = fabs(alpha) * sa + fabs(c) + 1e-30;
		}
}

/* every element within rel * magnitude (+ a tiny absolute floor); returns the worst ratio */
static double worst(const float *c, int64_t ldc, const double *want, const double *mag, int64_t m,
                    int64_t n, double rel)
{
	double w = 0;
	for (int64_t i = 0; i < m; i++)
		for (int64_t j = 0; j < n; j++) {
			double d = fabs((double)c[i * ldc + j] - want[i * n + j]);
			double r = d / (rel * mag[i * n + j] + 1e-7);
			if (!(r <= w)) w = r;
		}
	return w;
}

static float *rnd(int64_t n, unsigned long long seed)
{
	float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
	check_fill(p, n, seed);
	return p;
}

/* round f32 values to the half type (so the reference sees what the kernel sees) */
static uint16_t *to_half(float *x, int64_t n, sd_dtype dt)
{
	uint16_t *h = malloc((size_t)(n > 0 ? n : 1) * 2);
	sd_convert(x, SD_F32, h, dt, (size_t)n);
	sd_convert(h, dt, x, SD_F32, (size_t)n);
	return h;
}

static void one_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, int pad, float alpha,
                     float beta, sd_dtype adt, sd_dtype bdt, unsigned long long seed)
{
	int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
	int64_t arows = ta ? k : m, brows = tb ? n : k;
	float *a = rnd(arows * lda, seed), *b = rnd(brows * ldb, seed + 1), *c = rnd(m * ldc, seed + 2);
	float *c0 = malloc((size_t)(m * ldc > 0 ? m * ldc : 1) * sizeof(float));
	memcpy(c0, c, (size_t)(m * ldc) * sizeof(float));
	uint16_t *ah = adt != SD_F32 ? to_half(a, arows * lda, adt) : NULL;
	uint16_t *bh = bdt != SD_F32 ? to_half(b, brows * ldb, bdt) : NULL;
	double *want = malloc((size_t)(m * n + 1) * sizeof(double)), *mag = malloc((size_t)(m * n + 1) * sizeof(double));
	ref_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c0, ldc, want, mag);
	int rc = sd_gemm_ex(ta, tb, m, n, k, alpha, ah ? (void *)ah : (void *)a, adt, lda,
	                    bh ? (void *)bh : (void *)b, bdt, ldb, beta, c, ldc);
	CHECK(rc == 0, "gemm_ex failed");
	double w = worst(c, ldc, want, mag, m, n, 1e-5);
	CHECK(w <= 1, "ta=%d tb=%d m=%lld n=%lld k=%lld %s/%s: error %.3g x tolerance", ta, tb,
	      (long long)m, (long long)n, (long long)k, sd_dtype_name(adt), sd_dtype_name(bdt), w);
	/* padding columns of C untouched */
	for (int64_t i = 0; i < m; i++)
		for (int64_t j = n; j < ldc; j++) CHECK(c[i * ldc + j] == c0[i * ldc + j], "C padding written");
	free(a); free(b); free(c); free(c0); free(ah); free(bh); free(want); free(mag);
}

static void test_sgemm_shapes(void)
{
	unsigned long long seed = 1;
	int64_t sizes[] = {1, 2, 3, 7, 16, 33, 65};
	for (int ta = 0; ta < 2; ta++)
		for (int tb = 0; tb < 2; tb++)
			for (int si = 0; si < 7; si++) {
				int64_t m = sizes[si], n = sizes[(si + 3) % 7], k = sizes[(si + 5) % 7];
				one_gemm(ta, tb, m, n, k, si % 3, si & 1 ? 0.5f : 1.0f, si % 3 == 2 ? 0.75f : 0.0f,
				         SD_F32, SD_F32, seed++);
			}
	/* sd_sgemm itself */
	float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {1, 0, 0, 1, 1, 1}, c[4];
	CHECK(sd_sgemm(0, 0, 2, 2, 3, 1, a, 3, b, 2, 0, c, 2) == 0, "sgemm");
	CHECK(c[0] == 4 && c[1] == 5 && c[2] == 10 && c[3] == 11, "2x3 . 3x2 = %g %g %g %g", c[0], c[1], c[2], c[3]);
}

static void test_edge(void)
{
	float c[4] = {1, 2, 3, 4}, a[1] = {0}, b[1] = {0};
	/* k = 0: C = beta C */
	CHECK(sd_sgemm(0, 0, 2, 2, 0, 1, a, 1, b, 2, 0.5f, c, 2) == 0, "k=0");
	CHECK(c[0] == 0.5f && c[3] == 2.0f, "k=0 scales C");
	CHECK(sd_sgemm(0, 0, 2, 2, 0, 1, a, 1, b, 2, 0.0f, c, 2) == 0 && c[1] == 0 && c[2] == 0, "k=0 beta=0");
	/* m = 0 / n = 0: nothing */
	CHECK(sd_sgemm(0, 0, 0, 2, 3, 1, a, 3, b, 2, 0, c, 2) == 0, "m=0");
	/* bad leading dimension */
	CHECK(sd_sgemm(0, 0, 2, 2, 3, 1, a, 2, b, 2, 0, c, 2) == -1, "lda < k rejected");
	CHECK(sd_gemm_ex(0, 0, 1, 1, 1, 1, a, SD_I32, 1, b, SD_F32, 1, 0, c, 1) == -1, "i32 rejected");
	CHECK(sd_gemm_batched(0, 0, 1, 1, 1, 1, a, 1, 0, b, 1, 0, 0, c, 1, 0, 2) == -1, "stride_c 0 rejected");
}

static void test_half(void)
{
	unsigned long long seed = 100;
	sd_dtype hs[2] = {SD_F16, SD_BF16};
	for (int hi = 0; hi < 2; hi++)
		for (int ta = 0; ta < 2; ta++)
			for (int tb = 0; tb < 2; tb++) {
				one_gemm(ta, tb, 37, 29, 19, 1, 1.0f, 0.0f, hs[hi], SD_F32, seed++);
				one_gemm(ta, tb, 37, 29, 19, 0, 1.0f, 1.0f, SD_F32, hs[hi], seed++);
				one_gemm(ta, tb, 5, 9, 11, 2, 2.0f, 0.5f, hs[hi], hs[1 - hi], seed++);
			}
	/* more than one widened tile (tiles are >= 128 rows, ~4 MB): m, n > tile with a long k */
	one_gemm(0, 1, 300, 3, 8200, 0, 1.0f, 0.0f, SD_F16, SD_F32, seed++);
	one_gemm(0, 1, 3, 290, 8200, 0, 1.0f, 0.0f, SD_F32, SD_BF16, seed++);
	one_gemm(1, 0, 260, 2, 8200, 3, 1.0f, 0.0f, SD_BF16, SD_F32, seed++);
	one_gemm(1, 0, 2, 270, 8200, 1, 1.0f, 0.0f, SD_F32, SD_F16, seed++);
}

static void test_batched(void)
{
	for (int variant = 0; variant < 4; variant++) {
		int64_t batch = variant == 3 ? 1 : 2 + variant * 3, m = 13, n = 9, k = 21;
		int ta = variant & 1, tb = (variant >> 1) & 1;
		int64_t lda = (ta ? m : k) + 1, ldb = (tb ? k : n), ldc = n + 2;
		int64_t sa = (ta ? k : m) * lda + 5, sb = variant == 2 ? 0 : (tb ? n : k) * ldb, sc = m * ldc + 3;
		float *a = rnd(batch * sa, 7 + variant), *b = rnd(batch * (sb ? sb : (tb ? n : k) * ldb), 8);
		float *c = rnd(batch * sc, 9), *c0 = malloc((size_t)(batch * sc) * sizeof(float));
		memcpy(c0, c, (size_t)(batch * sc) * sizeof(float));
		CHECK(sd_gemm_batched(ta, tb, m, n, k, 1.5f, a, lda, sa, b, ldb, sb, 0.25f, c, ldc, sc, batch) == 0,
		      "batched");
		double *want = malloc((size_t)(m * n) * sizeof(double)), *mag = malloc((size_t)(m * n) * sizeof(double));
		for (int64_t i = 0; i < batch; i++) {
			ref_gemm(ta, tb, m, n, k, 1.5, a + i * sa, lda, b + i * sb, ldb, 0.25, c0 + i * sc, ldc, want, mag);
			double w = worst(c + i * sc, ldc, want, mag, m, n, 1e-5);
			CHECK(w <= 1, "batch %lld variant %d: %.3g x tolerance", (long long)i, variant, w);
		}
		free(a); free(b); free(c); free(c0); free(want); free(mag);
	}
	/* many small products (the parallel path) */
	int64_t batch = 64, m = 7, n = 5, k = 3;
	float *a = rnd(batch * m * k, 1), *b = rnd(batch * k * n, 2), *c = calloc((size_t)(batch * m * n), sizeof(float));
	CHECK(sd_gemm_batched(0, 0, m, n, k, 1, a, k, m * k, b, n, k * n, 0, c, n, m * n, batch) == 0, "batched 64");
	double *want = malloc((size_t)(m * n) * sizeof(double)), *mag = malloc((size_t)(m * n) * sizeof(double));
	for (int64_t i = 0; i < batch; i++) {
		ref_gemm(0, 0, m, n, k, 1, a + i * m * k, k, b + i * k * n, n, 0, NULL, n, want, mag);
		CHECK(worst(c + i * m * n, n, want, mag, m, n, 1e-5) <= 1, "batch %lld of 64", (long long)i);
	}
	free(a); free(b); free(c); free(want); free(mag);
}

static void test_linear(void)
{
	sd_dtype dts[3] = {SD_F32, SD_F16, SD_BF16};
	for (int di = 0; di < 3; di++)
		for (int withb = 0; withb < 2; withb++) {
			int64_t m = 23, n = 17, k = 31, ldx = k + 3, ldw = k + 1, ldy = n + 2;
			float *x = rnd(m * ldx, 11), *w = rnd(n * ldw, 12), *bias = rnd(n, 13), *y = rnd(m * ldy, 14);
			uint16_t *wh = dts[di] != SD_F32 ? to_half(w, n * ldw, dts[di]) : NULL;
			CHECK(sd_linear(m, n, k, x, ldx, wh ? (void *)wh : (void *)w, dts[di], ldw,
			                withb ? bias : NULL, y, ldy) == 0, "linear");
			double *want = malloc((size_t)(m * n) * sizeof(double)), *mag = malloc((size_t)(m * n) * sizeof(double));
			ref_gemm(0, 1, m, n, k, 1, x, ldx, w, ldw, 0, NULL, n, want, mag);
			if (withb)
				for (int64_t i = 0; i < m; i++)
					for (int64_t j = 0; j < n; j++) {
						want[i * n + j] += bias[j];
						mag[i * n + j] += fabs(bias[j]);
					}
			double wr = worst(y, ldy, want, mag, m, n, 1e-5);
			CHECK(wr <= 1, "linear %s bias=%d: %.3g x tolerance", sd_dtype_name(dts[di]), withb, wr);
			free(x); free(w); free(bias); free(y); free(wh); free(want); free(mag);
		}
}

int main(void)
{
	RUN("gemm: f32 shapes, transposes, leading dims, alpha/beta", test_sgemm_shapes());
	RUN("gemm: k=0, m=0 and rejected arguments", test_edge());
	RUN("gemm: f16/bf16 operands widened tile by tile", test_half());
	RUN("gemm: batched with strides and broadcast", test_batched());
	RUN("gemm: linear with f32/f16/bf16 weights and bias", test_linear());
	sd_workspace_release();
	CHECK_DONE();
}
