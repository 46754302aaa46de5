/* Register-tiled products over packed panels on AVX-512: an 8 x 48 micro-kernel whose unit of k
 * is a bf16 pair (VDPBF16PS: the bf16 precision, gemm_bf16.h) or an f32 value (VFMADD231PS:
 * attention on AVX-512, gemm_tiles.h), and the packing for both (bf16: VCVTNE2PS2BF16).
 * Compiled with the AVX-512 flags; the bf16 parts are only called when
 * sd_cpu_features()->avx512_bf16, the f32 ones when ->avx512. */
#include "gemm_tiles.h"

#include <immintrin.h>
#include <omp.h>
#include <string.h>

#include "gemm.h"
#include "sd_error.h"

#define MR 8          /* rows of A per panel, rows of the C tile */
#define NR SD_TILE_NR /* columns of B per panel: three zmm of 16 f32 accumulators */
/* units of k per block at most (gemm_bf16.h); k is cut into equal blocks (block_units) */
#ifndef SD_TILE_KC
#define SD_TILE_KC 768
#endif
#define KCP SD_TILE_KC

/* Budgets of the packed operands, in bytes. */
#define A_BUDGET ((int64_t)32 << 20)
#define B_BUDGET ((int64_t)16 << 20)

/* ---- conversion to bf16 ---- */

static inline __mmask16 mask16(int64_t c)
{
	return c >= 16 ? (__mmask16)0xffff : c <= 0 ? (__mmask16)0 : (__mmask16)((1u << c) - 1);
}

/* n elements of src (f32, f16 or bf16) as bf16 (round to nearest even) into dst */
static void row_to_bf16(const void *src, sd_dtype dt, int64_t n, uint16_t *dst)
{
	if (dt == SD_BF16) {
		memcpy(dst, src, (size_t)n * sizeof(uint16_t));
		return;
	}
	int64_t i = 0;
	if (dt == SD_F32) {
		const float *s = src;
		for (; i + 32 <= n; i += 32) {
			__m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + i + 16), _mm512_loadu_ps(s + i));
			_mm512_storeu_si512(dst + i, (__m512i)v);
		}
		for (; i < n; i += 16) {
			__mmask16 m = mask16(n - i);
			__m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, s + i));
			_mm256_mask_storeu_epi16(dst + i, m, (__m256i)v);
		}
	} else {
		const uint16_t *s = src;
		for (; i < n; i += 16) {
			__mmask16 m = mask16(n - i);
			__m512 f = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, s + i));
			_mm256_mask_storeu_epi16(dst + i, m, (__m256i)_mm512_cvtneps_pbh(f));
		}
	}
}

/* one element as f32 */
static inline float elem_f32(const void *p, sd_dtype dt, int64_t i)
{
	if (dt == SD_F32) return ((const float *)p)[i];
	uint16_t h = ((const uint16_t *)p)[i];
	if (dt == SD_BF16) {
		uint32_t u = (uint32_t)h << 16;
		float f;
		memcpy(&f, &u, sizeof f);
		return f;
	}
	return _cvtsh_ss(h);
}

/* ---- packing ---- */

/* units per k block: kp units cut into equal blocks of at most KCP */
static int64_t block_units(int64_t kp)
{
	int64_t nkb = (kp + KCP - 1) / KCP;
	return nkb ? (kp + nkb - 1) / nkb : 1;
}

int64_t sd_bf16_rows_per_chunk(int64_t k)
{
	int64_t kp = (k + 1) / 2, kc = block_units(kp), nkb = (kp + kc - 1) / kc;
	int64_t row_bytes = nkb * kc * 4;
	if (row_bytes < 4) row_bytes = 4;
	int64_t rows = A_BUDGET / row_bytes / MR * MR;
	return rows < MR ? MR : rows;
}

/* A panel ip (rows ip*MR ..) into blocks of kc pairs: block (kb, ip) at pa + (kb*npa + ip)*MR*kc
 * dwords, row r of the panel at + r*kc. Rows past m and pairs past k are zeros. */
static void pack_a_panel(const void *a, sd_dtype dt, int64_t lda, int64_t m, int64_t k,
                         int64_t ip, int64_t npa, int64_t kc, int64_t nkb, uint32_t *pa)
{
	size_t esz = sd_dtype_size(dt);
	for (int r = 0; r < MR; r++) {
		int64_t i = ip * MR + r;
		for (int64_t kb = 0; kb < nkb; kb++) {
			uint16_t *d = (uint16_t *)(pa + ((size_t)(kb * npa + ip) * MR + (size_t)r) * kc);
			int64_t k0 = kb * 2 * kc, cnt = k - k0 < 2 * kc ? k - k0 : 2 * kc;
			if (i < m) {
				row_to_bf16((const char *)a + (size_t)(i * lda + k0) * esz, dt, cnt, d);
				if (cnt < 2 * kc) memset(d + cnt, 0, (size_t)(2 * kc - cnt) * sizeof(uint16_t));
			} else {
				memset(d, 0, (size_t)(2 * kc) * sizeof(uint16_t));
			}
		}
	}
}

/* The panel of op(B) (k x n) at columns j0.. into d: pair p at d + p*NR dwords, column jj's pair
 * (B[2p][j], B[2p+1][j]) in dword jj. Columns past n and the pair past k are zeros. */
static void pack_b_panel(const void *b, sd_dtype dt, int transb, int64_t ldb, int64_t n, int64_t k,
                         int64_t j0, uint32_t *d)
{
	int64_t kp = (k + 1) / 2, nc = n - j0 < NR ? n - j0 : NR;
	if (!transb && dt == SD_F32) {
		/* rows 2p and 2p+1, 16 columns at a time: convert both, interleave the halves */
		const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
		                                     24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17,
		                                     1, 16, 0);
		const float *B = b;
		__mmask16 m[3] = {mask16(nc), mask16(nc - 16), mask16(nc - 32)};
		for (int64_t p = 0; p < kp; p++) {
			const float *r0 = B + 2 * p * ldb + j0;
			int has1 = 2 * p + 1 < k;
			for (int q = 0; q < 3; q++) {
				__m512 v0 = _mm512_maskz_loadu_ps(m[q], r0 + 16 * q);
				__m512 v1 = has1 ? _mm512_maskz_loadu_ps(m[q], r0 + ldb + 16 * q) : _mm512_setzero_ps();
				__m512i v = (__m512i)_mm512_cvtne2ps_pbh(v1, v0);
				_mm512_storeu_si512(d + p * NR + 16 * q, _mm512_permutexvar_epi16(idx, v));
			}
		}
	} else if (!transb) {
		for (int64_t p = 0; p < kp; p++)
			for (int jj = 0; jj < NR; jj++) {
				float lo = 0, hi = 0;
				if (jj < nc) {
					lo = elem_f32(b, dt, 2 * p * ldb + j0 + jj);
					if (2 * p + 1 < k) hi = elem_f32(b, dt, (2 * p + 1) * ldb + j0 + jj);
				}
				__m256bh v = _mm512_cvtneps_pbh(_mm512_set_ps(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, hi, lo));
				d[p * NR + jj] = (uint32_t)_mm256_extract_epi32((__m256i)v, 0);
			}
	} else {
		/* B is n x k: each column of op(B) is a row of B, already in pairs once converted */
		size_t esz = sd_dtype_size(dt);
		for (int jj = 0; jj < NR; jj++) {
			if (jj < nc) {
				/* the row in chunks of 512 through a buffer on the stack */
				uint16_t tmp[514];
				const char *row = (const char *)b + (size_t)((j0 + jj) * ldb) * esz;
				for (int64_t k0 = 0; k0 < k; k0 += 512) {
					int64_t cnt = k - k0 < 512 ? k - k0 : 512;
					row_to_bf16(row + (size_t)k0 * esz, dt, cnt, tmp);
					tmp[cnt] = 0;
					for (int64_t q = 0; q < (cnt + 1) / 2; q++)
						d[(k0 / 2 + q) * NR + jj] = (uint32_t)tmp[2 * q] | (uint32_t)tmp[2 * q + 1] << 16;
				}
			} else {
				for (int64_t p = 0; p < kp; p++) d[p * NR + jj] = 0;
			}
		}
	}
}

/* The same panel with f32 units: value p of column jj at d[p*NR + jj]. */
static void pack_b_panel_f32(const float *b, int transb, int64_t ldb, int64_t n, int64_t k, int64_t j0,
                             uint32_t *d)
{
	int64_t nc = n - j0 < NR ? n - j0 : NR;
	if (!transb) {
		__mmask16 m[3] = {mask16(nc), mask16(nc - 16), mask16(nc - 32)};
		for (int64_t p = 0; p < k; p++)
			for (int q = 0; q < 3; q++)
				_mm512_storeu_ps((float *)(d + p * NR + 16 * q), _mm512_maskz_loadu_ps(m[q], b + p * ldb + j0 + 16 * q));
		return;
	}
	/* B is n x k: column jj of op(B) is row j0 + jj of B */
	float *df = (float *)d;
	for (int64_t jj = 0; jj < NR; jj++) {
		const float *row = b + (j0 + jj) * ldb;
		for (int64_t p = 0; p < k; p++) df[p * NR + jj] = jj < nc ? row[p] : 0.0f;
	}
}

/* ---- micro-kernel: C (mr x nr tile) (=|+=) A panel (8 rows, kc units) . B panel (kc x 48) ---- */

typedef struct tile_args {
	float alpha, beta;
	int first;             /* first k block: C = beta C + alpha acc + biases; else C += alpha acc */
	const float *bias_row; /* at the tile's first row, or NULL */
	const float *bias_col; /* at the tile's first column, or NULL */
} tile_args;

static inline void store_vec(float *cp, __mmask16 m, __m512 acc, float brow, const float *bcol,
                             const tile_args *t)
{
	if (!m) return;
	if (t->alpha != 1.0f) acc = _mm512_mul_ps(acc, _mm512_set1_ps(t->alpha));
	if (!t->first) {
		acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, cp));
	} else {
		if (t->beta != 0.0f)
			acc = _mm512_fmadd_ps(_mm512_set1_ps(t->beta), _mm512_maskz_loadu_ps(m, cp), acc);
		if (t->bias_row) acc = _mm512_add_ps(acc, _mm512_set1_ps(brow));
		if (bcol) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, bcol));
	}
	_mm512_mask_storeu_ps(cp, m, acc);
}

#define DECL(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = c##i##0, c##i##2 = c##i##0;
/* acc += a . b on one vector of 16 (or, half, 8) columns: unit f32 a VFMADD231PS, else a
 * VDPBF16PS (two products per lane). a and b hold the units' bits. */
static inline __attribute__((always_inline)) __m512 dot_unit(__m512 acc, __m512i b, __m512i a,
                                                            const int f32, const int half)
{
	if (f32 && half)
		return _mm512_castps256_ps512(_mm256_fmadd_ps(_mm256_castsi256_ps(_mm512_castsi512_si256(a)),
		                                              _mm256_castsi256_ps(_mm512_castsi512_si256(b)),
		                                              _mm512_castps512_ps256(acc)));
	if (f32) return _mm512_fmadd_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b), acc);
	if (half)
		return _mm512_castps256_ps512(_mm256_dpbf16_ps(_mm512_castps512_ps256(acc),
		                                               (__m256bh)_mm512_castsi512_si256(b),
		                                               (__m256bh)_mm512_castsi512_si256(a)));
	return _mm512_dpbf16_ps(acc, (__m512bh)b, (__m512bh)a);
}
/* the 32 bits of one unit of A, whatever its type (f32 data or bf16 pairs) */
static inline int unit_bits(const uint32_t *p)
{
	int v;
	memcpy(&v, p, sizeof v);
	return v;
}
/* One row of the tile. (An inline-asm version with the A pair as a {1to16} memory operand, so
 * without the separate VPBROADCASTD, measured the same: the VDPBF16PS throughput is the limit.) */
#define STEP(i)                                                                    \
	{                                                                          \
		__m512i a_ = _mm512_set1_epi32(unit_bits(a + (i) * lda + p));      \
		c##i##0 = dot_unit(c##i##0, b0, a_, f32, 0);                       \
		if (nv > 1) c##i##1 = dot_unit(c##i##1, b1, a_, f32, 0);           \
		if (nv > 2) c##i##2 = dot_unit(c##i##2, b2, a_, f32, half3);       \
	}
#define STORE(i)                                                                          \
	if ((i) < mr) {                                                                   \
		float *cr = c + (i) * ldc;                                                \
		float br = t->bias_row ? t->bias_row[i] : 0.0f;                           \
		const float *bc = t->first && t->bias_col ? t->bias_col : NULL;           \
		store_vec(cr, m0, c##i##0, br, bc, t);                                    \
		store_vec(cr + 16, m1, c##i##1, br, bc ? bc + 16 : NULL, t);              \
		store_vec(cr + 32, m2, c##i##2, br, bc ? bc + 32 : NULL, t);              \
	}

/* a: the 8 rows of the A panel (all readable), lda units apart. nv: column vectors of the tile
 * that hold columns (1, 2 or 3 of 16): a narrow edge panel (n mod 48 <= 32) does only the work
 * of its columns. half3: the third vector holds at most 8 columns and runs as a ymm (on Zen 4 a
 * zmm operation costs two ymm ones): 40 columns, attention's P.V with 40-wide heads. f32: the
 * units are f32 values, else bf16 pairs. */
static inline __attribute__((always_inline)) void
kernel_nv(int64_t kc, const uint32_t *a, int64_t lda, const uint32_t *b, float *c, int64_t ldc,
          int mr, int nr, const tile_args *t, const int nv, const int half3, const int f32)
{
	DECL(0) DECL(1) DECL(2) DECL(3) DECL(4) DECL(5) DECL(6) DECL(7)
	for (int64_t p = 0; p < kc; p++) {
		const uint32_t *bp = b + p * NR;
		__m512i b0 = _mm512_loadu_si512(bp);
		__m512i b1 = nv > 1 ? _mm512_loadu_si512(bp + 16) : b0;
		__m512i b2 = nv > 2 && half3 ? _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(bp + 32)))
		             : nv > 2        ? _mm512_loadu_si512(bp + 32)
		                             : b0;
		STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5) STEP(6) STEP(7)
	}
	__mmask16 m0 = mask16(nr), m1 = mask16(nr - 16), m2 = mask16(nr - 32);
	STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
}

typedef void (*kernel_fn)(int64_t, const uint32_t *, int64_t, const uint32_t *, float *, int64_t,
                          int, int, const tile_args *);
#define KERNEL(name, nv, half3, f32)                                                               \
	static void name(int64_t kc, const uint32_t *a, int64_t lda, const uint32_t *b, float *c,   \
	                 int64_t ldc, int mr, int nr, const tile_args *t)                            \
	{                                                                                           \
		kernel_nv(kc, a, lda, b, c, ldc, mr, nr, t, nv, half3, f32);                       \
	}
KERNEL(bf16_16, 1, 0, 0)
KERNEL(bf16_32, 2, 0, 0)
KERNEL(bf16_40, 3, 1, 0)
KERNEL(bf16_48, 3, 0, 0)
KERNEL(f32_16, 1, 0, 1)
KERNEL(f32_32, 2, 0, 1)
KERNEL(f32_40, 3, 1, 1)
KERNEL(f32_48, 3, 0, 1)
/* [f32 units][the tile's columns: up to 16, 32, 40, 48] */
static const kernel_fn kernels[2][4] = {{bf16_16, bf16_32, bf16_40, bf16_48},
                                        {f32_16, f32_32, f32_40, f32_48}};

/* ---- drivers ---- */

/* The left operand as the micro-kernel reads it: k in blocks of kc units (f32 values when f32,
 * else bf16 pairs); the 8-row panel ip of k block kb starts at data + kb * kstride + ip * pstride
 * (units), its rows lda units apart. */
typedef struct a_panels {
	const uint32_t *data;
	int64_t kc, kstride, pstride, lda;
	int f32;
} a_panels;

/* C rows [ip0*MR, min(ip1*MR, m)) by the columns of B panels [jp0, jp1) (of n), k blocks in
 * order: C = alpha A.B + beta C (+ biases) with B panel jp at pb + jp * bstride dwords. */
static void tiles(const a_panels *A, int64_t m, int64_t ip0, int64_t ip1, const uint32_t *pb,
                  int64_t bstride, int64_t n, int64_t jp0, int64_t jp1, int64_t kp, float alpha,
                  float beta, float *c, int64_t ldc, const float *bias_row, const float *bias_col)
{
	int64_t nkb = (kp + A->kc - 1) / A->kc;
	for (int64_t kb = 0; kb < nkb; kb++) {
		int64_t kc = kp - kb * A->kc < A->kc ? kp - kb * A->kc : A->kc;
		for (int64_t jp = jp0; jp < jp1; jp++) {
			const uint32_t *bpan = pb + (size_t)(jp * bstride + kb * A->kc * NR);
			int64_t j = jp * NR;
			int nr = (int)(n - j < NR ? n - j : NR);
			kernel_fn kern = kernels[A->f32][nr > 40 ? 3 : nr > 32 ? 2 : nr > 16 ? 1 : 0];
			for (int64_t ip = ip0; ip < ip1; ip++) {
				int64_t i = ip * MR;
				int mr = (int)(m - i < MR ? m - i : MR);
				tile_args t = {alpha, beta, kb == 0, bias_row ? bias_row + i : NULL,
				               bias_col ? bias_col + j : NULL};
				kern(kc, A->data + (size_t)(kb * A->kstride + ip * A->pstride), A->lda, bpan,
				     c + i * ldc + j, ldc, mr, nr, &t);
			}
		}
	}
}

int64_t sd_tile_packed_b_units(int64_t n, int64_t ku)
{
	return (n + NR - 1) / NR * ku * NR;
}

void sd_tile_pack_b_avx512(int f32, const void *b, sd_dtype bdt, int transb, int64_t ldb, int64_t n,
                           int64_t k, uint32_t *pb, int64_t bstride)
{
	for (int64_t jp = 0; jp * NR < n; jp++) {
		if (f32) pack_b_panel_f32(b, transb, ldb, n, k, jp * NR, pb + jp * bstride);
		else pack_b_panel(b, bdt, transb, ldb, n, k, jp * NR, pb + jp * bstride);
	}
}

void sd_bf16_gemm_prepacked_avx512(const sd_bf16_pack *pk, const uint32_t *pb, int64_t bstride,
                                   int64_t n, float *c, int64_t ldc, const float *bias_row)
{
	int64_t kp = (pk->k + 1) / 2, kc = block_units(kp), npa = (pk->m + MR - 1) / MR;
	a_panels A = {pk->data, kc, npa * MR * kc, MR * kc, kc, 0};
	tiles(&A, pk->m, 0, npa, pb, bstride, n, 0, (n + NR - 1) / NR, kp, 1.0f, 0.0f, c, ldc, bias_row, NULL);
}

void sd_tile_gemm_rows_avx512(int f32, int64_t m, int64_t n, int64_t ku, float alpha, const void *a,
                              int64_t lda, const uint32_t *pb, int64_t bstride, float beta, float *c,
                              int64_t ldc)
{
	a_panels A = {a, block_units(ku), block_units(ku), MR * lda, lda, f32};
	tiles(&A, m, 0, (m + MR - 1) / MR, pb, bstride, n, 0, (n + NR - 1) / NR, ku, alpha, beta, c, ldc,
	      NULL, NULL);
}

int sd_bf16_pack_a_avx512(sd_bf16_pack *pk, int64_t m, int64_t k, const void *a, sd_dtype adt,
                          int64_t lda)
{
	int64_t kp = (k + 1) / 2, kc = block_units(kp), nkb = (kp + kc - 1) / kc, npa = (m + MR - 1) / MR;
	size_t dwords = (size_t)(nkb * npa) * MR * kc;
	uint32_t *pa = (uint32_t *)sd_workspace(0, dwords);
	if (!pa) return -1;
	int par = !omp_in_parallel() && omp_get_max_threads() > 1 && npa > 1 && m * k >= (1 << 15);
#pragma omp parallel for schedule(static) if (par)
	for (int64_t ip = 0; ip < npa; ip++) pack_a_panel(a, adt, lda, m, k, ip, npa, kc, nkb, pa);
	pk->data = pa;
	pk->m = m;
	pk->k = k;
	return 0;
}

/* C = beta C + biases, for k == 0 */
static void bias_only(int64_t m, int64_t n, float beta, float *c, int64_t ldc,
                      const float *bias_row, const float *bias_col)
{
	for (int64_t i = 0; i < m; i++)
		for (int64_t j = 0; j < n; j++) {
			float v = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
			if (bias_row) v += bias_row[i];
			if (bias_col) v += bias_col[j];
			c[i * ldc + j] = v;
		}
}

int sd_gemm_bf16_packed_avx512(const sd_bf16_pack *pk, int transb, int64_t n, float alpha,
                               const void *b, sd_dtype bdt, int64_t ldb, float beta, float *c,
                               int64_t ldc, const float *bias_row, const float *bias_col)
{
	int64_t m = pk->m, k = pk->k;
	if (m == 0 || n == 0) return 0;
	if (k == 0) {
		bias_only(m, n, beta, c, ldc, bias_row, bias_col);
		return 0;
	}
	int64_t kp = (k + 1) / 2, npa = (m + MR - 1) / MR;
	size_t bsz = sd_dtype_size(bdt);
	/* columns per chunk of packed B */
	int64_t ncols = B_BUDGET / (kp * 4) / NR * NR;
	if (ncols < NR) ncols = NR;
	int nth = omp_in_parallel() ? 1 : omp_get_max_threads();
	for (int64_t n0 = 0; n0 < n; n0 += ncols) {
		int64_t nc = n - n0 < ncols ? n - n0 : ncols;
		int64_t npb = (nc + NR - 1) / NR;
		uint32_t *pb = (uint32_t *)sd_workspace(1, (size_t)(npb * kp) * NR);
		if (!pb) return -1;
		const char *bc = transb ? (const char *)b + (size_t)(n0 * ldb) * bsz : (const char *)b + (size_t)n0 * bsz;
		/* work items: blocks of A panels x blocks of B panels, at least 4 per thread when the
		 * product allows it */
		int64_t ma = 32, nb = 8;
		while (((npa + ma - 1) / ma) * ((npb + nb - 1) / nb) < 4 * nth && (ma > 4 || nb > 1)) {
			if (ma > 4 && (ma >= 4 * nb || nb == 1)) ma /= 2;
			else nb = nb > 1 ? nb / 2 : 1;
		}
		int64_t nia = (npa + ma - 1) / ma, nib = (npb + nb - 1) / nb, items = nia * nib;
		int par = nth > 1 && (items > 1 || npb > 1) && (double)m * nc * k >= 1e6;
#pragma omp parallel if (par)
		{
#pragma omp for schedule(static)
			for (int64_t jp = 0; jp < npb; jp++)
				pack_b_panel(bc, bdt, transb, ldb, nc, k, jp * NR, pb + (size_t)(jp * kp) * NR);
			int64_t kc = block_units(kp);
			a_panels A = {pk->data, kc, npa * MR * kc, MR * kc, kc, 0};
#pragma omp for schedule(dynamic, 1)
			for (int64_t it = 0; it < items; it++) {
				int64_t ia = it % nia, ib = it / nia;
				int64_t ip0 = ia * ma, ip1 = ip0 + ma < npa ? ip0 + ma : npa;
				int64_t jp0 = ib * nb, jp1 = jp0 + nb < npb ? jp0 + nb : npb;
				tiles(&A, m, ip0, ip1, pb, kp * NR, nc, jp0, jp1, kp, alpha, beta, c + n0, ldc, bias_row,
				      bias_col ? bias_col + n0 : NULL);
			}
		}
	}
	return 0;
}
