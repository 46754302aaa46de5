/* Flash-style scaled dot-product attention on sgemm tiles with an online softmax. */
#include "attention.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "cpu.h"
#include "gemm.h"
#include "sd_error.h"

float sd_attn_rowmax_avx512(const float *s, int64_t n);
float sd_attn_expsum_avx512(float *s, int64_t n, float m);

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
	const int64_t TQ = SD_ATTN_TQ, TK = SD_ATTN_TK;
	const int avx512 = sd_cpu_features()->avx512; /* read before any worker thread runs */
	int64_t ntq = (N + TQ - 1) / TQ;
	int64_t items = B * H * ntq;
	int failed = 0;
	int par = !omp_in_parallel() && items > 1;

#pragma omp parallel if (par) reduction(| : failed)
	{
		int64_t tk = M < TK ? M : TK, tq = N < TQ ? N : TQ;
		float *S = sd_workspace(2, (size_t)(tq * tk));
		float *O = sd_workspace(3, (size_t)(tq * dv));
		float *ml = sd_workspace(4, (size_t)(2 * tq));
		float *cp = sd_workspace(5, (size_t)(tq * d + tk * (d > dv ? d : dv)));
		if (!S || !O || !ml || !cp) failed = 1;
#pragma omp for schedule(dynamic, 1)
		for (int64_t it = 0; it < items; it++) {
			if (failed) continue;
			int64_t qt = it % ntq, bh = it / ntq, b = bh / H, h = bh % H;
			int64_t i0 = qt * TQ, nq = N - i0 < TQ ? N - i0 : TQ;
			float *m = ml, *l = ml + tq;
			int64_t ldq, ldk, ldv;
			const float *Q = rows_of(q + b * qs[0] + h * qs[1] + i0 * qs[2], qs[2], nq, d, cp, &ldq);
			const float *Kb = k + b * ks[0] + h * ks[1], *Vb = v + b * vs[0] + h * vs[1];
			for (int64_t i = 0; i < nq; i++) { m[i] = -INFINITY; l[i] = 0.0f; }
			memset(O, 0, (size_t)(nq * dv) * sizeof(float));
			int64_t kend = causal ? (M < i0 + nq ? M : i0 + nq) : M;
			for (int64_t j0 = 0; j0 < kend; j0 += TK) {
				int64_t nk = kend - j0 < TK ? kend - j0 : TK;
				const float *Kt = rows_of(Kb + j0 * ks[2], ks[2], nk, d, cp + tq * d, &ldk);
				sd_sgemm(0, 1, nq, nk, d, scale, Q, ldq, Kt, ldk, 0.0f, S, nk);
				for (int64_t i = 0; i < nq; i++) {
					float *s = S + i * nk;
					int64_t valid = nk;
					if (causal) {
						valid = i0 + i - j0 + 1;
						if (valid > nk) valid = nk;
						if (valid < 0) valid = 0;
					}
					if (valid == 0) {
						memset(s, 0, (size_t)nk * sizeof(float));
						continue;
					}
					float mx = avx512 ? sd_attn_rowmax_avx512(s, valid) : sd_attn_rowmax(s, valid);
					float mnew = mx > m[i] ? mx : m[i];
					if (mnew == -INFINITY) { /* every score -inf: contributes nothing */
						memset(s, 0, (size_t)nk * sizeof(float));
						continue;
					}
					float sum = avx512 ? sd_attn_expsum_avx512(s, valid, mnew) : sd_attn_expsum(s, valid, mnew);
					if (valid < nk) memset(s + valid, 0, (size_t)(nk - valid) * sizeof(float));
					float alpha = expf(m[i] - mnew); /* 0 on the first tile */
					if (alpha != 1.0f) {
						float *o = O + i * dv;
						for (int64_t j = 0; j < dv; j++) o[j] *= alpha;
					}
					l[i] = l[i] * alpha + sum;
					m[i] = mnew;
				}
				const float *Vt = rows_of(Vb + j0 * vs[2], vs[2], nk, dv, cp + tq * d, &ldv);
				sd_sgemm(0, 0, nq, dv, nk, 1.0f, S, nk, Vt, ldv, 1.0f, O, dv);
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
