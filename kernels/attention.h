/* Scaled dot-product attention, flash style: softmax(scale * Q K^T [+ causal mask]) V computed
 * over tiles of queries and keys with an online softmax, so that no more than one tile of the
 * N x M score matrix exists at a time (per thread). Q K^T and P V of each tile are sgemm calls;
 * the work is spread over (batch, head, query tile) with OpenMP, BLAS single-threaded inside.
 * On AVX-512 K and V are packed once per head and the products run on the register-tiled
 * kernel of gemm_tiles.h instead; with the bf16 precision on an AVX512_BF16 CPU
 * (sd_gemm_bf16_enabled) they are bf16 dot products (Q, K, V and the softmax weights rounded to
 * bf16; scores, sums and the output accumulate in f32). */
#ifndef SD_ATTENTION_H
#define SD_ATTENTION_H

#include <stdint.h>

/* Tile sizes: query rows and keys per tile. */
#ifndef SD_ATTN_TQ
#define SD_ATTN_TQ 128
#endif
#ifndef SD_ATTN_TK
#define SD_ATTN_TK 512
#endif
/* Keys per tile of the packed path (AVX-512): a multiple of the packed panel width (48). */
#ifndef SD_ATTN_TK_PACKED
#define SD_ATTN_TK_PACKED 768
#endif

/* q (B, H, N, d), k (B, H, M, d), v (B, H, M, dv), f32. The last dimension of each is
 * contiguous; qs/ks/vs are the strides (in elements) of the batch, head and row dimensions,
 * anything >= 0 (a row stride smaller than the row is copied per tile). out is (B, N, H, dv)
 * contiguous (so (B, N, H*dv) for the output projection). causal: query i sees keys j <= i
 * (torch's is_causal, top-left aligned). With M == 0 the output is zeros.
 * Returns 0, or -1 after sd_seterr. */
int sd_attention(int64_t B, int64_t H, int64_t N, int64_t M, int64_t d, int64_t dv,
                 const float *q, const int64_t qs[3], const float *k, const int64_t ks[3],
                 const float *v, const int64_t vs[3], float scale, int causal, float *out);

/* Row helpers (portable and AVX-512 variants chosen at run time). */
float sd_attn_rowmax(const float *s, int64_t n);
/* s[i] = exp(s[i] - m), returns the sum. */
float sd_attn_expsum(float *s, int64_t n, float m);

#endif
