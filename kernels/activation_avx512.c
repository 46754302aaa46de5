/* AVX-512 versions of the pointwise functions (compiled with -mavx512*; called only when the CPU
 * has AVX-512). Tails are done with masked loads and stores, so every element goes through the
 * same vector code. */
#include <immintrin.h>
#include <sleef.h>
#include "activation.h"

void sd_act_avx512(sd_act op, const float *x, float *y, size_t n);
void sd_act2_avx512(int kind, const float *a, const float *b, float *y, size_t n);

static inline __m512 v_sigmoid_mul(__m512 x, __m512 z) /* x / (1 + exp(-z)) */
{
	const __m512 one = _mm512_set1_ps(1.0f);
	__m512 e = Sleef_expf16_u10(_mm512_sub_ps(_mm512_setzero_ps(), z));
	return _mm512_div_ps(x, _mm512_add_ps(one, e));
}

/* 0.5 x erfc(-x / sqrt 2): the exact gelu, accurate also where 1 + erf would cancel */
static inline __m512 v_gelu(__m512 x)
{
	__m512 z = _mm512_mul_ps(x, _mm512_set1_ps(-0.70710678118654752f));
	return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), Sleef_erfcf16_u15(z));
}

/* 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) */
static inline __m512 v_gelu_tanh(__m512 x)
{
	__m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
	__m512 u = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f),
	                         _mm512_add_ps(x, _mm512_mul_ps(_mm512_set1_ps(0.044715f), x3)));
	return v_sigmoid_mul(x, _mm512_add_ps(u, u));
}

#define MAP(EXPR)                                                                    \
	do {                                                                         \
		size_t i = 0;                                                        \
		for (; i + 16 <= n; i += 16) {                                       \
			__m512 v = _mm512_loadu_ps(x + i);                           \
			_mm512_storeu_ps(y + i, (EXPR));                             \
		}                                                                    \
		if (i < n) {                                                         \
			__mmask16 m = (__mmask16)((1u << (n - i)) - 1);              \
			__m512 v = _mm512_maskz_loadu_ps(m, x + i);                  \
			_mm512_mask_storeu_ps(y + i, m, (EXPR));                     \
		}                                                                    \
	} while (0)

void sd_act_avx512(sd_act op, const float *x, float *y, size_t n)
{
	const __m512 one = _mm512_set1_ps(1.0f);
	const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
	switch (op) {
	case SD_ACT_NEG: MAP(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), sign))); break;
	case SD_ACT_ABS: MAP(_mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(v)))); break;
	case SD_ACT_EXP: MAP(Sleef_expf16_u10(v)); break;
	case SD_ACT_LOG: MAP(Sleef_logf16_u10(v)); break;
	case SD_ACT_SQRT: MAP(_mm512_sqrt_ps(v)); break;
	case SD_ACT_RSQRT: MAP(_mm512_div_ps(one, _mm512_sqrt_ps(v))); break;
	case SD_ACT_SIN: MAP(Sleef_sinf16_u10(v)); break;
	case SD_ACT_COS: MAP(Sleef_cosf16_u10(v)); break;
	case SD_ACT_TANH: MAP(Sleef_tanhf16_u10(v)); break;
	case SD_ACT_SIGMOID: MAP(v_sigmoid_mul(one, v)); break;
	case SD_ACT_SILU: MAP(v_sigmoid_mul(v, v)); break;
	case SD_ACT_GELU: MAP(v_gelu(v)); break;
	case SD_ACT_GELU_TANH: MAP(v_gelu_tanh(v)); break;
	case SD_ACT_QUICK_GELU: MAP(v_sigmoid_mul(v, _mm512_mul_ps(v, _mm512_set1_ps(1.702f)))); break;
	default: break;
	}
}

/* kind 0: y = a * gelu(b) (geglu); kind 1: y = silu(a + b) */
void sd_act2_avx512(int kind, const float *a, const float *b, float *y, size_t n)
{
	size_t i = 0;
	if (kind == 0) {
		for (; i + 16 <= n; i += 16)
			_mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(a + i), v_gelu(_mm512_loadu_ps(b + i))));
		if (i < n) {
			__mmask16 m = (__mmask16)((1u << (n - i)) - 1);
			__m512 r = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + i), v_gelu(_mm512_maskz_loadu_ps(m, b + i)));
			_mm512_mask_storeu_ps(y + i, m, r);
		}
	} else {
		for (; i + 16 <= n; i += 16) {
			__m512 s = _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
			_mm512_storeu_ps(y + i, v_sigmoid_mul(s, s));
		}
		if (i < n) {
			__mmask16 m = (__mmask16)((1u << (n - i)) - 1);
			__m512 s = _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
			_mm512_mask_storeu_ps(y + i, m, v_sigmoid_mul(s, s));
		}
	}
}
