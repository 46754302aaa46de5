/* Matrix products over raw row-major buffers, on cblas_sgemm (OpenBLAS).
 *
 * Transposes and leading dimensions go to BLAS as they are: nothing is copied for f32
 * operands. An operand in f16/bf16 (a uint16_t buffer tagged with its sd_dtype) is widened
 * tile by tile into a bounded thread-local workspace and the product is done tile by tile,
 * so memory stays bounded whatever the weight's size.
 *
 * Threading: called outside an OpenMP parallel region, OpenBLAS uses all threads; inside
 * one (as attention does), it runs single-threaded in each thread.
 *
 * Every function returns 0, or -1 after sd_seterr (bad argument, out of memory). */
#ifndef SD_GEMM_H
#define SD_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include "dtype.h"

/* C (m x n, ldc) = alpha * op(A) op(B) + beta * C, all f32, row-major. op(A) is m x k:
 * A is m x k (lda >= k) or, with transa, k x m (lda >= m). Likewise op(B) k x n. */
int sd_sgemm(int transa, int transb, int64_t m, int64_t n, int64_t k, float alpha,
             const float *a, int64_t lda, const float *b, int64_t ldb,
             float beta, float *c, int64_t ldc);

/* The same with A and B each in f32, f16 or bf16 (C is f32). Half operands are widened in
 * tiles of rows of op(A) / columns of op(B) into a workspace of at most ~2 MB per operand. */
int sd_gemm_ex(int transa, int transb, int64_t m, int64_t n, int64_t k, float alpha,
               const void *a, sd_dtype adt, int64_t lda,
               const void *b, sd_dtype bdt, int64_t ldb,
               float beta, float *c, int64_t ldc);

/* batch products C_i = alpha op(A_i) op(B_i) + beta C_i with A_i = a + i*stride_a (elements;
 * a stride of 0 broadcasts). Small products are spread over threads one product each; large
 * ones run one after another with BLAS threading. f32 only. */
int sd_gemm_batched(int transa, int transb, int64_t m, int64_t n, int64_t k, float alpha,
                    const float *a, int64_t lda, int64_t stride_a,
                    const float *b, int64_t ldb, int64_t stride_b,
                    float beta, float *c, int64_t ldc, int64_t stride_c, int64_t batch);

/* y (m x n, ldy) = x (m x k, ldx) . W^T + bias, W (n x k, row stride ldw) in f32/f16/bf16,
 * bias (n) f32 or NULL: a linear layer. */
int sd_linear(int64_t m, int64_t n, int64_t k, const float *x, int64_t ldx,
              const void *w, sd_dtype wdt, int64_t ldw, const float *bias,
              float *y, int64_t ldy);

/* `rows` runs of `len` f16/bf16 elements (dt), run r at src + r*ld, widened into dst + r*len;
 * in parallel when it is worth it and the caller is not inside a parallel region. */
void sd_widen_rows(const uint16_t *src, sd_dtype dt, int64_t ld, int64_t rows, int64_t len, float *dst);

/* Thread-local scratch shared by the kernels: slot 0..SD_WS_SLOTS-1, grown on demand, kept
 * for reuse by the calling thread. NULL after sd_seterr when out of memory. Slots 0-1 belong
 * to sd_gemm_ex; callers of sd_gemm_ex use slots 2 and up. */
#define SD_WS_SLOTS 6
float *sd_workspace(int slot, size_t nfloats);
/* Frees the calling thread's workspaces; _all: those of every thread of the OpenMP team too. */
void sd_workspace_release(void);
void sd_workspace_release_all(void);

#endif
