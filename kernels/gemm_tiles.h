/* Register-tiled products over packed panels on AVX-512 (kernels/gemm_tiles_avx512.c), for
 * callers that pack operands themselves and multiply on one thread: attention packs K and V once
 * per head; a bf16 convolution packs its im2col columns a slice of rows at a time.
 *
 * The unit of k is an f32 value (f32 = 1: VFMADD231PS, any AVX-512 CPU) or a pair of bf16
 * values (f32 = 0: VDPBF16PS, AVX512_BF16 only; gemm_bf16.h). A packed op(B) (k x n) is a row of
 * panels of SD_TILE_NR columns, bstride units apart: panel jp holds columns jp*SD_TILE_NR ..,
 * unit p of its column jj at + p * SD_TILE_NR + jj (a bf16 unit: rows 2p and 2p+1); columns past
 * n and the half pair past an odd k are zeros. A whole op(B) takes sd_tile_packed_b_units(n, ku)
 * units with bstride = ku * SD_TILE_NR (ku = k for f32, (k + 1) / 2 for bf16); rows 2q.. (bf16)
 * or q.. (f32) of a larger op(B) are packed at pb + q * SD_TILE_NR with that operand's bstride. */
#ifndef SD_GEMM_TILES_H
#define SD_GEMM_TILES_H

#include <stdint.h>
#include "dtype.h"
#include "gemm_bf16.h"

#define SD_TILE_NR 48

int64_t sd_tile_packed_b_units(int64_t n, int64_t ku);

/* op(B) = transb ? B^T (B n x k, row stride ldb) : B (k x n) into panels as above. f32 units
 * take bdt f32; bf16 units f32, f16 or bf16 (rounded to nearest even). */
void sd_tile_pack_b_avx512(int f32, const void *b, sd_dtype bdt, int transb, int64_t ldb, int64_t n,
                           int64_t k, uint32_t *pb, int64_t bstride);

/* C (m x n, ldc) = alpha * A . B + beta * C on the calling thread. A: row i's ku units at
 * a + i * lda units (f32 values, or bf16 pairs as dwords); the rows up to m rounded up to 8 must
 * be readable (they do not reach C). B: packed panels bstride units apart; pb may point at a unit
 * inside them. */
void sd_tile_gemm_rows_avx512(int f32, int64_t m, int64_t n, int64_t ku, float alpha, const void *a,
                              int64_t lda, const uint32_t *pb, int64_t bstride, float beta, float *c,
                              int64_t ldc);

/* C (pk->m x n, ldc) = A . B (+ bias_row[i]) with A packed by sd_bf16_pack_a and B (bf16 units)
 * packed as above: a convolution band. */
void sd_bf16_gemm_prepacked_avx512(const sd_bf16_pack *pk, const uint32_t *pb, int64_t bstride,
                                   int64_t n, float *c, int64_t ldc, const float *bias_row);

#endif
