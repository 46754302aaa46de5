/* AVX2 + FMA versions of the pointwise functions (compiled with -mavx2 -mfma; called when the CPU
 * has AVX2 but not AVX-512). The same algorithms as activation_avx512.c, eight lanes; tails go
 * through masked loads and stores. */
#include <immintrin.h>
#include <sleef.h>
#include "activation.h"

void sd_act_avx2(sd_act op, const float *x, float *y, size_t n);
void sd_act2_avx2(int kind, const float *a, const float *b, float *y, size_t n);

static inline __m256 w_sigmoid_mul(__m256 x, __m256 z) /* x / (1 + exp(-z)) */
{
	__m256 e = Sleef_expf8_u10(_mm256_sub_ps(_mm256_setzero_ps(), z));
	return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static inline __m256 w_horner(const float *c, int n, __m256 s)
{
	__m256 r = _mm256_set1_ps(c[n - 1]);
	for (int k = n - 2; k >= 0; k--) r = _mm256_fmadd_ps(r, s, _mm256_set1_ps(c[k]));
	return r;
}

/* the fitted Phi series of activation_avx512.c */
static const float phi_P[7] = {3.680489932e-01f, -2.867621644e-02f, 2.088627289e-03f,
                               -1.223112619e-04f, 5.884342736e-06f, -2.394565093e-07f, 8.394754861e-09f};
static const float phi_G[11] = {3.719013648e-01f, -5.206159079e-02f, -3.961765843e-02f,
                                -1.562541834e-02f, -3.157410056e-03f, -2.623439792e-07f, 1.386186815e-04f,
                                8.128520382e-06f, -7.578815695e-06f, -3.348001981e-07f, 4.334105722e-07f};
#define PHI_T_LO 0.1764705882352941
#define PHI_T_HI 0.75

static inline __m256 w_gelu(__m256 x)
{
	const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
	__m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
	__m256 sa = _mm256_fmsub_ps(_mm256_set1_ps(2.0f), _mm256_mul_ps(x, x), one);
	__m256 ya = _mm256_mul_ps(x, _mm256_fmadd_ps(x, w_horner(phi_P, 7, sa), half));
	__m256 a = _mm256_min_ps(ax, _mm256_set1_ps(20.0f));
	__m256 t = _mm256_div_ps(_mm256_set1_ps(3.0f), _mm256_add_ps(a, _mm256_set1_ps(3.0f)));
	__m256 sb = _mm256_fmadd_ps(t, _mm256_set1_ps((float)(2.0 / (PHI_T_HI - PHI_T_LO))),
	                            _mm256_set1_ps((float)(-(PHI_T_HI + PHI_T_LO) / (PHI_T_HI - PHI_T_LO))));
	__m256 g = w_horner(phi_G, 11, sb);
	__m256 h = _mm256_mul_ps(a, a), e = _mm256_fmsub_ps(a, a, h);
	__m256 ex = Sleef_expf8_u10(_mm256_mul_ps(h, _mm256_set1_ps(-0.5f)));
	ex = _mm256_fnmadd_ps(_mm256_mul_ps(e, half), ex, ex);
	__m256 r = _mm256_mul_ps(ex, g);
	__m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
	__m256 yb = _mm256_blendv_ps(_mm256_sub_ps(x, r), _mm256_sub_ps(_mm256_setzero_ps(), r), neg);
	__m256 small = _mm256_cmp_ps(ax, one, _CMP_LE_OQ);
	return _mm256_blendv_ps(yb, ya, small);
}

static inline __m256 w_gelu_tanh(__m256 x)
{
	__m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
	__m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),
	                         _mm256_add_ps(x, _mm256_mul_ps(_mm256_set1_ps(0.044715f), x3)));
	return w_sigmoid_mul(x, _mm256_add_ps(u, u));
}

/* lanes < k set: a mask for the last partial vector */
static inline __m256i tail_mask(size_t k)
{
	return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

#define MAP(EXPR)                                                                    \
	do {                                                                         \
		size_t i = 0;                                                        \
		for (; i + 8 <= n; i += 8) {                                         \
			__m256 v = _mm256_loadu_ps(x + i);                           \
			_mm256_storeu_ps(y + i, (EXPR));                             \
		}                                                                    \
		if (i < n) {                                                         \
			__m256i m = tail_mask(n - i);                                \
			__m256 v = _mm256_maskload_ps(x + i, m);                     \
			_mm256_maskstore_ps(y + i, m, (EXPR));                       \
		}                                                                    \
	} while (0)

void sd_act_avx2(sd_act op, const float *x, float *y, size_t n)
{
	const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
	switch (op) {
	case SD_ACT_NEG: MAP(_mm256_xor_ps(v, sign)); break;
	case SD_ACT_ABS: MAP(_mm256_andnot_ps(sign, v)); break;
	case SD_ACT_EXP: MAP(Sleef_expf8_u10(v)); break;
	case SD_ACT_LOG: MAP(Sleef_logf8_u10(v)); break;
	case SD_ACT_SQRT: MAP(_mm256_sqrt_ps(v)); break;
	case SD_ACT_RSQRT: MAP(_mm256_div_ps(one, _mm256_sqrt_ps(v))); break;
	case SD_ACT_SIN: MAP(Sleef_sinf8_u10(v)); break;
	case SD_ACT_COS: MAP(Sleef_cosf8_u10(v)); break;
	case SD_ACT_TANH: MAP(Sleef_tanhf8_u10(v)); break;
	case SD_ACT_SIGMOID: MAP(w_sigmoid_mul(one, v)); break;
	case SD_ACT_SILU: MAP(w_sigmoid_mul(v, v)); break;
	case SD_ACT_GELU: MAP(w_gelu(v)); break;
	case SD_ACT_GELU_TANH: MAP(w_gelu_tanh(v)); break;
	case SD_ACT_QUICK_GELU: MAP(w_sigmoid_mul(v, _mm256_mul_ps(v, _mm256_set1_ps(1.702f)))); break;
	default: break;
	}
}

/* kind 0: y = a * gelu(b) (geglu); kind 1: y = silu(a + b) */
void sd_act2_avx2(int kind, const float *a, const float *b, float *y, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 va = _mm256_loadu_ps(a + i), vb = _mm256_loadu_ps(b + i), s;
		if (kind == 0) {
			_mm256_storeu_ps(y + i, _mm256_mul_ps(va, w_gelu(vb)));
		} else {
			s = _mm256_add_ps(va, vb);
			_mm256_storeu_ps(y + i, w_sigmoid_mul(s, s));
		}
	}
	if (i < n) {
		__m256i m = tail_mask(n - i);
		__m256 va = _mm256_maskload_ps(a + i, m), vb = _mm256_maskload_ps(b + i, m), s;
		if (kind == 0) {
			_mm256_maskstore_ps(y + i, m, _mm256_mul_ps(va, w_gelu(vb)));
		} else {
			s = _mm256_add_ps(va, vb);
			_mm256_maskstore_ps(y + i, m, w_sigmoid_mul(s, s));
		}
	}
}
