/* Flash-style scaled dot-product attention with an online softmax: tile products on the packed
 * panels of gemm_tiles.h (AVX-512) or on sgemm. */
#include "attention.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "cpu.h"
#include "gemm.h"
#include "gemm_tiles.h"
#include "sd_error.h"

float sd_attn_rowmax_avx512(const float *s, int64_t n);
float sd_attn_expsum_avx512(float *s, int64_t n, float m);
float sd_attn_exp2sum_bf16_avx512(const float *s, int64_t n, float m, uint16_t *p, int64_t npad);

float sd_attn_rowmax(const float *s, int64_t n)
{
	if (sd_cpu_features()->avx512) return sd_attn_rowmax_avx512(s, n);
	float m = -INFINITY;
	for (int64_t i = 0; i < n; i++) m = s[i] > m ? s[i] : m;
	return m;
}

float sd_attn_expsum(float *s, int64_t n, float m)
{
	if (sd_cpu_features()->avx512) return sd_attn_expsum_avx512(s, n, m);
	float sum = 0.0f;
	for (int64_t i = 0; i < n; i++) {
		s[i] = expf(s[i] - m);
		sum += s[i];
	}
	return sum;
}

/* rows x len block at src (row stride ld) as a pointer with row stride >= len: the block itself
 * when its rows do not overlap, else a copy in buf. */
static const float *rows_of(const float *src, int64_t ld, int64_t rows, int64_t len, float *buf,
                            int64_t *ldout)
{
	if (ld >= len || rows <= 1) {
		*ldout = ld >= len ? ld : len;
		return src;
	}
	for (int64_t r = 0; r < rows; r++) memcpy(buf + r * len, src + r * ld, (size_t)len * sizeof(float));
	*ldout = len;
	return buf;
}

/* The online softmax of one tile of scores S (nq x nk: query rows i0.., keys j0..): each row
 * becomes its weights exp(s - m_new), in place (P == NULL), or, with scores in base-2 units
 * (times log2 e), 2^(s - m_new) as bf16 into P (row stride ldp dwords, zeros up to the row's
 * end). The running max m and sum l of each row are updated and its output row in O (dv wide)
 * rescaled to the new max. */
static void softmax_tile(float *S, int64_t nq, int64_t nk, int64_t i0, int64_t j0, int causal,
                         int avx512, float *m, float *l, float *O, int64_t dv, uint16_t *P,
                         int64_t ldp)
{
	for (int64_t i = 0; i < nq; i++) {
		float *s = S + i * nk;
		uint16_t *p = P ? P + i * 2 * ldp : NULL;
		int64_t valid = nk;
		if (causal) {
			valid = i0 + i - j0 + 1;
			if (valid > nk) valid = nk;
			if (valid < 0) valid = 0;
		}
		float mx = valid == 0 ? -INFINITY
		           : avx512   ? sd_attn_rowmax_avx512(s, valid)
		                      : sd_attn_rowmax(s, valid);
		float mnew = mx > m[i] ? mx : m[i];
		if (mnew == -INFINITY) { /* no key, or every score -inf: contributes nothing */
			if (p) memset(p, 0, (size_t)ldp * sizeof(uint32_t));
			else memset(s, 0, (size_t)nk * sizeof(float));
			continue;
		}
		float sum;
		if (p) {
			sum = sd_attn_exp2sum_bf16_avx512(s, valid, mnew, p, 2 * ldp);
		} else {
			sum = avx512 ? sd_attn_expsum_avx512(s, valid, mnew) : sd_attn_expsum(s, valid, mnew);
			if (valid < nk) memset(s + valid, 0, (size_t)(nk - valid) * sizeof(float));
		}
		float alpha = p ? exp2f(m[i] - mnew) : expf(m[i] - mnew); /* 0 on the first tile */
		if (alpha != 1.0f) {
			float *o = O + i * dv;
			for (int64_t j = 0; j < dv; j++) o[j] *= alpha;
		}
		l[i] = l[i] * alpha + sum;
		m[i] = mnew;
	}
}

/* On AVX-512 (the packed path) K and V of every (batch, head) are packed once into the panels of
 * kernels/gemm_tiles.h, in the calling thread's workspace slot 0 (this path makes no sd_gemm_ex
 * call that would reuse it), and both products of a tile run on its micro-kernel: in f32 units,
 * or, with the bf16 precision on an AVX512_BF16 CPU, in bf16 pairs (Q tiles and the softmax
 * weights rounded to bf16 rows, scores in base 2). Key tiles start on panel boundaries and on
 * pairs. Elsewhere each tile's products are sgemm calls. */
#define ROUND8(x) (((x) + 7) / 8 * 8)
_Static_assert(SD_ATTN_TK_PACKED % SD_TILE_NR == 0 && SD_ATTN_TK_PACKED % 2 == 0,
               "packed key tiles start on panels and pairs");

int sd_attention(int64_t B, int64_t H, int64_t N, int64_t M, int64_t d, int64_t dv,
                 const float *q, const int64_t qs[3], const float *k, const int64_t ks[3],
                 const float *v, const int64_t vs[3], float scale, int causal, float *out)
{
	if (B < 0 || H < 0 || N < 0 || M < 0 || d <= 0 || dv <= 0)
		return sd_seterr("attention: bad sizes B=%lld H=%lld N=%lld M=%lld d=%lld dv=%lld",
		                 (long long)B, (long long)H, (long long)N, (long long)M, (long long)d,
		                 (long long)dv);
	for (int i = 0; i < 3; i++)
		if (qs[i] < 0 || ks[i] < 0 || vs[i] < 0)
			return sd_seterr("attention: negative stride");
	if (B == 0 || H == 0 || N == 0) return 0;
	if (M == 0) {
		memset(out, 0, (size_t)(B * N * H * dv) * sizeof(float));
		return 0;
	}
	/* read before any worker thread runs */
	const int avx512 = sd_cpu_features()->avx512, bf16 = sd_gemm_bf16_enabled();
	const int packed = avx512, f32 = !bf16; /* AVX512_BF16 implies AVX-512 */
	const int64_t TQ = SD_ATTN_TQ, TK = packed ? SD_ATTN_TK_PACKED : SD_ATTN_TK;
	int64_t ntq = (N + TQ - 1) / TQ;
	int64_t items = B * H * ntq;
	int failed = 0;
	int par = !omp_in_parallel() && items > 1;
	/* units of a Q row and of the keys: f32 values or bf16 pairs. K is packed as op(B) = K^T
	 * (d x M), V as op(B) = V (M x dv). */
	int64_t qu = f32 ? d : (d + 1) / 2, mu = f32 ? M : (M + 1) / 2;
	int64_t kstride = packed ? sd_tile_packed_b_units(M, qu) : 0;
	int64_t vstride = packed ? sd_tile_packed_b_units(dv, mu) : 0;
	uint32_t *kpack = NULL;
	if (packed && !(kpack = (uint32_t *)sd_workspace(0, (size_t)(B * H * (kstride + vstride)))))
		return -1;
	uint32_t *vpack = kpack + B * H * kstride;

#pragma omp parallel if (par) reduction(| : failed)
	{
		if (packed) {
#pragma omp for schedule(dynamic, 1)
			for (int64_t it = 0; it < 2 * B * H; it++) {
				int64_t bh = it / 2, b = bh / H, h = bh % H;
				if (it % 2 == 0)
					sd_tile_pack_b_avx512(f32, k + b * ks[0] + h * ks[1], SD_F32, 1, ks[2], M, d,
					                      kpack + bh * kstride, qu * SD_TILE_NR);
				else
					sd_tile_pack_b_avx512(f32, v + b * vs[0] + h * vs[1], SD_F32, 0, vs[2], dv, M,
					                      vpack + bh * vstride, mu * SD_TILE_NR);
			}
		}
		int64_t tk = M < TK ? M : TK, tq = N < TQ ? N : TQ;
		/* the packed path reads the scores (f32) as whole 8-row panels */
		float *S = sd_workspace(2, (size_t)(ROUND8(tq) * tk));
		float *O = sd_workspace(3, (size_t)(tq * dv));
		float *ml = sd_workspace(4, (size_t)(2 * tq));
		/* packed: the Q tile's rows (and, bf16, the weights' rows) in 8-row panels; else row copies
		 * of a Q or K/V tile */
		float *cp = sd_workspace(5, packed ? (size_t)(ROUND8(tq) * (qu + (f32 ? 0 : (tk + 1) / 2)))
		                                   : (size_t)(tq * d + tk * (d > dv ? d : dv)));
		if (!S || !O || !ml || !cp) failed = 1;
#pragma omp for schedule(dynamic, 1)
		for (int64_t it = 0; it < items; it++) {
			if (failed) continue;
			int64_t qt = it % ntq, bh = it / ntq, b = bh / H, h = bh % H;
			int64_t i0 = qt * TQ, nq = N - i0 < TQ ? N - i0 : TQ;
			float *m = ml, *l = ml + tq;
			const float *Qrow = q + b * qs[0] + h * qs[1] + i0 * qs[2];
			const float *Kb = k + b * ks[0] + h * ks[1], *Vb = v + b * vs[0] + h * vs[1];
			int64_t ldq = 0;
			const float *Q = NULL;
			/* packed: Qp the Q tile (qu units per row); P the bf16 weights (S itself for f32) */
			uint32_t *Qp = (uint32_t *)cp, *P = Qp + ROUND8(tq) * qu;
			if (packed) {
				memset(Qp, 0, (size_t)(ROUND8(nq) * qu) * sizeof(uint32_t));
				for (int64_t i = 0; i < nq; i++) {
					if (f32) memcpy(Qp + i * qu, Qrow + i * qs[2], (size_t)d * sizeof(float));
					else sd_f32_to_bf16_n(Qrow + i * qs[2], (uint16_t *)(Qp + i * qu), (size_t)d);
				}
			} else {
				Q = rows_of(Qrow, qs[2], nq, d, cp, &ldq);
			}
			for (int64_t i = 0; i < nq; i++) { m[i] = -INFINITY; l[i] = 0.0f; }
			memset(O, 0, (size_t)(nq * dv) * sizeof(float));
			int64_t kend = causal ? (M < i0 + nq ? M : i0 + nq) : M;
			for (int64_t j0 = 0; j0 < kend; j0 += TK) {
				int64_t nk = kend - j0 < TK ? kend - j0 : TK;
				if (packed) {
					/* the weights: wu units per row, rows past nq zero */
					int64_t wu = f32 ? nk : (nk + 1) / 2;
					void *W = f32 ? (void *)S : (void *)P;
					sd_tile_gemm_rows_avx512(f32, nq, nk, qu, f32 ? scale : scale * (float)M_LOG2E, Qp, qu,
					                         kpack + bh * kstride + j0 / SD_TILE_NR * qu * SD_TILE_NR,
					                         qu * SD_TILE_NR, 0.0f, S, nk);
					if (nq % 8)
						memset((uint32_t *)W + nq * wu, 0, (size_t)((ROUND8(nq) - nq) * wu) * sizeof(uint32_t));
					softmax_tile(S, nq, nk, i0, j0, causal, avx512, m, l, O, dv, f32 ? NULL : (uint16_t *)P, wu);
					sd_tile_gemm_rows_avx512(f32, nq, dv, wu, 1.0f, W, wu,
					                         vpack + bh * vstride + (f32 ? j0 : j0 / 2) * SD_TILE_NR,
					                         mu * SD_TILE_NR, 1.0f, O, dv);
				} else {
					int64_t ldk, ldv;
					const float *Kt = rows_of(Kb + j0 * ks[2], ks[2], nk, d, cp + tq * d, &ldk);
					sd_sgemm(0, 1, nq, nk, d, scale, Q, ldq, Kt, ldk, 0.0f, S, nk);
					softmax_tile(S, nq, nk, i0, j0, causal, avx512, m, l, O, dv, NULL, 0);
					const float *Vt = rows_of(Vb + j0 * vs[2], vs[2], nk, dv, cp + tq * d, &ldv);
					sd_sgemm(0, 0, nq, dv, nk, 1.0f, S, nk, Vt, ldv, 1.0f, O, dv);
				}
			}
			for (int64_t i = 0; i < nq; i++) {
				float *dst = out + ((b * N + i0 + i) * H + h) * dv;
				const float *o = O + i * dv;
				float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
				for (int64_t j = 0; j < dv; j++) dst[j] = o[j] * inv;
			}
		}
	}
	if (failed) return sd_seterr("attention: out of memory for the tile workspaces");
	return 0;
}
