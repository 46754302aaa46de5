/* AVX-512 row helpers of attention.c (compiled with the AVX-512 flags, called only when the
 * CPU has AVX-512). */
#include <immintrin.h>
#include <stdint.h>

float sd_attn_rowmax_avx512(const float *s, int64_t n);
float sd_attn_expsum_avx512(float *s, int64_t n, float m);
float sd_attn_exp2sum_bf16_avx512(const float *s, int64_t n, float m, uint16_t *p, int64_t npad);

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

/* exp(x) for x <= 0 (softmax arguments: score - running max): x = n ln2 + r with |r| <= ln2/2,
 * exp(r) by its Taylor polynomial to degree 7 (truncation < 2e-8 relative), times 2^n with
 * scalef. About 2 ulp; far below -87 the result underflows to 0 as exp does in f32 (-inf
 * included). NaN stays NaN. */
static inline __m512 exp_neg(__m512 x)
{
	const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
	const __m512 ln2_hi = _mm512_set1_ps(0.693145751953125f), ln2_lo = _mm512_set1_ps(1.42860682030941723e-6f);
	x = _mm512_max_ps(_mm512_set1_ps(-110.0f), x); /* this order keeps NaN */
	__m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
	r = _mm512_fnmadd_ps(n, ln2_lo, r);
	__m512 p = _mm512_set1_ps(1.0f / 5040);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	return _mm512_scalef_ps(p, n);
}

float sd_attn_expsum_avx512(float *s, int64_t n, float m)
{
	__m512 vm = _mm512_set1_ps(m), acc = _mm512_setzero_ps();
	int64_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512 e = exp_neg(_mm512_sub_ps(_mm512_loadu_ps(s + i), vm));
		_mm512_storeu_ps(s + i, e);
		acc = _mm512_add_ps(acc, e);
	}
	if (i < n) {
		__mmask16 k = (__mmask16)((1u << (n - i)) - 1);
		__m512 e = exp_neg(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + i), vm));
		e = _mm512_maskz_mov_ps(k, e);
		_mm512_mask_storeu_ps(s + i, k, e);
		acc = _mm512_add_ps(acc, e);
	}
	return _mm512_reduce_add_ps(acc);
}

/* 2^x for x <= 0 to within 4e-6 relative, for weights about to be rounded to bf16 (2^-9):
 * x = n + f with |f| <= 1/2, 2^f by a degree-4 polynomial through the Chebyshev nodes of
 * [-1/2, 1/2], times 2^n with scalef. Below -150 (and -inf) the result is 0. */
static inline __m512 exp2_neg(__m512 x)
{
	x = _mm512_max_ps(_mm512_set1_ps(-150.0f), x); /* this order keeps NaN */
	__m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 f = _mm512_sub_ps(x, n);
	__m512 p = _mm512_set1_ps(0.009666368515387469f);
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.055921975842256264f));
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24022349038020335f));
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.693121045203427f));
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
	return _mm512_scalef_ps(p, n);
}

float sd_attn_exp2sum_bf16_avx512(const float *s, int64_t n, float m, uint16_t *p, int64_t npad)
{
	__m512 vm = _mm512_set1_ps(m), acc = _mm512_setzero_ps();
	int64_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512 e = exp2_neg(_mm512_sub_ps(_mm512_loadu_ps(s + i), vm));
		_mm256_storeu_si256((__m256i *)(p + i), (__m256i)_mm512_cvtneps_pbh(e));
		acc = _mm512_add_ps(acc, e);
	}
	if (i < n) {
		__mmask16 k = (__mmask16)((1u << (n - i)) - 1);
		__m512 e = _mm512_maskz_mov_ps(k, exp2_neg(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + i), vm)));
		_mm256_mask_storeu_epi16(p + i, k, (__m256i)_mm512_cvtneps_pbh(e));
		acc = _mm512_add_ps(acc, e);
	}
	for (i = n; i < npad; i++) p[i] = 0;
	return _mm512_reduce_add_ps(acc);
}
