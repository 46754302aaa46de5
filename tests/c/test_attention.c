/* kernels/attention against a naive double-precision softmax(Q K^T) V. */
#include <stdint.h>
#include <string.h>

#include "attention.h"
#include "check.h"
#include "cpu.h"
#include "dtype.h"
#include "gemm.h"
#include "gemm_bf16.h"
#include "precision.h"

/* Set while the cases run under precision bf16: the reference then takes q, k, v rounded to
 * bf16, so what is left to tolerate is the bf16 rounding of the softmax weights. */
static int bf16_mode;

static void round_bf16(float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++) x[i] = sd_bf16_to_f32(sd_f32_to_bf16(x[i]));
}

typedef struct {
	int64_t B, H, N, M, d, dv;
	int64_t qs[3], ks[3], vs[3]; /* batch, head, row strides */
	float scale;
	int causal;
	float amp; /* input amplitude */
} acase;

static void ref_attn(const acase *c, const float *q, const float *k, const float *v, double *want,
                     double *mag)
{
	double *s = malloc((size_t)(c->M > 0 ? c->M : 1) * sizeof(double));
	for (int64_t b = 0; b < c->B; b++)
		for (int64_t h = 0; h < c->H; h++)
			for (int64_t i = 0; i < c->N; i++) {
				const float *qi = q + b * c->qs[0] + h * c->qs[1] + i * c->qs[2];
				double mx = -INFINITY;
				int64_t lim = c->causal ? (i + 1 < c->M ? i + 1 : c->M) : c->M;
				for (int64_t j = 0; j < lim; j++) {
					const float *kj = k + b * c->ks[0] + h * c->ks[1] + j * c->ks[2];
					double t = 0;
					for (int64_t e = 0; e < c->d; e++) t += (double)qi[e] * kj[e];
					s[j] = t * c->scale;
					if (s[j] > mx) mx = s[j];
				}
				double sum = 0;
				for (int64_t j = 0; j < lim; j++) sum += (s[j] = exp(s[j] - mx));
				for (int64_t e = 0; e < c->dv; e++) {
					double o = 0, oa = 0;
					for (int64_t j = 0; j < lim; j++) {
						double vv = v[b * c->vs[0] + h * c->vs[1] + j * c->vs[2] + e];
						o += s[j] * vv;
						oa += s[j] * fabs(vv);
					}
					int64_t idx = ((b * c->N + i) * c->H + h) * c->dv + e;
					want[idx] = lim ? o / sum : 0;
					mag[idx] = lim ? oa / sum : 0;
				}
			}
	free(s);
}

/* extent in elements of a strided (B, H, rows, cols) operand */
static int64_t extent(const int64_t st[3], int64_t B, int64_t H, int64_t rows, int64_t cols)
{
	return (B - 1) * st[0] + (H - 1) * st[1] + (rows > 0 ? (rows - 1) * st[2] : 0) + cols;
}

static void run_case(acase c, unsigned long long seed)
{
	int64_t nq = extent(c.qs, c.B, c.H, c.N, c.d), nk = extent(c.ks, c.B, c.H, c.M, c.d);
	int64_t nv = extent(c.vs, c.B, c.H, c.M, c.dv), no = c.B * c.N * c.H * c.dv;
	float *q = malloc((size_t)nq * 4 + 4), *k = malloc((size_t)nk * 4 + 4), *v = malloc((size_t)nv * 4 + 4);
	float *out = malloc((size_t)no * 4 + 4);
	double *want = malloc((size_t)no * 8 + 8), *mag = malloc((size_t)no * 8 + 8);
	check_fill(q, nq, seed);
	check_fill(k, nk, seed + 1);
	check_fill(v, nv, seed + 2);
	for (int64_t i = 0; i < nq; i++) q[i] *= c.amp;
	for (int64_t i = 0; i < no; i++) out[i] = NAN;
	int rc = sd_attention(c.B, c.H, c.N, c.M, c.d, c.dv, q, c.qs, k, c.ks, v, c.vs, c.scale, c.causal, out);
	CHECK(rc == 0, "attention failed");
	if (bf16_mode) {
		round_bf16(q, nq);
		round_bf16(k, nk);
		round_bf16(v, nv);
	}
	ref_attn(&c, q, k, v, want, mag);
	double worst = 0;
	/* f32 scores: the error of a score is ~ eps * |scale| * sum |q k|, which exp turns into a
	 * relative error of the weights. bf16: each weight is rounded to 8 bits (2^-9 relative) while
	 * the sum that divides them is not: at most 2 * 2^-9 of the weighted |v|. */
	double tol = 2e-5 * (1 + c.amp * fabs(c.scale) * c.d / 4) + (bf16_mode ? 4.5e-3 : 0);
	for (int64_t i = 0; i < no; i++) {
		double r = fabs(out[i] - want[i]) / (tol * (mag[i] + 1e-3));
		if (!(r <= worst)) worst = r;
	}
	CHECK(worst <= 1, "%sB=%lld H=%lld N=%lld M=%lld d=%lld dv=%lld causal=%d: error %.3g x tolerance",
	      bf16_mode ? "bf16: " : "", (long long)c.B, (long long)c.H, (long long)c.N, (long long)c.M,
	      (long long)c.d, (long long)c.dv, c.causal, worst);
	free(q); free(k); free(v); free(out); free(want); free(mag);
}

/* contiguous (B, H, rows, cols) strides */
static void contig(int64_t st[3], int64_t H, int64_t rows, int64_t cols)
{
	st[2] = cols; st[1] = rows * cols; st[0] = H * rows * cols;
}
/* (B, rows, H*cols) buffer viewed as (B, H, rows, cols): the permuted linear output */
static void permuted(int64_t st[3], int64_t H, int64_t rows, int64_t cols)
{
	st[2] = H * cols; st[1] = cols; st[0] = rows * H * cols;
}

static acase mk(int64_t B, int64_t H, int64_t N, int64_t M, int64_t d, int64_t dv, int causal, int perm)
{
	acase c = {B, H, N, M, d, dv, {0}, {0}, {0}, 1.0f / sqrtf((float)d), causal, 1.0f};
	if (perm) {
		permuted(c.qs, H, N, d); permuted(c.ks, H, M, d); permuted(c.vs, H, M, dv);
	} else {
		contig(c.qs, H, N, d); contig(c.ks, H, M, d); contig(c.vs, H, M, dv);
	}
	return c;
}

static void test_small(void)
{
	unsigned long long s = 1;
	run_case(mk(1, 1, 1, 1, 1, 1, 0, 0), s++);
	run_case(mk(1, 1, 5, 7, 3, 3, 0, 0), s++);
	run_case(mk(2, 3, 9, 4, 8, 5, 0, 0), s++);
	run_case(mk(1, 2, 1, 13, 16, 16, 0, 1), s++);
	run_case(mk(2, 2, 17, 1, 4, 6, 0, 1), s++);
}

static void test_tiles(void)
{
	unsigned long long s = 10;
	/* several query tiles (128) and key tiles (512), ragged ends */
	run_case(mk(1, 2, 300, 1100, 8, 8, 0, 1), s++);
	run_case(mk(2, 1, 129, 513, 5, 7, 0, 0), s++);
	/* cross attention shape: many queries, 77 keys */
	run_case(mk(1, 2, 260, 77, 40, 40, 0, 1), s++);
}

static void test_causal(void)
{
	unsigned long long s = 20;
	run_case(mk(1, 1, 7, 7, 4, 4, 1, 0), s++);
	run_case(mk(2, 2, 300, 300, 8, 8, 1, 1), s++);
	run_case(mk(1, 1, 9, 4, 3, 3, 1, 0), s++);      /* N > M */
	run_case(mk(1, 1, 4, 700, 3, 2, 1, 0), s++);    /* N < M: keys past N never seen */
	run_case(mk(1, 3, 600, 600, 16, 8, 1, 0), s++); /* query tiles past a key tile boundary */
}

static void test_strides_scale(void)
{
	unsigned long long s = 30;
	acase c = mk(2, 2, 33, 21, 6, 5, 0, 1);
	c.ks[0] = 0; /* keys and values shared by the batch */
	c.vs[0] = 0;
	run_case(c, s++);
	c = mk(1, 2, 40, 30, 4, 4, 0, 0);
	c.qs[2] = 0; /* every query row the same (broadcast, copied per tile) */
	c.ks[2] = 9; /* padded rows */
	run_case(c, s++);
	c = mk(1, 1, 20, 600, 8, 8, 0, 0);
	c.scale = 3.0f; /* sharp softmax: the online max must keep it stable */
	c.amp = 10.0f;
	run_case(c, s++);
	c = mk(1, 1, 200, 1030, 8, 8, 1, 0);
	c.scale = 2.0f;
	c.amp = 8.0f;
	run_case(c, s++);
}

static void test_rowhelpers(void)
{
	/* exp(s - m) and its sum over [-120, 0] and odd lengths (vector body and masked tail) */
	float s[203];
	for (int n = 1; n <= 203; n += 101) {
		for (int i = 0; i < n; i++) s[i] = -120.0f * i / (n > 1 ? n - 1 : 1) + 3.0f;
		float mx = sd_attn_rowmax(s, n);
		CHECK(mx == 3.0f, "rowmax %g", mx);
		double want_sum = 0;
		for (int i = 0; i < n; i++) want_sum += exp((double)s[i] - 3.0);
		float t[203];
		memcpy(t, s, sizeof t);
		float sum = sd_attn_expsum(t, n, 3.0f);
		CHECK(fabs(sum - want_sum) <= 1e-6 * want_sum, "sum %g vs %g", sum, want_sum);
		for (int i = 0; i < n; i++) {
			double w = exp((double)s[i] - 3.0);
			CHECK(fabs(t[i] - w) <= 4e-7 * w + 1e-44, "exp(%g) = %g, want %g", s[i] - 3.0, t[i], w);
		}
	}
	float z[3] = {-INFINITY, 0.0f, NAN};
	sd_attn_expsum(z, 3, 0.0f);
	CHECK(z[0] == 0.0f && z[1] == 1.0f && isnan(z[2]), "exp(-inf)=%g exp(0)=%g exp(nan)=%g", z[0], z[1], z[2]);
}

/* Precision bf16 on an AVX512_BF16 CPU: the same cases through the bf16 path, and key tiles of
 * that path (SD_ATTN_TK_BF16 = 768 keys) with ragged ends, odd head sizes and the U-Net's. */
static void test_bf16(void)
{
	sd_set_precision(SD_PRECISION_BF16);
	CHECK(sd_gemm_bf16_enabled(), "bf16 path not enabled");
	bf16_mode = 1;
	test_small();
	test_tiles();
	test_causal();
	test_strides_scale();
	unsigned long long s = 40;
	run_case(mk(1, 2, 140, 1700, 40, 40, 0, 1), s++); /* 3 key tiles, the last 164 keys */
	run_case(mk(2, 1, 75, 769, 7, 9, 1, 0), s++);     /* odd d and dv, one key past a tile */
	run_case(mk(1, 1, 33, 97, 80, 80, 0, 1), s++);
	run_case(mk(1, 1, 9, 50, 160, 33, 0, 0), s++);
	/* f32 and bf16 results differ by bf16 rounding, so the path was really taken */
	acase c = mk(1, 1, 16, 16, 8, 8, 0, 0);
	float q[128], out32[128], out16[128];
	check_fill(q, 128, 7);
	CHECK(sd_attention(1, 1, 16, 16, 8, 8, q, c.qs, q, c.ks, q, c.vs, c.scale, 0, out16) == 0, "bf16 run");
	sd_set_precision(SD_PRECISION_F32);
	CHECK(sd_attention(1, 1, 16, 16, 8, 8, q, c.qs, q, c.ks, q, c.vs, c.scale, 0, out32) == 0, "f32 run");
	CHECK(memcmp(out16, out32, sizeof out16) != 0, "bf16 and f32 outputs are identical");
	bf16_mode = 0;
}

/* Without AVX512_BF16 (or capped by SDLUA_CPU) the bf16 setting changes nothing. */
static void test_bf16_fallback(void)
{
	acase c = mk(1, 2, 150, 130, 40, 40, 0, 1);
	float q[150 * 80], out32[150 * 80], out16[150 * 80];
	check_fill(q, 150 * 80, 9);
	CHECK(sd_attention(1, 2, 150, 130, 40, 40, q, c.qs, q, c.ks, q, c.vs, c.scale, 0, out32) == 0, "f32 run");
	sd_set_precision(SD_PRECISION_BF16);
	CHECK(!sd_gemm_bf16_enabled(), "bf16 path enabled without AVX512_BF16");
	CHECK(sd_attention(1, 2, 150, 130, 40, 40, q, c.qs, q, c.ks, q, c.vs, c.scale, 0, out16) == 0, "bf16 run");
	sd_set_precision(SD_PRECISION_F32);
	CHECK(memcmp(out16, out32, sizeof out16) == 0, "precision bf16 changed the f32 result");
}

static void test_edge(void)
{
	float q[4] = {1, 2, 3, 4}, out[4] = {1, 1, 1, 1};
	int64_t st[3] = {4, 4, 2};
	CHECK(sd_attention(1, 1, 2, 0, 2, 2, q, st, q, st, q, st, 1, 0, out) == 0, "M=0");
	CHECK(out[0] == 0 && out[3] == 0, "M=0 gives zeros");
	CHECK(sd_attention(1, 1, 2, 2, 0, 2, q, st, q, st, q, st, 1, 0, out) == -1, "d=0 rejected");
	int64_t neg[3] = {4, -4, 2};
	CHECK(sd_attention(1, 1, 2, 2, 2, 2, q, neg, q, st, q, st, 1, 0, out) == -1, "negative stride rejected");
}

int main(void)
{
	RUN("attention: small shapes, size-1 dims, permuted views", test_small());
	RUN("attention: query and key tiles, cross-attention shape", test_tiles());
	RUN("attention: causal mask", test_causal());
	RUN("attention: broadcast/padded strides, sharp softmax", test_strides_scale());
	RUN("attention: row max and exp-sum helpers", test_rowhelpers());
	RUN("attention: M=0 and rejected arguments", test_edge());
	if (sd_cpu_features()->avx512_bf16)
		RUN("attention: precision bf16 (bf16 dot products, f32 softmax sums)", test_bf16());
	else
		RUN("attention: precision bf16 without AVX512_BF16 runs the f32 path", test_bf16_fallback());
	sd_workspace_release();
	CHECK_DONE();
}
