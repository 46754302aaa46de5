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
