/* AVX-512 row helpers of attention.c (compiled with the AVX-512 flags, called only when the
 * CPU has AVX-512). */
#include <immintrin.h>
#include <sleef.h>
#include <stdint.h>

float sd_attn_rowmax_avx512(const float *s, int64_t n);
float sd_attn_expsum_avx512(float *s, int64_t n, float m);

float sd_attn_rowmax_avx512(const float *s, int64_t n)
{
	__m512 mx = _mm512_set1_ps(-__builtin_inff());
	int64_t i = 0;
	for (; i + 16 <= n; i += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + i));
	if (i < n) {
		__mmask16 k = (__mmask16)((1u << (n - i)) - 1);
		mx = _mm512_mask_max_ps(mx, k, mx, _mm512_maskz_loadu_ps(k, s + i));
	}
	return _mm512_reduce_max_ps(mx);
}

float sd_attn_expsum_avx512(float *s, int64_t n, float m)
{
	__m512 vm = _mm512_set1_ps(m), acc = _mm512_setzero_ps();
	int64_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512 e = Sleef_expf16_u10avx512f(_mm512_sub_ps(_mm512_loadu_ps(s + i), vm));
		_mm512_storeu_ps(s + i, e);
		acc = _mm512_add_ps(acc, e);
	}
	if (i < n) {
		__mmask16 k = (__mmask16)((1u << (n - i)) - 1);
		__m512 e = Sleef_expf16_u10avx512f(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + i), vm));
		e = _mm512_maskz_mov_ps(k, e);
		_mm512_mask_storeu_ps(s + i, k, e);
		acc = _mm512_add_ps(acc, e);
	}
	return _mm512_reduce_add_ps(acc);
}
