/* Matrix products with bfloat16 operands and float32 accumulation (AVX512_BF16 VDPBF16PS).
 *
 * Used instead of the f32 (cblas_sgemm) path when the matmul precision is bf16
 * (runtime/precision.h) and the CPU has AVX512_BF16: sd_gemm_ex with a row-major left
 * operand (so sd_linear), sd_conv2d and sd_attention route here. Operands in f32, f16 or bf16 are rounded to
 * bf16 (round to nearest even) while they are packed; every product of two bf16 values is exact
 * in f32, sums are f32. Relative error per product is therefore about 2^-8 per operand.
 *
 * Layout: the left operand A (m x k, rows contiguous along k) is packed into panels of 8 rows,
 * k cut into equal blocks of at most 768 bf16 pairs, each row's pairs contiguous (a block of an
 * A panel is 24 KB, for L1; the matching block of a B panel 144 KB, for L2: blocks of 128 pairs
 * measured 10-20 % slower, from re-reading C once per block); the right operand op(B)
 * (k x n) into panels of 48 columns holding, for each pair of k, the 48 (B[2p][j], B[2p+1][j])
 * pairs: one zmm of VDPBF16PS per 16 columns. The micro-kernel keeps an 8 x 48 tile of C in 24
 * registers. Packed operands live in the calling thread's workspaces (slot 0: A, at most
 * ~32 MB; slot 1: B, at most ~16 MB; larger operands are done in chunks).
 *
 * Every function returns 0, or -1 after sd_seterr. */
#ifndef SD_GEMM_BF16_H
#define SD_GEMM_BF16_H

#include <stdint.h>
#include "dtype.h"

/* 1 when matrix products should take the bf16 path: precision bf16 and AVX512_BF16 present
 * (and not capped by SDLUA_CPU). */
int sd_gemm_bf16_enabled(void);

/* C (m x n, ldc) = alpha * A . op(B) + beta * C (+ bias_col[j], unless NULL). A: m x k, row i
 * at a + i*lda (lda >= k). op(B): transb ? B is n x k (row stride ldb) : B is k x n (row stride
 * ldb). Operands f32, f16 or bf16; C f32. Needs sd_gemm_bf16_enabled() (an error otherwise). */
int sd_gemm_bf16(int transb, int64_t m, int64_t n, int64_t k, float alpha,
                 const void *a, sd_dtype adt, int64_t lda,
                 const void *b, sd_dtype bdt, int64_t ldb,
                 float beta, float *c, int64_t ldc, const float *bias_col);

/* A left operand packed once and used for several products (a convolution's weights against
 * each im2col band). The data lives in the calling thread's workspace slot 0: valid until that
 * thread's next sd_gemm_ex / sd_gemm_bf16 / sd_bf16_pack_a. */
typedef struct sd_bf16_pack {
	const uint32_t *data;
	int64_t m, k;
} sd_bf16_pack;

int sd_bf16_pack_a(sd_bf16_pack *pk, int64_t m, int64_t k, const void *a, sd_dtype adt, int64_t lda);

/* C (pk->m x n, ldc) = alpha * A . op(B) + beta * C (+ bias_row[i]) (+ bias_col[j]); the biases
 * may be NULL. */
int sd_gemm_bf16_packed(const sd_bf16_pack *pk, int transb, int64_t n, float alpha,
                        const void *b, sd_dtype bdt, int64_t ldb, float beta, float *c, int64_t ldc,
                        const float *bias_row, const float *bias_col);

/* The AVX-512 implementations (kernels/gemm_tiles_avx512.c); call the functions above. */
int sd_bf16_pack_a_avx512(sd_bf16_pack *pk, int64_t m, int64_t k, const void *a, sd_dtype adt,
                          int64_t lda);
int sd_gemm_bf16_packed_avx512(const sd_bf16_pack *pk, int transb, int64_t n, float alpha,
                               const void *b, sd_dtype bdt, int64_t ldb, float beta, float *c,
                               int64_t ldc, const float *bias_row, const float *bias_col);
/* Rows of A per chunk so that its packed form stays within the slot-0 budget. */
int64_t sd_bf16_rows_per_chunk(int64_t k);

#endif
