/* make bench: GFLOP/s of the GEMM-shaped kernels (linear, conv2d, attention) on the SD 1.5
 * 512x512 shapes, each beside cblas_sgemm measured in the same run on the matching product
 * shape(s) and on a large square product ("peak"); then GB/s of the elementwise, activation and
 * norm kernels beside a memcpy of the same bytes.
 *
 * Usage: [BENCH_SECONDS=s] bench_kernels [filter]   (the cases whose name contains filter)
 * Each figure is the best of several runs after a warm-up, the kernel and its sgemm reference
 * alternating for BENCH_SECONDS (default 0.4) per pair. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "bench.h"
#include "conv2d.h"
#include "cpu.h"
#include "dtype.h"
#include "gemm.h"

/* The elementwise/norm/activation kernels of kernels/ (written alongside); when a header is
 * missing its section is skipped. */
#if __has_include("activation.h") && __has_include("norm.h") && __has_include("elementwise.h")
#define HAVE_POINTWISE 1
#include "activation.h"
#include "elementwise.h"
#include "norm.h"
#else
#define HAVE_POINTWISE 0
#endif

static double bench_seconds = 0.4; /* per figure pair; BENCH_SECONDS overrides */

static double best_time(bench_fn fn, void *ctx)
{
	double t, unused;
	bench_pair(fn, ctx, NULL, NULL, bench_seconds, &t, &unused);
	return t;
}

static float *fbuf(size_t n, unsigned seed)
{
	float *p = NULL;
	if (posix_memalign((void **)&p, 64, (n ? n : 1) * sizeof(float))) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	srand(seed);
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < n; i++) p[i] = (float)((int)(i * 2654435761u % 2001) - 1000) * 1e-3f;
	return p;
}

static const char *filter;
static double peak_gflops;

static int wanted(const char *name) { return !filter || strstr(name, filter); }

/* ---------------- sgemm ---------------- */

typedef struct {
	int ta, tb;
	int m, n, k, lda, ldb, ldc, reps;
	const float *a, *b;
	float *c;
	int64_t sa, sb, sc; /* per-rep offsets (a batch of products) */
} gemm_ctx;

static void run_sgemm(void *p)
{
	gemm_ctx *g = p;
	for (int r = 0; r < g->reps; r++)
		cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans,
		            g->m, g->n, g->k, 1.0f, g->a + r * g->sa, g->lda, g->b + r * g->sb, g->ldb, 0.0f,
		            g->c + r * g->sc, g->ldc);
}

/* GFLOP/s of reps products m x n x k (no transposes) */
static double sgemm_rate(int m, int n, int k, int reps)
{
	float *a = fbuf((size_t)m * k, 1), *b = fbuf((size_t)k * n, 2), *c = fbuf((size_t)m * n, 3);
	gemm_ctx g = {0, 0, m, n, k, k, n, n, reps, a, b, c, 0, 0, 0};
	double t = best_time(run_sgemm, &g);
	free(a); free(b); free(c);
	return 2.0 * m * n * k * reps / t * 1e-9;
}

static void row(const char *name, double flops, double t, double ref_gflops)
{
	double gf = flops / t * 1e-9;
	printf("| %-44s | %8.2f | %7.1f | %7.1f | %5.2f | %5.2f |\n", name, t * 1e3, gf, ref_gflops,
	       gf / ref_gflops, gf / peak_gflops);
	fflush(stdout);
}

static void header(const char *title)
{
	/* the peak again before each section: on a shared machine keep the best seen */
	double pk = sgemm_rate(2048, 2048, 2048, 1);
	if (pk > peak_gflops) peak_gflops = pk;
	printf("\n### %s\n\n", title);
	printf("| %-44s | %8s | %7s | %7s | %5s | %5s |\n", "case", "ms", "GFLOP/s", "sgemm", "ratio", "/peak");
	printf("|%s|%s|%s|%s|%s|%s|\n", "----------------------------------------------", "---------:",
	       "--------:", "--------:", "------:", "------:");
}

/* ---------------- linear ---------------- */

typedef struct {
	int64_t m, n, k;
	const float *x, *bias;
	const void *w;
	sd_dtype wdt;
	float *y;
} lin_ctx;

static void run_linear(void *p)
{
	lin_ctx *l = p;
	if (sd_linear(l->m, l->n, l->k, l->x, l->k, l->w, l->wdt, l->k, l->bias, l->y, l->n)) abort();
}

static void bench_linear(const char *name, int64_t m, int64_t n, int64_t k)
{
	char nm[128];
	float *x = fbuf((size_t)(m * k), 4), *w = fbuf((size_t)(n * k), 5), *bias = fbuf((size_t)n, 6);
	float *y = fbuf((size_t)(m * n), 7);
	uint16_t *wh = malloc((size_t)(n * k) * 2);
	gemm_ctx g = {0, 1, (int)m, (int)n, (int)k, (int)k, (int)k, (int)n, 1, x, w, y, 0, 0, 0};
	sd_dtype dts[3] = {SD_F32, SD_F16, SD_BF16};
	for (int i = 0; i < 3; i++) {
		snprintf(nm, sizeof nm, "%s %s", name, sd_dtype_name(dts[i]));
		if (!wanted(nm)) continue;
		if (dts[i] != SD_F32) sd_convert(w, SD_F32, wh, dts[i], (size_t)(n * k));
		lin_ctx l = {m, n, k, x, bias, dts[i] == SD_F32 ? (void *)w : (void *)wh, dts[i], y};
		double t, tref;
		bench_pair(run_linear, &l, run_sgemm, &g, bench_seconds, &t, &tref);
		row(nm, 2.0 * m * n * k, t, 2.0 * m * n * k / tref * 1e-9);
	}
	free(x); free(w); free(bias); free(y); free(wh);
}

/* ---------------- conv2d ---------------- */

typedef struct {
	int64_t n, c, h, w, o, k;
	sd_conv2d_params p;
	const float *x, *bias;
	const void *wt;
	sd_dtype wdt;
	float *y;
} conv_ctx;

static void run_conv(void *p)
{
	conv_ctx *c = p;
	if (sd_conv2d(c->x, c->n, c->c, c->h, c->w, c->wt, c->wdt, c->o, c->k, c->k, c->bias, &c->p, c->y)) abort();
}

static void bench_conv(int64_t n, int64_t c, int64_t hw, int64_t o, int64_t k, int64_t stride, sd_dtype wdt)
{
	char nm[128];
	snprintf(nm, sizeof nm, "conv %lldx%lld %lld->%lld @%lld^2%s%s%s", (long long)k, (long long)k, (long long)c,
	         (long long)o, (long long)hw, stride > 1 ? " s2" : "", n > 1 ? " N=2" : "",
	         wdt == SD_F32 ? "" : wdt == SD_F16 ? " f16" : " bf16");
	if (!wanted(nm)) return;
	int64_t pad = k / 2;
	sd_conv2d_params p = {stride, stride, pad, pad, 1, 1, 1};
	int64_t oh = sd_conv2d_outsize(hw, k, stride, pad, 1), ohw = oh * oh, kdim = c * k * k;
	float *x = fbuf((size_t)(n * c * hw * hw), 8), *w = fbuf((size_t)(o * kdim), 9), *bias = fbuf((size_t)o, 10);
	float *y = fbuf((size_t)(n * o * ohw), 11);
	uint16_t *wh = NULL;
	if (wdt != SD_F32) {
		wh = malloc((size_t)(o * kdim) * 2);
		sd_convert(w, SD_F32, wh, wdt, (size_t)(o * kdim));
	}
	/* matching sgemm: per image (o x kdim) . (kdim x ohw), the im2col matrix given for free */
	float *col = fbuf((size_t)(kdim * ohw), 12);
	gemm_ctx g = {0, 0, (int)o, (int)ohw, (int)kdim, (int)kdim, (int)ohw, (int)ohw, (int)n, w, col, y, 0, 0, o * ohw};
	double flops = 2.0 * n * o * ohw * kdim, t, tref;
	conv_ctx cc = {n, c, hw, hw, o, k, p, x, bias, wh ? (void *)wh : (void *)w, wdt, y};
	bench_pair(run_conv, &cc, run_sgemm, &g, bench_seconds, &t, &tref);
	row(nm, flops, t, flops / tref * 1e-9);
	free(x); free(w); free(bias); free(y); free(wh); free(col);
}

/* ---------------- attention ---------------- */

typedef struct {
	int64_t B, H, N, M, d;
	const float *q, *k, *v;
	float *out;
	int causal;
} attn_ctx;

static void run_attn(void *p)
{
	attn_ctx *a = p;
	/* q, k, v as the permuted (B, tokens, H*d) outputs of the projections */
	int64_t qs[3] = {a->N * a->H * a->d, a->d, a->H * a->d};
	int64_t ks[3] = {a->M * a->H * a->d, a->d, a->H * a->d};
	if (sd_attention(a->B, a->H, a->N, a->M, a->d, a->d, a->q, qs, a->k, ks, a->v, ks,
	                 1.0f / sqrtf((float)a->d), a->causal, a->out))
		abort();
}

/* the unfused reference: per head, S = Q K^T (N x M materialised) then S V, plain sgemm */
typedef struct {
	attn_ctx *a;
	float *s;
} attn_ref_ctx;

static void run_attn_ref(void *p)
{
	attn_ref_ctx *r = p;
	attn_ctx *a = r->a;
	int ld = (int)(a->H * a->d);
	for (int64_t b = 0; b < a->B; b++)
		for (int64_t h = 0; h < a->H; h++) {
			const float *q = a->q + b * a->N * ld + h * a->d, *k = a->k + b * a->M * ld + h * a->d;
			const float *v = a->v + b * a->M * ld + h * a->d;
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)a->N, (int)a->M, (int)a->d, 1.0f, q, ld,
			            k, ld, 0.0f, r->s, (int)a->M);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)a->N, (int)a->d, (int)a->M, 1.0f, r->s,
			            (int)a->M, v, ld, 0.0f, a->out + b * a->N * ld + h * a->d, ld);
		}
}

static void bench_attn(const char *name, int64_t B, int64_t H, int64_t N, int64_t M, int64_t d, int causal)
{
	if (!wanted(name)) return;
	float *q = fbuf((size_t)(B * N * H * d), 13), *k = fbuf((size_t)(B * M * H * d), 14);
	float *v = fbuf((size_t)(B * M * H * d), 15), *out = fbuf((size_t)(B * N * H * d), 16);
	float *s = fbuf((size_t)(N * M), 17);
	for (int64_t i = 0; i < B * N * H * d; i++) q[i] *= 0.2f;
	attn_ctx a = {B, H, N, M, d, q, k, v, out, causal};
	attn_ref_ctx r = {&a, s};
	double flops = 4.0 * B * H * N * M * d;
	double t, tref;
	bench_pair(run_attn, &a, run_attn_ref, &r, bench_seconds, &t, &tref);
	if (causal) flops = flops / 2; /* about half the products are masked out */
	row(name, flops, t, (causal ? flops * 2 : flops) / tref * 1e-9);
	free(q); free(k); free(v); free(out); free(s);
}

/* ---------------- pointwise ---------------- */

#if HAVE_POINTWISE
typedef struct {
	int kind;
	size_t n;
	float *a, *b, *y, *w, *bias;
	int64_t N, C, HW, rows, D;
} pw_ctx;

enum { PW_MEMCPY, PW_ADD, PW_SILU, PW_GN_SILU, PW_LN, PW_SOFTMAX, PW_GEGLU };

static void run_pw(void *p)
{
	pw_ctx *c = p;
	switch (c->kind) {
	case PW_MEMCPY: {
		size_t n = c->n;
#pragma omp parallel
		{
			int nt = omp_get_num_threads(), id = omp_get_thread_num();
			size_t lo = n * id / nt, hi = n * (id + 1) / nt;
			memcpy(c->y + lo, c->a + lo, (hi - lo) * sizeof(float));
		}
		break;
	}
	case PW_ADD: sd_binary_f32(SD_BIN_ADD, c->a, 1, c->b, 1, c->y, 1, (int64_t)c->n); break;
	case PW_SILU: sd_act_f32(SD_ACT_SILU, c->a, c->y, c->n); break;
	case PW_GN_SILU: sd_group_norm_f32(c->a, c->y, c->N, c->C, c->HW, 32, c->w, c->bias, 1e-5f, 1); break;
	case PW_LN: sd_layer_norm_f32(c->a, c->y, c->rows, c->D, c->w, c->bias, 1e-5f); break;
	case PW_SOFTMAX: sd_softmax_f32(c->a, c->y, c->rows, c->D, 1); break;
	case PW_GEGLU: sd_geglu_f32(c->a, c->y, c->rows, c->D); break;
	}
}

static void pw_row(const char *name, double bytes, double t, double memcpy_gbs)
{
	double gbs = bytes / t * 1e-9;
	printf("| %-44s | %8.3f | %7.1f | %7.1f | %5.2f |\n", name, t * 1e3, gbs, memcpy_gbs, gbs / memcpy_gbs);
	fflush(stdout);
}

static const char *pw_names[] = {"memcpy", "add", "silu", "group_norm", "layer_norm", "softmax", "geglu"};

static void bench_pointwise(void)
{
	int any = 0;
	for (size_t i = 0; i < sizeof pw_names / sizeof pw_names[0]; i++) any |= wanted(pw_names[i]) != 0;
	if (filter && !any) return;
	printf("\n### Pointwise kernels (GB/s = bytes read once + written once, vs a 2-thread memcpy of "
	       "the same bytes)\n\n");
	printf("| %-44s | %8s | %7s | %7s | %5s |\n", "case", "ms", "GB/s", "memcpy", "ratio");
	printf("|%s|%s|%s|%s|%s|\n", "----------------------------------------------", "---------:", "--------:",
	       "--------:", "------:");
	size_t n = 2 * 320 * 64 * 64; /* a CFG batch of the 64x64 U-Net level */
	float *a = fbuf(n * 2, 20), *b = fbuf(n * 2, 21), *y = fbuf(n * 2, 22), *w = fbuf(1280, 23), *bias = fbuf(1280, 24);
	pw_ctx c = {PW_MEMCPY, n, a, b, y, w, bias, 2, 320, 64 * 64, 0, 0};
	double tm = best_time(run_pw, &c), mgbs = 2.0 * n * 4 / tm * 1e-9;
	/* memcpy of twice the bytes for the 3-stream add */
	c.n = n + n / 2;
	double tm3 = best_time(run_pw, &c), mgbs3 = 2.0 * c.n * 4 / tm3 * 1e-9;
	c.n = n;
	if (wanted("memcpy")) pw_row("memcpy 2x320x64x64 f32", 2.0 * n * 4, tm, mgbs);
	struct { const char *name; int kind; double streams; int64_t rows, D; } cases[] = {
		{"add 2x320x64x64 (contiguous)", PW_ADD, 3, 0, 0},
		{"silu 2x320x64x64", PW_SILU, 2, 0, 0},
		{"group_norm+silu 2x320x64x64, 32 groups", PW_GN_SILU, 2, 0, 0},
		{"layer_norm 8192x320", PW_LN, 2, 8192, 320},
		{"softmax 8x4096 rows of 77 (cross-attn)", PW_SOFTMAX, 2, 8 * 4096, 77},
		{"geglu 8192x2560 -> 8192x1280", PW_GEGLU, 1.5, 8192, 1280},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		if (!wanted(cases[i].name)) continue;
		c.kind = cases[i].kind;
		c.rows = cases[i].rows;
		c.D = cases[i].D;
		size_t elems = cases[i].rows ? (size_t)(cases[i].rows * cases[i].D) : n;
		if (cases[i].kind == PW_GEGLU) elems = (size_t)(cases[i].rows * cases[i].D * 2); /* input */
		float *big_a = NULL, *big_y = NULL;
		if (elems > 2 * n) { /* geglu/layer_norm inputs larger than the shared buffers */
			big_a = fbuf(elems, 30);
			big_y = fbuf(elems, 31);
			c.a = big_a;
			c.y = big_y;
		}
		double t = best_time(run_pw, &c);
		double bytes = cases[i].streams * elems * 4;
		pw_row(cases[i].name, bytes, t, cases[i].kind == PW_ADD ? mgbs3 : mgbs);
		if (big_a) { free(big_a); free(big_y); c.a = a; c.y = y; }
	}
	free(a); free(b); free(y); free(w); free(bias);
}
#endif

int main(int argc, char **argv)
{
	filter = argc > 1 ? argv[1] : NULL;
	const char *bs = getenv("BENCH_SECONDS");
	if (bs && atof(bs) > 0) bench_seconds = atof(bs);
	printf("# bench_kernels: %d OpenMP threads, cpu: %s\n", omp_get_max_threads(), sd_cpu_describe());
	peak_gflops = sgemm_rate(2048, 2048, 2048, 1);
	printf("# peak: cblas_sgemm 2048x2048x2048 = %.1f GFLOP/s at the start (the /peak column uses the best\n"
	       "# of this and the same product measured again before each section)\n", peak_gflops);
	printf("# sgemm column: cblas_sgemm on the matching product shape(s) in this run; ratio = kernel / that\n");

	header("Linear layers (x (M, K) . W^T, W (N, K), + bias)");
	bench_linear("linear 4096x320 -> 1280 (proj)", 4096, 1280, 320);
	bench_linear("linear 4096x320 -> 2560 (GEGLU proj)", 4096, 2560, 320);
	bench_linear("linear 4096x1280 -> 320 (ff out)", 4096, 320, 1280);
	bench_linear("linear 4096x320 -> 320 (q/k/v/out)", 4096, 320, 320);
	bench_linear("linear 1024x640 -> 5120 (GEGLU @32)", 1024, 5120, 640);
	bench_linear("linear 77x768 -> 320 (cross k/v)", 77, 320, 768);

	header("Convolutions (NCHW, batch 1 unless N=2; sgemm = the im2col product without the im2col)");
	bench_conv(1, 320, 64, 320, 3, 1, SD_F32);
	bench_conv(2, 320, 64, 320, 3, 1, SD_F32);
	bench_conv(1, 320, 64, 320, 3, 1, SD_F16);
	bench_conv(1, 4, 64, 320, 3, 1, SD_F32);
	bench_conv(1, 320, 64, 320, 3, 2, SD_F32);
	bench_conv(1, 640, 32, 640, 3, 1, SD_F32);
	bench_conv(1, 640, 32, 640, 3, 1, SD_BF16);
	bench_conv(1, 1280, 16, 1280, 3, 1, SD_F32);
	bench_conv(1, 1280, 8, 1280, 3, 1, SD_F32);
	bench_conv(1, 1280, 8, 1280, 3, 1, SD_F16);
	bench_conv(2, 1280, 8, 1280, 3, 1, SD_F16);
	bench_conv(2, 2560, 8, 1280, 3, 1, SD_F16);
	bench_conv(2, 1280, 16, 1280, 3, 1, SD_F16);
	bench_conv(2, 2560, 16, 1280, 3, 1, SD_F16);
	bench_conv(2, 640, 32, 640, 3, 1, SD_F16);
	bench_conv(2, 1280, 32, 1280, 3, 1, SD_F16);
	bench_conv(2, 960, 64, 320, 3, 1, SD_F16);
	bench_conv(2, 640, 64, 640, 3, 1, SD_F16);
	bench_conv(1, 512, 64, 512, 3, 1, SD_F32);
	bench_conv(1, 512, 128, 512, 3, 1, SD_F32);
	bench_conv(1, 320, 64, 320, 1, 1, SD_F32);
	bench_conv(1, 640, 32, 640, 1, 1, SD_F32);
	bench_conv(1, 1280, 16, 1280, 1, 1, SD_F32);
	bench_conv(1, 1280, 16, 1280, 1, 1, SD_F16);
	bench_conv(1, 960, 32, 640, 1, 1, SD_F32);

	header("Attention (q, k, v permuted views of (B, tokens, H*d); sgemm = unfused Q K^T and S V per head)");
	bench_attn("self-attn 4096 tok x 8 heads x 40", 1, 8, 4096, 4096, 40, 0);
	bench_attn("cross-attn 4096 x 77 tok, 8 heads x 40", 1, 8, 4096, 77, 40, 0);
	bench_attn("self-attn 1024 tok x 8 heads x 80", 1, 8, 1024, 1024, 80, 0);
	bench_attn("self-attn 256 tok x 8 heads x 160", 1, 8, 256, 256, 160, 0);
	bench_attn("self-attn 4096 x 8 x 40, B=2 (CFG)", 2, 8, 4096, 4096, 40, 0);
	bench_attn("causal 77 tok x 12 heads x 64 (CLIP)", 1, 12, 77, 77, 64, 1);

#if HAVE_POINTWISE
	bench_pointwise();
#else
	printf("\n(pointwise section skipped: kernels/activation.h, norm.h or elementwise.h missing)\n");
#endif
	printf("\n# best peak seen: %.1f GFLOP/s\n", peak_gflops);
	sd_workspace_release();
	return 0;
}
