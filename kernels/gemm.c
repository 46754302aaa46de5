/* Matrix products on cblas_sgemm; half-precision operands widened tile by tile. */
#include "gemm.h"

#include <cblas.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_bf16.h"
#include "sd_error.h"

/* ---- thread-local workspace ---- */

static _Thread_local struct {
	float *p;
	size_t cap;
} ws[SD_WS_SLOTS];

float *sd_workspace(int slot, size_t nfloats)
{
	if (slot < 0 || slot >= SD_WS_SLOTS) {
		sd_seterr("workspace slot %d out of range", slot);
		return NULL;
	}
	if (nfloats == 0) nfloats = 1;
	if (ws[slot].cap >= nfloats) return ws[slot].p;
	size_t cap = nfloats + nfloats / 4 + 16;
	cap = (cap + 15) & ~(size_t)15;
	if (cap > SIZE_MAX / sizeof(float)) {
		sd_seterr("workspace of %zu floats is too large", nfloats);
		return NULL;
	}
	void *p = NULL;
	if (posix_memalign(&p, 64, cap * sizeof(float)) != 0 || !p) {
		sd_seterr("out of memory (workspace of %zu bytes)", cap * sizeof(float));
		return NULL;
	}
	free(ws[slot].p);
	ws[slot].p = p;
	ws[slot].cap = cap;
	return p;
}

void sd_workspace_release(void)
{
	for (int i = 0; i < SD_WS_SLOTS; i++) {
		free(ws[i].p);
		ws[i].p = NULL;
		ws[i].cap = 0;
	}
}

void sd_workspace_release_all(void)
{
#pragma omp parallel /* the calling thread is one of the team */
	sd_workspace_release();
}

/* ---- argument checks ---- */

static int fits_blasint(int64_t v) { return v >= 0 && v <= INT_MAX; }

static int check_dims(const char *op, int transa, int transb, int64_t m, int64_t n, int64_t k,
                      int64_t lda, int64_t ldb, int64_t ldc)
{
	if (!fits_blasint(m) || !fits_blasint(n) || !fits_blasint(k))
		return sd_seterr("%s: sizes m=%lld n=%lld k=%lld out of range", op, (long long)m,
		                 (long long)n, (long long)k);
	int64_t acols = transa ? m : k, bcols = transb ? k : n;
	int64_t min_a = acols > 1 ? acols : 1, min_b = bcols > 1 ? bcols : 1, min_c = n > 1 ? n : 1;
	if (lda < min_a || ldb < min_b || ldc < min_c || !fits_blasint(lda) || !fits_blasint(ldb) ||
	    !fits_blasint(ldc))
		return sd_seterr("%s: leading dimensions lda=%lld ldb=%lld ldc=%lld too small for "
		                 "m=%lld n=%lld k=%lld", op, (long long)lda, (long long)ldb,
		                 (long long)ldc, (long long)m, (long long)n, (long long)k);
	return 0;
}

/* C = beta * C, for k == 0 */
static void scale_c(int64_t m, int64_t n, float beta, float *c, int64_t ldc)
{
	for (int64_t i = 0; i < m; i++) {
		float *r = c + i * ldc;
		if (beta == 0.0f) memset(r, 0, (size_t)n * sizeof(float));
		else if (beta != 1.0f)
			for (int64_t j = 0; j < n; j++) r[j] *= beta;
	}
}

static void sgemm_raw(int transa, int transb, int64_t m, int64_t n, int64_t k, float alpha,
                      const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                      float *c, int64_t ldc)
{
	if (m == 0 || n == 0) return;
	if (k == 0) { scale_c(m, n, beta, c, ldc); return; }
	cblas_sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans, transb ? CblasTrans : CblasNoTrans,
	            (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

int sd_sgemm(int transa, int transb, int64_t m, int64_t n, int64_t k, float alpha,
             const float *a, int64_t lda, const float *b, int64_t ldb,
             float beta, float *c, int64_t ldc)
{
	if (check_dims("sgemm", transa, transb, m, n, k, lda, ldb, ldc)) return -1;
	sgemm_raw(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
	return 0;
}

/* ---- half-precision operands ---- */

static int is_half(sd_dtype dt) { return dt == SD_F16 || dt == SD_BF16; }

static void widen(const uint16_t *src, sd_dtype dt, float *dst, size_t n)
{
	if (dt == SD_F16) sd_f16_to_f32_n(src, dst, n);
	else sd_bf16_to_f32_n(src, dst, n);
}

void sd_widen_rows(const uint16_t *src, sd_dtype dt, int64_t ld, int64_t rows, int64_t len, float *dst)
{
	int par = !omp_in_parallel() && rows * len >= (1 << 16) && rows > 1;
#pragma omp parallel for schedule(static) if (par)
	for (int64_t r = 0; r < rows; r++) widen(src + r * ld, dt, dst + r * len, (size_t)len);
}

/* Floats per widened tile: ~4 MB, at least 128 rows/columns. */
#define TILE_FLOATS (1 << 20)

static int64_t tile_size(int64_t total, int64_t k)
{
	int64_t t = k > 0 ? TILE_FLOATS / k : total;
	if (t < 128) t = 128;
	t = t >= 16 ? t / 16 * 16 : t;
	return t < total ? t : total;
}

int sd_gemm_ex(int transa, int transb, int64_t m, int64_t n, int64_t k, float alpha,
               const void *a, sd_dtype adt, int64_t lda,
               const void *b, sd_dtype bdt, int64_t ldb,
               float beta, float *c, int64_t ldc)
{
	if ((adt != SD_F32 && !is_half(adt)) || (bdt != SD_F32 && !is_half(bdt)))
		return sd_seterr("gemm: operands must be f32, f16 or bf16 (got %s and %s)",
		                 sd_dtype_name(adt), sd_dtype_name(bdt));
	if (check_dims("gemm", transa, transb, m, n, k, lda, ldb, ldc)) return -1;
	if (m == 0 || n == 0) return 0;
	if (k == 0) { scale_c(m, n, beta, c, ldc); return 0; }
	/* precision bf16 on an AVX512_BF16 CPU: bf16 dot products (kernels/gemm_bf16.h) */
	if (!transa && sd_gemm_bf16_enabled())
		return sd_gemm_bf16(transb, m, n, k, alpha, a, adt, lda, b, bdt, ldb, beta, c, ldc, NULL);
	if (!is_half(adt) && !is_half(bdt)) {
		sgemm_raw(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
		return 0;
	}
	int nth = omp_in_parallel() ? 1 : omp_get_max_threads();
	if (nth > 1 && is_half(adt) != is_half(bdt)) {
		/* One half operand: its tiles are spread over the threads, each widening its own tile
		 * into its own workspace and running a single-threaded product into its own rows (A
		 * half) or columns (B half) of C. No fork/join per tile, no BLAS threading on thin
		 * products. Worth it when every thread gets a tile of at least 64. */
		int64_t total = is_half(adt) ? m : n;
		if (total >= 64 * nth) {
			int64_t t = tile_size(total, k);
			int64_t ntiles = (total + t - 1) / t;
			ntiles = (ntiles + nth - 1) / nth * nth; /* a multiple of the thread count */
			t = (total + ntiles - 1) / ntiles;
			t = (t + 15) / 16 * 16;
			ntiles = (total + t - 1) / t;
			int failed = 0;
#pragma omp parallel for schedule(static) reduction(| : failed)
			for (int64_t ti = 0; ti < ntiles; ti++) {
				int64_t lo = ti * t, cnt = total - lo < t ? total - lo : t;
				if (is_half(adt))
					failed |= sd_gemm_ex(transa, transb, cnt, n, k, alpha,
					                     (const uint16_t *)a + (transa ? lo : lo * lda), adt, lda,
					                     b, bdt, ldb, beta, c + lo * ldc, ldc) != 0;
				else
					failed |= sd_gemm_ex(transa, transb, m, cnt, k, alpha, a, adt, lda,
					                     (const uint16_t *)b + (transb ? lo * ldb : lo), bdt, ldb,
					                     beta, c + lo, ldc) != 0;
			}
			if (failed) return sd_seterr("gemm: out of memory for the widening workspaces");
			return 0;
		}
	}
	int64_t mt = is_half(adt) ? tile_size(m, k) : m;
	int64_t nt = is_half(bdt) ? tile_size(n, k) : n;
	float *wa = NULL, *wb = NULL;
	if (is_half(adt) && !(wa = sd_workspace(0, (size_t)(mt * k)))) return -1;
	if (is_half(bdt) && !(wb = sd_workspace(1, (size_t)(nt * k)))) return -1;
	for (int64_t i0 = 0; i0 < m; i0 += mt) {
		int64_t mi = m - i0 < mt ? m - i0 : mt;
		const float *ap;
		int64_t lda2 = lda;
		if (is_half(adt)) {
			const uint16_t *a16 = a;
			if (!transa) { /* rows i0.. of A, k each */
				sd_widen_rows(a16 + i0 * lda, adt, lda, mi, k, wa);
				lda2 = k;
			} else { /* A is k x m: columns i0.. of each of the k rows */
				sd_widen_rows(a16 + i0, adt, lda, k, mi, wa);
				lda2 = mi;
			}
			ap = wa;
		} else {
			const float *a32 = a;
			ap = transa ? a32 + i0 : a32 + i0 * lda;
		}
		for (int64_t j0 = 0; j0 < n; j0 += nt) {
			int64_t nj = n - j0 < nt ? n - j0 : nt;
			const float *bp;
			int64_t ldb2 = ldb;
			if (is_half(bdt)) {
				const uint16_t *b16 = b;
				if (transb) { /* B is n x k: rows j0.. */
					sd_widen_rows(b16 + j0 * ldb, bdt, ldb, nj, k, wb);
					ldb2 = k;
				} else {
					sd_widen_rows(b16 + j0, bdt, ldb, k, nj, wb);
					ldb2 = nj;
				}
				bp = wb;
			} else {
				const float *b32 = b;
				bp = transb ? b32 + j0 * ldb : b32 + j0;
			}
			sgemm_raw(transa, transb, mi, nj, k, alpha, ap, lda2, bp, ldb2, beta,
			          c + i0 * ldc + j0, ldc);
		}
	}
	return 0;
}

int sd_gemm_batched(int transa, int transb, int64_t m, int64_t n, int64_t k, float alpha,
                    const float *a, int64_t lda, int64_t stride_a,
                    const float *b, int64_t ldb, int64_t stride_b,
                    float beta, float *c, int64_t ldc, int64_t stride_c, int64_t batch)
{
	if (batch < 0) return sd_seterr("gemm_batched: negative batch %lld", (long long)batch);
	if (check_dims("gemm_batched", transa, transb, m, n, k, lda, ldb, ldc)) return -1;
	if (batch > 1 && stride_c == 0)
		return sd_seterr("gemm_batched: output stride 0 with %lld products", (long long)batch);
	if (batch == 0 || m == 0 || n == 0) return 0;
	int nth = omp_in_parallel() ? 1 : omp_get_max_threads();
	int par = nth > 1 && batch > 1 && (batch % nth == 0 || batch >= 4 * nth);
	/* one big product: BLAS threading inside is better than one product per thread */
	if (par && (double)m * n * k >= 1e9 && batch < 2 * nth) par = 0;
#pragma omp parallel for schedule(dynamic, 1) if (par)
	for (int64_t i = 0; i < batch; i++)
		sgemm_raw(transa, transb, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb,
		          beta, c + i * stride_c, ldc);
	return 0;
}

int sd_linear(int64_t m, int64_t n, int64_t k, const float *x, int64_t ldx,
              const void *w, sd_dtype wdt, int64_t ldw, const float *bias,
              float *y, int64_t ldy)
{
	if (check_dims("linear", 0, 1, m, n, k, ldx, ldw, ldy)) return -1;
	/* bf16 dot products; the kernel adds the bias as it stores (no preset pass) */
	if (bias && k > 0 && sd_gemm_bf16_enabled())
		return sd_gemm_bf16(1, m, n, k, 1.0f, x, SD_F32, ldx, w, wdt, ldw, 0.0f, y, ldy, bias);
	if (bias) {
		int par = !omp_in_parallel() && m * n >= (1 << 16);
#pragma omp parallel for schedule(static) if (par)
		for (int64_t i = 0; i < m; i++) memcpy(y + i * ldy, bias, (size_t)n * sizeof(float));
	}
	return sd_gemm_ex(0, 1, m, n, k, 1.0f, x, SD_F32, ldx, w, wdt, ldw, bias ? 1.0f : 0.0f, y, ldy);
}
