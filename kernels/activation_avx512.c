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

/* polynomial sum_k c[k] s^k by Horner's rule */
static inline __m512 horner(const float *c, int n, __m512 s)
{
	__m512 r = _mm512_set1_ps(c[n - 1]);
	for (int k = n - 2; k >= 0; k--) r = _mm512_fmadd_ps(r, s, _mm512_set1_ps(c[k]));
	return r;
}

/* The standard normal CDF Phi(x) = 0.5 erfc(-x / sqrt 2), to a few ulp, in two pieces fitted for
 * this file (Chebyshev interpolation of double-precision erf/erfc; SLEEF's erff is exact but
 * about 7x slower than expf):
 *   |x| <= 1: Phi(x) = 0.5 + x P(x^2),                    P in s = 2x^2 - 1
 *   |x| >  1: Phi(-a) = exp(-a^2 / 2) G(t) / a, a = |x|,  t = 3 / (3 + a), G ~ a Phi(-a) e^(a^2/2)
 * with exp's argument corrected for the rounding of a^2, so the negative tail keeps its relative
 * accuracy down to the underflow. (Coefficients generated with a small Chebyshev-interpolation
 * script against Python's math.erf/erfc.) */
static const float phi_P[7] = {3.680489932e-01f, -2.867621644e-02f, 2.088627289e-03f,
                               -1.223112619e-04f, 5.884342736e-06f, -2.394565093e-07f, 8.394754861e-09f};
static const float phi_G[11] = {3.719013648e-01f, -5.206159079e-02f, -3.961765843e-02f,
                                -1.562541834e-02f, -3.157410056e-03f, -2.623439792e-07f, 1.386186815e-04f,
                                8.128520382e-06f, -7.578815695e-06f, -3.348001981e-07f, 4.334105722e-07f};
#define PHI_T_LO 0.1764705882352941 /* t at a = 14 */
#define PHI_T_HI 0.75               /* t at a = 1 */

/* gelu(x) = x Phi(x). For |x| > 1 with a = |x| and r = exp(-a^2/2) G(t) = a Phi(-a):
 * gelu(x) = -r for x < 0 and x - r for x > 0, with no division and no subnormal intermediate. */
static inline __m512 v_gelu(__m512 x)
{
	const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
	__m512 ax = _mm512_abs_ps(x);
	/* |x| <= 1 */
	__m512 sa = _mm512_fmsub_ps(_mm512_set1_ps(2.0f), _mm512_mul_ps(x, x), one);
	__m512 ya = _mm512_mul_ps(x, _mm512_fmadd_ps(x, horner(phi_P, 7, sa), half));
	/* |x| > 1 (a clamped so that infinities give 0 and x rather than NaN) */
	__m512 a = _mm512_min_ps(ax, _mm512_set1_ps(20.0f));
	__m512 t = _mm512_div_ps(_mm512_set1_ps(3.0f), _mm512_add_ps(a, _mm512_set1_ps(3.0f)));
	__m512 sb = _mm512_fmadd_ps(t, _mm512_set1_ps((float)(2.0 / (PHI_T_HI - PHI_T_LO))),
	                            _mm512_set1_ps((float)(-(PHI_T_HI + PHI_T_LO) / (PHI_T_HI - PHI_T_LO))));
	__m512 g = horner(phi_G, 11, sb);
	__m512 h = _mm512_mul_ps(a, a), e = _mm512_fmsub_ps(a, a, h); /* a^2 = h + e exactly */
	__m512 ex = Sleef_expf16_u10(_mm512_mul_ps(h, _mm512_set1_ps(-0.5f)));
	ex = _mm512_fnmadd_ps(_mm512_mul_ps(e, half), ex, ex); /* exp(-(h + e)/2) */
	__m512 r = _mm512_mul_ps(ex, g);                       /* a Phi(-a) */
	__mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
	__m512 yb = _mm512_mask_blend_ps(neg, _mm512_sub_ps(x, r), _mm512_sub_ps(_mm512_setzero_ps(), r));
	__mmask16 small = _mm512_cmp_ps_mask(ax, one, _CMP_LE_OQ);
	return _mm512_mask_blend_ps(small, yb, ya);
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
