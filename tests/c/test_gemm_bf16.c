/* The bf16 dot-product GEMM (kernels/gemm_bf16.h) against double references, the routing of
 * sd_gemm_ex / sd_linear / sd_conv2d by the precision setting, and the f32 fallback under
 * SDLUA_CPU=avx2 (run in a forked child, before anything detects the CPU).
 *
 *   build/tests/test_gemm_bf16          the tests
 *   build/tests/test_gemm_bf16 bench    GFLOP/s of the bf16 path beside cblas_sgemm, same run */
#include <cblas.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "check.h"
#include "conv2d.h"
#include "cpu.h"
#include "dtype.h"
#include "gemm.h"
#include "gemm_bf16.h"
#include "precision.h"

/* f rounded to bf16 (nearest even), as f32 */
static float bf16_round(float f) { return sd_bf16_to_f32(sd_f32_to_bf16(f)); }

/* an operand of rows x cols (row stride ld) in dtype dt, from floats; returns the buffer and
 * writes its values as f32 (what the kernel sees before rounding to bf16) into vals */
static void *make_operand(sd_dtype dt, int64_t rows, int64_t cols, int64_t ld, unsigned long long seed,
                          float *vals)
{
	size_t n = (size_t)(rows > 0 ? (rows - 1) * ld + cols : 0) + 1;
	float *f = malloc(n * sizeof(float));
	check_fill(f, (long)n, seed);
	if (dt == SD_F32) {
		memcpy(vals, f, n * sizeof(float));
		return f;
	}
	uint16_t *h = malloc(n * sizeof(uint16_t));
	if (dt == SD_F16) sd_f32_to_f16_n(f, h, n), sd_f16_to_f32_n(h, vals, n);
	else sd_f32_to_bf16_n(f, h, n), sd_bf16_to_f32_n(h, vals, n);
	free(f);
	return h;
}

/* C = alpha A op(B) + beta C0 + biases: *exact* in double from the operand values, and
 * *rounded* from their bf16 roundings; mag = sum |a b| per element */
static void reference(int transb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                      int64_t lda, const float *b, int64_t ldb, float beta, const float *c0,
                      int64_t ldc, const float *brow, const float *bcol, double *exact,
                      double *rounded, double *mag)
{
	for (int64_t i = 0; i < m; i++)
		for (int64_t j = 0; j < n; j++) {
			double s = 0, r = 0, g = 0;
			for (int64_t p = 0; p < k; p++) {
				float av = a[i * lda + p], bv = transb ? b[j * ldb + p] : b[p * ldb + j];
				s += (double)av * bv;
				r += (double)bf16_round(av) * bf16_round(bv);
				g += fabs((double)av * bv);
			}
			double add = (beta != 0.0f ? (double)beta * c0[i * ldc + j] : 0.0) + (brow ? brow[i] : 0.0) +
			             (bcol ? bcol[j] : 0.0);
			exact[i * n + j] = alpha * s + add;
			rounded[i * n + j] = alpha * r + add;
			mag[i * n + j] = fabs(alpha) * g + fabs(add);
		}
}

/* One product through sd_gemm_bf16 (or, with packed, sd_bf16_pack_a + sd_gemm_bf16_packed
 * with biases) against both references. */
static void gemm_case(int transb, int64_t m, int64_t n, int64_t k, sd_dtype adt, sd_dtype bdt,
                      int64_t pad, float alpha, float beta, int packed)
{
	int64_t lda = k + pad, ldb = (transb ? k : n) + pad, ldc = n + pad;
	int64_t brows = transb ? n : k, bcols = transb ? k : n;
	size_t asz = (size_t)(m * lda + 1), bsz = (size_t)(brows * ldb + 1), csz = (size_t)(m * ldc + 1);
	float *av = malloc(asz * sizeof(float)), *bv = malloc(bsz * sizeof(float));
	void *a = make_operand(adt, m, k, lda, 11 + (unsigned long long)(m * 7 + k), av);
	void *b = make_operand(bdt, brows, bcols, ldb, 23 + (unsigned long long)(n * 5 + k), bv);
	float *c = malloc(csz * sizeof(float)), *c0 = malloc(csz * sizeof(float));
	check_fill(c0, (long)csz, 99);
	memcpy(c, c0, csz * sizeof(float));
	float *brow = NULL, *bcol = NULL;
	if (packed) {
		brow = malloc((size_t)(m + 1) * sizeof(float));
		bcol = malloc((size_t)(n + 1) * sizeof(float));
		check_fill(brow, m + 1, 5);
		check_fill(bcol, n + 1, 6);
	}
	double *ex = malloc((size_t)(m * n + 1) * sizeof(double)), *ro = malloc((size_t)(m * n + 1) * sizeof(double));
	double *mag = malloc((size_t)(m * n + 1) * sizeof(double));
	reference(transb, m, n, k, alpha, av, lda, bv, ldb, beta, c0, ldc, brow, bcol, ex, ro, mag);
	int rc;
	if (packed) {
		sd_bf16_pack pk;
		rc = sd_bf16_pack_a(&pk, m, k, a, adt, lda);
		if (!rc) rc = sd_gemm_bf16_packed(&pk, transb, n, alpha, b, bdt, ldb, beta, c, ldc, brow, bcol);
	} else {
		rc = sd_gemm_bf16(transb, m, n, k, alpha, a, adt, lda, b, bdt, ldb, beta, c, ldc, NULL);
	}
	CHECK(rc == 0, "returned %d", rc);
	for (int64_t i = 0; i < m; i++)
		for (int64_t j = 0; j < n; j++) {
			double got = c[i * ldc + j], e = fabs(got - ex[i * n + j]), r = fabs(got - ro[i * n + j]);
			double mg = mag[i * n + j] + 1e-30;
			/* against the rounded inputs: only f32 accumulation error */
			CHECK(r <= 1e-5 * mg + 1e-6, "(%lld,%lld) got %.9g, bf16-rounded reference %.9g",
			      (long long)i, (long long)j, got, ro[i * n + j]);
			/* against the exact product: each operand rounded to 8 significant bits */
			CHECK(e <= mg / 128 + 1e-6, "(%lld,%lld) got %.9g, exact %.9g (|a||b| sum %.3g)",
			      (long long)i, (long long)j, got, ex[i * n + j], mg);
		}
	/* the padding between rows of C is untouched */
	for (int64_t i = 0; i < m; i++)
		for (int64_t j = n; j < ldc; j++)
			CHECK(c[i * ldc + j] == c0[i * ldc + j], "padding of C written at (%lld,%lld)", (long long)i,
			      (long long)j);
	free(av); free(bv); free(a); free(b); free(c); free(c0); free(brow); free(bcol);
	free(ex); free(ro); free(mag);
}

/* C through sd_gemm_ex / sd_linear / sd_conv2d with the precision bf16 vs f32, relative to the
 * output's scale. */
static double relerr(const float *x, const float *y, size_t n)
{
	double d = 0, s = 0;
	for (size_t i = 0; i < n; i++) {
		if (fabs((double)x[i] - y[i]) > d) d = fabs((double)x[i] - y[i]);
		if (fabs((double)y[i]) > s) s = fabs((double)y[i]);
	}
	return d / (s > 0 ? s : 1);
}

/* a copy of x with every value rounded to bf16 */
static float *rounded_copy(const float *x, int64_t n)
{
	float *r = malloc((size_t)n * sizeof(float));
	for (int64_t i = 0; i < n; i++) r[i] = bf16_round(x[i]);
	return r;
}

static void routing_cases(int expect_bf16)
{
	/* linear with bias: f32, f16 and bf16 weights */
	int64_t m = 67, n = 53, k = 131;
	float *x = malloc((size_t)(m * k) * sizeof(float)), *w = malloc((size_t)(n * k) * sizeof(float));
	float *bias = malloc((size_t)n * sizeof(float));
	float *y32 = malloc((size_t)(m * n) * sizeof(float)), *y16 = malloc((size_t)(m * n) * sizeof(float));
	check_fill(x, m * k, 1); check_fill(w, n * k, 2); check_fill(bias, n, 3);
	uint16_t *wh = malloc((size_t)(n * k) * sizeof(uint16_t));
	sd_dtype dts[3] = {SD_F32, SD_F16, SD_BF16};
	for (int d = 0; d < 3; d++) {
		const void *wp = w;
		if (dts[d] == SD_F16) sd_f32_to_f16_n(w, wh, (size_t)(n * k)), wp = wh;
		if (dts[d] == SD_BF16) sd_f32_to_bf16_n(w, wh, (size_t)(n * k)), wp = wh;
		sd_set_precision(SD_PRECISION_F32);
		CHECK(sd_linear(m, n, k, x, k, wp, dts[d], k, bias, y32, n) == 0, "linear f32");
		sd_set_precision(SD_PRECISION_BF16);
		CHECK(sd_linear(m, n, k, x, k, wp, dts[d], k, bias, y16, n) == 0, "linear bf16");
		double e = relerr(y16, y32, (size_t)(m * n));
		const char *dn = sd_dtype_name(dts[d]);
		if (expect_bf16) CHECK(e > 0 && e < 2e-2, "linear %s: bf16 vs f32 relative %.3g", dn, e);
		else CHECK(e == 0, "linear %s: fallback differs from f32 by %.3g", dn, e);
	}
	/* the bf16 path is exactly f32 arithmetic on operands rounded to bf16 */
	if (expect_bf16) {
		float *xr = rounded_copy(x, m * k), *wr = rounded_copy(w, n * k);
		sd_set_precision(SD_PRECISION_F32);
		CHECK(sd_linear(m, n, k, xr, k, wr, SD_F32, k, bias, y32, n) == 0, "linear f32, rounded operands");
		sd_set_precision(SD_PRECISION_BF16);
		CHECK(sd_linear(m, n, k, x, k, w, SD_F32, k, bias, y16, n) == 0, "linear bf16");
		double e = relerr(y16, y32, (size_t)(m * n));
		CHECK(e < 2e-6, "linear: bf16 vs f32 on rounded operands relative %.3g", e);
		free(xr); free(wr);
	}
	/* conv2d: 3x3 pad 1 with groups, 3x3 stride 2, 1x1; bias */
	struct { int64_t c, o, h, w, kh, s, pad, g; } cv[] = {
		{6, 10, 9, 11, 3, 1, 1, 2}, {5, 7, 13, 12, 3, 2, 1, 1}, {9, 17, 7, 5, 1, 1, 0, 1}, {40, 48, 20, 20, 3, 1, 1, 1},
		/* per-thread bands packed in slices of rows, the last one odd (kdim 567) */
		{63, 16, 40, 40, 3, 1, 1, 1}};
	for (size_t ci = 0; ci < sizeof cv / sizeof cv[0]; ci++) {
		int64_t N = 2, C = cv[ci].c, O = cv[ci].o, H = cv[ci].h, W = cv[ci].w, K = cv[ci].kh;
		sd_conv2d_params p = {cv[ci].s, cv[ci].s, cv[ci].pad, cv[ci].pad, 1, 1, cv[ci].g};
		int64_t OH = sd_conv2d_outsize(H, K, p.stride_h, p.pad_h, 1), OW = sd_conv2d_outsize(W, K, p.stride_w, p.pad_w, 1);
		size_t xn = (size_t)(N * C * H * W), wn = (size_t)(O * (C / p.groups) * K * K), yn = (size_t)(N * O * OH * OW);
		float *cx = malloc(xn * sizeof(float)), *cw = malloc(wn * sizeof(float)), *cb = malloc((size_t)O * sizeof(float));
		float *ya = malloc(yn * sizeof(float)), *yb = malloc(yn * sizeof(float));
		check_fill(cx, (long)xn, 7); check_fill(cw, (long)wn, 8); check_fill(cb, O, 9);
		sd_set_precision(SD_PRECISION_F32);
		CHECK(sd_conv2d(cx, N, C, H, W, cw, SD_F32, O, K, K, cb, &p, ya) == 0, "conv f32");
		sd_set_precision(SD_PRECISION_BF16);
		CHECK(sd_conv2d(cx, N, C, H, W, cw, SD_F32, O, K, K, cb, &p, yb) == 0, "conv bf16");
		double e = relerr(yb, ya, yn);
		if (expect_bf16) CHECK(e > 0 && e < 2e-2, "conv case %zu: bf16 vs f32 relative %.3g", ci, e);
		else CHECK(e == 0, "conv case %zu: fallback differs from f32 by %.3g", ci, e);
		if (expect_bf16) {
			float *xr = rounded_copy(cx, (int64_t)xn), *wr = rounded_copy(cw, (int64_t)wn);
			sd_set_precision(SD_PRECISION_F32);
			CHECK(sd_conv2d(xr, N, C, H, W, wr, SD_F32, O, K, K, cb, &p, ya) == 0, "conv f32, rounded operands");
			e = relerr(yb, ya, yn);
			CHECK(e < 2e-6, "conv case %zu: bf16 vs f32 on rounded operands relative %.3g", ci, e);
			free(xr); free(wr);
		}
		free(cx); free(cw); free(cb); free(ya); free(yb);
	}
	sd_set_precision(SD_PRECISION_F32);
	free(x); free(w); free(bias); free(y32); free(y16); free(wh);
}

/* ---- benchmark ---- */


typedef struct { int64_t m, n, k; float *a, *b, *c; const void *w; sd_dtype wdt; int prec; } lin_ctx;

static void run_linear(void *p)
{
	lin_ctx *l = p;
	sd_set_precision(l->prec);
	sd_linear(l->m, l->n, l->k, l->a, l->k, l->w, l->wdt, l->k, NULL, l->c, l->n);
	sd_set_precision(SD_PRECISION_F32);
}

static void run_sgemm_nt(void *p)
{
	lin_ctx *l = p;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)l->m, (int)l->n, (int)l->k, 1.0f, l->a,
	            (int)l->k, l->b, (int)l->k, 0.0f, l->c, (int)l->n);
}

typedef struct { int64_t c, o, hw; float *x, *w, *y, *col; int prec; } conv_ctx;

static void run_conv(void *p)
{
	conv_ctx *cc = p;
	sd_conv2d_params prm = {1, 1, 1, 1, 1, 1, 1};
	sd_set_precision(cc->prec);
	sd_conv2d(cc->x, 1, cc->c, cc->hw, cc->hw, cc->w, SD_F32, cc->o, 3, 3, NULL, &prm, cc->y);
	sd_set_precision(SD_PRECISION_F32);
}

static void run_sgemm_conv(void *p)
{
	conv_ctx *cc = p;
	int64_t kd = cc->c * 9, np = cc->hw * cc->hw;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)cc->o, (int)np, (int)kd, 1.0f, cc->w,
	            (int)kd, cc->col, (int)np, 0.0f, cc->y, (int)np);
}

/* One row of the table: fn on the bf16 context and on the f32 one, each against ref (the
 * matching sgemm) run alternately with it; gflop per call. */
static void bench_row(const char *name, double gflop, bench_fn fn, void *ctx16, void *ctx32, bench_fn ref,
                      void *refctx, double secs)
{
	double t16, tref, t32, tref2;
	bench_pair(fn, ctx16, ref, refctx, secs, &t16, &tref);
	bench_pair(fn, ctx32, ref, refctx, secs / 2, &t32, &tref2);
	if (tref2 < tref) tref = tref2;
	printf("| %-40s | %8.2f | %8.1f | %8.1f | %6.2f | %8.1f | %6.2f |\n", name, t16 * 1e3, gflop / t16,
	       gflop / tref, tref / t16, gflop / t32, t32 / t16);
}

static void bench(void)
{
	double secs = getenv("BENCH_SECONDS") ? atof(getenv("BENCH_SECONDS")) : 0.6;
	printf("# bf16 GEMM (VDPBF16PS) vs cblas_sgemm, %d threads, %s\n", omp_get_max_threads(), sd_cpu_describe());
	printf("| %-40s | %8s | %8s | %8s | %6s | %8s | %6s |\n", "case", "bf16 ms", "GFLOP/s", "sgemm", "ratio",
	       "f32 path", "ratio");
	printf("|------------------------------------------|---------:|---------:|---------:|-------:|---------:|-------:|\n");
	struct { int64_t m, k, n; const char *name; } lin[] = {
		{4096, 320, 1280, "linear 4096x320 -> 1280"},
		{4096, 1280, 320, "linear 4096x1280 -> 320"},
		{1024, 640, 5120, "linear 1024x640 -> 5120"},
		{4096, 320, 320, "linear 4096x320 -> 320"},
		{77, 768, 320, "linear 77x768 -> 320"},
	};
	for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++) {
		for (int half = 0; half < 2; half++) {
			int64_t m = lin[i].m, n = lin[i].n, k = lin[i].k;
			float *a = malloc((size_t)(m * k) * 4), *b = malloc((size_t)(n * k) * 4), *c = malloc((size_t)(m * n) * 4);
			uint16_t *bh = malloc((size_t)(n * k) * 2);
			check_fill(a, m * k, 1); check_fill(b, n * k, 2);
			sd_f32_to_f16_n(b, bh, (size_t)(n * k));
			lin_ctx l16 = {m, n, k, a, b, c, half ? (const void *)bh : b, half ? SD_F16 : SD_F32, SD_PRECISION_BF16};
			lin_ctx l32 = l16;
			l32.prec = SD_PRECISION_F32;
			char name[64];
			snprintf(name, sizeof name, "%s%s", lin[i].name, half ? " (f16 w)" : "");
			bench_row(name, 2.0 * m * n * k * 1e-9, run_linear, &l16, &l32, run_sgemm_nt, &l32, secs);
			free(a); free(b); free(c); free(bh);
		}
	}
	struct { int64_t c, hw; } cv[] = {{320, 64}, {640, 32}, {1280, 16}, {1280, 8}};
	for (size_t i = 0; i < sizeof cv / sizeof cv[0]; i++) {
		int64_t C = cv[i].c, HW = cv[i].hw, kd = C * 9, np = HW * HW;
		conv_ctx cc = {C, C, HW, malloc((size_t)(C * np) * 4), malloc((size_t)(C * kd) * 4),
		               malloc((size_t)(C * np) * 4), malloc((size_t)(kd * np) * 4), SD_PRECISION_BF16};
		check_fill(cc.x, C * np, 3); check_fill(cc.w, C * kd, 4); check_fill(cc.col, kd * np, 5);
		conv_ctx c32 = cc;
		c32.prec = SD_PRECISION_F32;
		char name[64];
		snprintf(name, sizeof name, "conv 3x3 %lld->%lld @%lld^2", (long long)C, (long long)C, (long long)HW);
		bench_row(name, 2.0 * C * np * kd * 1e-9, run_conv, &cc, &c32, run_sgemm_conv, &cc, secs);
		free(cc.x); free(cc.w); free(cc.y); free(cc.col);
	}
}

static int fallback_child(void)
{
	/* a fresh process image is not needed: nothing has detected the CPU yet in this child */
	setenv("SDLUA_CPU", "avx2", 1);
	const sd_cpu *cpu = sd_cpu_features();
	RUN("SDLUA_CPU=avx2: no bf16 kernels, precision bf16 runs the f32 path", {
		CHECK(!cpu->avx512_bf16, "avx512_bf16 still reported");
		sd_set_precision(SD_PRECISION_BF16);
		CHECK(!sd_gemm_bf16_enabled(), "bf16 path enabled without AVX512_BF16");
		CHECK(sd_gemm_bf16(1, 2, 2, 2, 1.0f, (float[4]){0}, SD_F32, 2, (float[4]){0}, SD_F32, 2, 0.0f,
		                   (float[4]){0}, 2, NULL) != 0, "sd_gemm_bf16 accepted a call without AVX512_BF16");
		routing_cases(0);
	});
	CHECK_DONE();
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "bench")) {
		if (!sd_cpu_features()->avx512_bf16) { printf("no AVX512_BF16 on this CPU\n"); return 0; }
		bench();
		return 0;
	}
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) _exit(fallback_child());
	int status = 0;
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		printf("not ok - fallback child (SDLUA_CPU=avx2) failed or did not run\n");
		check_failed_cases++;
	}

	RUN("precision setting: names, parse, default f32", {
		sd_precision p;
		CHECK(sd_get_precision() == SD_PRECISION_F32 || getenv("SDLUA_PRECISION"), "default not f32");
		CHECK(sd_precision_parse("bf16", &p) == 0 && p == SD_PRECISION_BF16, "bf16");
		CHECK(sd_precision_parse("f32", &p) == 0 && p == SD_PRECISION_F32, "f32");
		CHECK(sd_precision_parse("f16", &p) != 0, "f16 accepted");
		CHECK(!strcmp(sd_precision_name(SD_PRECISION_BF16), "bf16"), "name");
	});
	if (!sd_cpu_features()->avx512_bf16) {
		printf("skip - bf16 kernels: no AVX512_BF16 on this CPU (%s)\n", sd_cpu_describe());
		CHECK_DONE();
	}
	RUN("bf16 gemm: odd shapes (size 1, k odd, edges of the 8x48 tile, 40-column edges, k in 2 and 3 blocks)", {
		int64_t shapes[][3] = {{1, 1, 1}, {1, 1, 2}, {7, 5, 3}, {8, 48, 256}, {9, 49, 257}, {17, 97, 513},
		                       {3, 130, 1}, {33, 47, 600}, {65, 200, 31}, {11, 50, 1537}, {9, 20, 3073},
		                       {13, 40, 70}, {6, 88, 33}};
		for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
			for (int tb = 0; tb < 2; tb++)
				gemm_case(tb, shapes[s][0], shapes[s][1], shapes[s][2], SD_F32, SD_F32, 0, 1.0f, 0.0f, 0);
	});
	RUN("bf16 gemm: strided operands, alpha and beta", {
		gemm_case(0, 19, 70, 77, SD_F32, SD_F32, 5, 0.75f, 1.0f, 0);
		gemm_case(1, 19, 70, 77, SD_F32, SD_F32, 3, 1.0f, 0.5f, 0);
		gemm_case(1, 100, 33, 320, SD_F32, SD_F32, 16, -2.0f, 1.0f, 0);
	});
	RUN("bf16 gemm: f16 / bf16 operands (weights as B transposed, or as A)", {
		sd_dtype d[3] = {SD_F32, SD_F16, SD_BF16};
		for (int i = 0; i < 3; i++)
			for (int j = 0; j < 3; j++) {
				gemm_case(1, 21, 53, 95, d[i], d[j], 2, 1.0f, 0.0f, 0);
				gemm_case(0, 21, 53, 95, d[i], d[j], 1, 1.0f, 1.0f, 0);
			}
	});
	RUN("bf16 gemm: packed A with row and column biases", {
		gemm_case(0, 30, 61, 45, SD_F32, SD_F32, 0, 1.0f, 0.0f, 1);
		gemm_case(1, 30, 61, 45, SD_BF16, SD_F16, 4, 1.0f, 1.0f, 1);
		gemm_case(0, 9, 5, 0, SD_F32, SD_F32, 1, 1.0f, 0.5f, 1);
	});
	RUN("bf16 gemm: larger than one work item per thread (threads share the tiles)", {
		gemm_case(1, 300, 260, 300, SD_F32, SD_BF16, 0, 1.0f, 0.0f, 0);
		gemm_case(0, 260, 300, 520, SD_F16, SD_F32, 0, 1.0f, 0.0f, 0);
	});
	RUN("precision bf16 routes sd_linear and sd_conv2d to the bf16 kernels", routing_cases(1));
	CHECK_DONE();
}
