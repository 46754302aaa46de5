/* AVX-512 moments: sums of (x - k) and (x - k)^2 in double, eight lanes by four accumulators. */
#include <immintrin.h>
#include <stdint.h>

void sd_moments_avx512(const float *x, int64_t n, double k, double *s1, double *s2);

void sd_moments_avx512(const float *x, int64_t n, double k, double *s1, double *s2)
{
	const __m512d kk = _mm512_set1_pd(k);
	__m512d a0 = _mm512_setzero_pd(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
	int64_t i = 0;
	for (; i + 32 <= n; i += 32) {
		__m512 v = _mm512_loadu_ps(x + i), w = _mm512_loadu_ps(x + i + 16);
		__m512d p = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), kk);
		__m512d q = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)), kk);
		__m512d r = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(w)), kk);
		__m512d s = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(w, 1)), kk);
		a0 = _mm512_add_pd(a0, p); a1 = _mm512_fmadd_pd(p, p, a1);
		b0 = _mm512_add_pd(b0, q); b1 = _mm512_fmadd_pd(q, q, b1);
		c0 = _mm512_add_pd(c0, r); c1 = _mm512_fmadd_pd(r, r, c1);
		d0 = _mm512_add_pd(d0, s); d1 = _mm512_fmadd_pd(s, s, d1);
	}
	for (; i + 8 <= n; i += 8) {
		__m512d p = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), kk);
		a0 = _mm512_add_pd(a0, p); a1 = _mm512_fmadd_pd(p, p, a1);
	}
	if (i < n) {
		__mmask8 m = (__mmask8)((1u << (n - i)) - 1);
		__m512d p = _mm512_maskz_sub_pd(m, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, x + i)), kk);
		a0 = _mm512_add_pd(a0, p); a1 = _mm512_fmadd_pd(p, p, a1);
	}
	a0 = _mm512_add_pd(_mm512_add_pd(a0, b0), _mm512_add_pd(c0, d0));
	a1 = _mm512_add_pd(_mm512_add_pd(a1, b1), _mm512_add_pd(c1, d1));
	*s1 = _mm512_reduce_add_pd(a0);
	*s2 = _mm512_reduce_add_pd(a1);
}

/* y = ((x - m) - ml) * s + t over n (group norm's per-channel affine form) */
void sd_norm_apply_avx512(const float *x, float *y, int64_t n, float m, float ml, float s, float t);

void sd_norm_apply_avx512(const float *x, float *y, int64_t n, float m, float ml, float s, float t)
{
	const __m512 vm = _mm512_set1_ps(m), vl = _mm512_set1_ps(ml), vs = _mm512_set1_ps(s), vt = _mm512_set1_ps(t);
	int64_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512 d = _mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm), vl);
		_mm512_storeu_ps(y + i, _mm512_fmadd_ps(d, vs, vt));
	}
	if (i < n) {
		__mmask16 k = (__mmask16)((1u << (n - i)) - 1);
		__m512 d = _mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm), vl);
		_mm512_mask_storeu_ps(y + i, k, _mm512_fmadd_ps(d, vs, vt));
	}
}

/* y = (((x - m) - ml) * r) * w + b over D (layer norm; w, b may be NULL) */
void sd_layer_apply_avx512(const float *x, float *y, int64_t D, float m, float ml, float r, const float *w, const float *b);

void sd_layer_apply_avx512(const float *x, float *y, int64_t D, float m, float ml, float r, const float *w, const float *b)
{
	const __m512 vm = _mm512_set1_ps(m), vl = _mm512_set1_ps(ml), vr = _mm512_set1_ps(r);
	const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
	for (int64_t i = 0; i < D; i += 16) {
		__mmask16 k = D - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (D - i)) - 1);
		__m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm), vl), vr);
		__m512 vw = w ? _mm512_maskz_loadu_ps(k, w + i) : one, vb = b ? _mm512_maskz_loadu_ps(k, b + i) : zero;
		_mm512_mask_storeu_ps(y + i, k, _mm512_fmadd_ps(d, vw, vb));
	}
}
