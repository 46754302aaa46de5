/* Pointwise unary functions: dispatch to the AVX-512 or AVX2 file, else SSE2 SLEEF (4 lanes), else libm. */
#include <math.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#include <sleef.h>
#endif
#include "activation.h"
#include "cpu.h"
#include "sd_error.h"

void sd_act_avx512(sd_act op, const float *x, float *y, size_t n);
void sd_act2_avx512(int kind, const float *a, const float *b, float *y, size_t n);
void sd_act_avx2(sd_act op, const float *x, float *y, size_t n);
void sd_act2_avx2(int kind, const float *a, const float *b, float *y, size_t n);

static int use_avx2(void)
{
	const sd_cpu *c = sd_cpu_features();
	return c->avx2 && c->fma;
}

#define ACT_CHUNK 8192        /* elements per parallel task (a multiple of 16) */
#define ACT_PAR_MIN (1 << 15) /* below this many elements, one thread */

static const char *const act_names[SD_ACT_COUNT] = {
	"neg", "exp", "log", "sqrt", "rsqrt", "abs", "sin", "cos", "tanh", "sigmoid", "silu", "gelu",
	"gelu_tanh", "quick_gelu"};

const char *sd_act_name(sd_act op) { return (unsigned)op < SD_ACT_COUNT ? act_names[op] : "?"; }

static inline float s_sigmoid_mul(float x, float z) { return x / (1.0f + expf(-z)); }
static inline float s_gelu(float x) { return (float)(0.5 * (double)x * erfc(-(double)x * 0.70710678118654752)); }
static inline float s_gelu_tanh(float x)
{
	float u = 0.7978845608028654f * (x + 0.044715f * (x * x * x));
	return s_sigmoid_mul(x, u + u);
}

float sd_act_scalar(sd_act op, float x)
{
	switch (op) {
	case SD_ACT_NEG: return -x;
	case SD_ACT_EXP: return expf(x);
	case SD_ACT_LOG: return logf(x);
	case SD_ACT_SQRT: return sqrtf(x);
	case SD_ACT_RSQRT: return 1.0f / sqrtf(x);
	case SD_ACT_ABS: return fabsf(x);
	case SD_ACT_SIN: return sinf(x);
	case SD_ACT_COS: return cosf(x);
	case SD_ACT_TANH: return tanhf(x);
	case SD_ACT_SIGMOID: return s_sigmoid_mul(1.0f, x);
	case SD_ACT_SILU: return s_sigmoid_mul(x, x);
	case SD_ACT_GELU: return s_gelu(x);
	case SD_ACT_GELU_TANH: return s_gelu_tanh(x);
	case SD_ACT_QUICK_GELU: return s_sigmoid_mul(x, 1.702f * x);
	default: return x;
	}
}

#if defined(__SSE2__)
static inline __m128 q_sigmoid_mul(__m128 x, __m128 z)
{
	__m128 e = Sleef_expf4_u10(_mm_sub_ps(_mm_setzero_ps(), z));
	return _mm_div_ps(x, _mm_add_ps(_mm_set1_ps(1.0f), e));
}
/* gelu as in activation_avx512.c (the same fitted series), without FMA: a^2 is split exactly
 * with Dekker's product instead. */
static const float phi_P[7] = {3.680489932e-01f, -2.867621644e-02f, 2.088627289e-03f,
                               -1.223112619e-04f, 5.884342736e-06f, -2.394565093e-07f, 8.394754861e-09f};
static const float phi_G[11] = {3.719013648e-01f, -5.206159079e-02f, -3.961765843e-02f,
                                -1.562541834e-02f, -3.157410056e-03f, -2.623439792e-07f, 1.386186815e-04f,
                                8.128520382e-06f, -7.578815695e-06f, -3.348001981e-07f, 4.334105722e-07f};
#define PHI_T_LO 0.1764705882352941
#define PHI_T_HI 0.75

static inline __m128 q_horner(const float *c, int n, __m128 s)
{
	__m128 r = _mm_set1_ps(c[n - 1]);
	for (int k = n - 2; k >= 0; k--) r = _mm_add_ps(_mm_mul_ps(r, s), _mm_set1_ps(c[k]));
	return r;
}

static inline __m128 q_gelu(__m128 x)
{
	const __m128 one = _mm_set1_ps(1.0f), half = _mm_set1_ps(0.5f);
	__m128 ax = _mm_andnot_ps(_mm_set1_ps(-0.0f), x);
	__m128 sa = _mm_sub_ps(_mm_mul_ps(_mm_set1_ps(2.0f), _mm_mul_ps(x, x)), one);
	__m128 ya = _mm_mul_ps(x, _mm_add_ps(_mm_mul_ps(x, q_horner(phi_P, 7, sa)), half));
	__m128 a = _mm_min_ps(ax, _mm_set1_ps(20.0f));
	__m128 t = _mm_div_ps(_mm_set1_ps(3.0f), _mm_add_ps(a, _mm_set1_ps(3.0f)));
	__m128 sb = _mm_add_ps(_mm_mul_ps(t, _mm_set1_ps((float)(2.0 / (PHI_T_HI - PHI_T_LO)))),
	                       _mm_set1_ps((float)(-(PHI_T_HI + PHI_T_LO) / (PHI_T_HI - PHI_T_LO))));
	__m128 g = q_horner(phi_G, 11, sb);
	__m128 h = _mm_mul_ps(a, a);
	__m128 ah = _mm_and_ps(a, _mm_castsi128_ps(_mm_set1_epi32((int)0xfffff000u))), al = _mm_sub_ps(a, ah);
	__m128 e = _mm_add_ps(_mm_add_ps(_mm_sub_ps(_mm_mul_ps(ah, ah), h), _mm_mul_ps(_mm_add_ps(ah, ah), al)),
	                      _mm_mul_ps(al, al)); /* a^2 - h, exactly */
	__m128 ex = Sleef_expf4_u10(_mm_mul_ps(h, _mm_set1_ps(-0.5f)));
	ex = _mm_sub_ps(ex, _mm_mul_ps(_mm_mul_ps(e, half), ex));
	__m128 r = _mm_mul_ps(ex, g);
	__m128 neg = _mm_cmplt_ps(x, _mm_setzero_ps());
	__m128 yb = _mm_or_ps(_mm_and_ps(neg, _mm_sub_ps(_mm_setzero_ps(), r)), _mm_andnot_ps(neg, _mm_sub_ps(x, r)));
	__m128 small = _mm_cmple_ps(ax, one);
	return _mm_or_ps(_mm_and_ps(small, ya), _mm_andnot_ps(small, yb));
}
static inline __m128 q_gelu_tanh(__m128 x)
{
	__m128 x3 = _mm_mul_ps(_mm_mul_ps(x, x), x);
	__m128 u = _mm_mul_ps(_mm_set1_ps(0.7978845608028654f), _mm_add_ps(x, _mm_mul_ps(_mm_set1_ps(0.044715f), x3)));
	return q_sigmoid_mul(x, _mm_add_ps(u, u));
}
#define QMAP(EXPR)                                              \
	do {                                                    \
		for (; i + 4 <= n; i += 4) {                    \
			__m128 v = _mm_loadu_ps(x + i);         \
			_mm_storeu_ps(y + i, (EXPR));           \
		}                                               \
	} while (0)

static size_t act_sse2(sd_act op, const float *x, float *y, size_t n)
{
	size_t i = 0;
	const __m128 one = _mm_set1_ps(1.0f), sign = _mm_set1_ps(-0.0f);
	switch (op) {
	case SD_ACT_NEG: QMAP(_mm_xor_ps(v, sign)); break;
	case SD_ACT_ABS: QMAP(_mm_andnot_ps(sign, v)); break;
	case SD_ACT_EXP: QMAP(Sleef_expf4_u10(v)); break;
	case SD_ACT_LOG: QMAP(Sleef_logf4_u10(v)); break;
	case SD_ACT_SQRT: QMAP(_mm_sqrt_ps(v)); break;
	case SD_ACT_RSQRT: QMAP(_mm_div_ps(one, _mm_sqrt_ps(v))); break;
	case SD_ACT_SIN: QMAP(Sleef_sinf4_u10(v)); break;
	case SD_ACT_COS: QMAP(Sleef_cosf4_u10(v)); break;
	case SD_ACT_TANH: QMAP(Sleef_tanhf4_u10(v)); break;
	case SD_ACT_SIGMOID: QMAP(q_sigmoid_mul(one, v)); break;
	case SD_ACT_SILU: QMAP(q_sigmoid_mul(v, v)); break;
	case SD_ACT_GELU: QMAP(q_gelu(v)); break;
	case SD_ACT_GELU_TANH: QMAP(q_gelu_tanh(v)); break;
	case SD_ACT_QUICK_GELU: QMAP(q_sigmoid_mul(v, _mm_mul_ps(v, _mm_set1_ps(1.702f)))); break;
	default: break;
	}
	return i;
}
#endif

void sd_act_f32_serial(sd_act op, const float *x, float *y, size_t n)
{
	if ((unsigned)op >= SD_ACT_COUNT) return;
	if (sd_cpu_features()->avx512) { sd_act_avx512(op, x, y, n); return; }
	if (use_avx2()) { sd_act_avx2(op, x, y, n); return; }
	size_t i = 0;
#if defined(__SSE2__)
	i = act_sse2(op, x, y, n);
#endif
	for (; i < n; i++) y[i] = sd_act_scalar(op, x[i]);
}

void sd_act_f32(sd_act op, const float *x, float *y, size_t n)
{
	if (n < ACT_PAR_MIN) { sd_act_f32_serial(op, x, y, n); return; }
	int64_t tasks = (int64_t)((n + ACT_CHUNK - 1) / ACT_CHUNK);
	#pragma omp parallel for schedule(static)
	for (int64_t t = 0; t < tasks; t++) {
		size_t s = (size_t)t * ACT_CHUNK, len = n - s < ACT_CHUNK ? n - s : ACT_CHUNK;
		sd_act_f32_serial(op, x + s, y + s, len);
	}
}

/* kind 0: y = a * gelu(b); kind 1: y = silu(a + b) */
static void act2_serial(int kind, const float *a, const float *b, float *y, size_t n)
{
	if (sd_cpu_features()->avx512) { sd_act2_avx512(kind, a, b, y, n); return; }
	if (use_avx2()) { sd_act2_avx2(kind, a, b, y, n); return; }
	size_t i = 0;
#if defined(__SSE2__)
	if (kind == 0) {
		for (; i + 4 <= n; i += 4) _mm_storeu_ps(y + i, _mm_mul_ps(_mm_loadu_ps(a + i), q_gelu(_mm_loadu_ps(b + i))));
	} else {
		for (; i + 4 <= n; i += 4) {
			__m128 s = _mm_add_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i));
			_mm_storeu_ps(y + i, q_sigmoid_mul(s, s));
		}
	}
#endif
	for (; i < n; i++) {
		if (kind == 0) y[i] = a[i] * s_gelu(b[i]);
		else { float s = a[i] + b[i]; y[i] = s_sigmoid_mul(s, s); }
	}
}

void sd_geglu_f32(const float *x, float *y, int64_t rows, int64_t half)
{
	if (rows <= 0 || half <= 0) return;
	if (half >= ACT_CHUNK || rows * half < ACT_PAR_MIN) {
		#pragma omp parallel for schedule(static) if (rows * half >= ACT_PAR_MIN)
		for (int64_t r = 0; r < rows; r++)
			act2_serial(0, x + r * 2 * half, x + r * 2 * half + half, y + r * half, (size_t)half);
		return;
	}
	int64_t per = ACT_CHUNK / half; /* rows per task */
	int64_t tasks = (rows + per - 1) / per;
	#pragma omp parallel for schedule(static)
	for (int64_t t = 0; t < tasks; t++) {
		int64_t r1 = (t + 1) * per < rows ? (t + 1) * per : rows;
		for (int64_t r = t * per; r < r1; r++)
			act2_serial(0, x + r * 2 * half, x + r * 2 * half + half, y + r * half, (size_t)half);
	}
}

void sd_add_silu_f32(const float *a, const float *b, float *y, size_t n)
{
	if (n < ACT_PAR_MIN) { act2_serial(1, a, b, y, n); return; }
	int64_t tasks = (int64_t)((n + ACT_CHUNK - 1) / ACT_CHUNK);
	#pragma omp parallel for schedule(static)
	for (int64_t t = 0; t < tasks; t++) {
		size_t s = (size_t)t * ACT_CHUNK, len = n - s < ACT_CHUNK ? n - s : ACT_CHUNK;
		act2_serial(1, a + s, b + s, y + s, len);
	}
}

int sd_activation(sd_act op, const sd_tensor *x, sd_tensor *out)
{
	if ((unsigned)op >= SD_ACT_COUNT) return sd_seterr("unknown activation %d", (int)op);
	if (x->dtype != SD_F32) return sd_seterr("expected an f32 tensor, got %s", sd_dtype_name(x->dtype));
	sd_tensor r;
	if (sd_tensor_is_contiguous(x)) {
		if (sd_tensor_new(&r, SD_F32, x->ndim, x->shape) != 0) return -1;
		sd_act_f32(op, sd_tensor_data(x), sd_tensor_data(&r), (size_t)sd_tensor_numel(x));
	} else {
		/* a contiguous copy, transformed in place */
		if (sd_tensor_to(x, &r, SD_F32) != 0) return -1;
		float *p = sd_tensor_data(&r);
		sd_act_f32(op, p, p, (size_t)sd_tensor_numel(&r));
	}
	*out = r;
	return 0;
}

int sd_geglu(const sd_tensor *x, sd_tensor *out)
{
	if (x->dtype != SD_F32) return sd_seterr("expected an f32 tensor, got %s", sd_dtype_name(x->dtype));
	if (x->ndim < 1 || x->shape[x->ndim - 1] % 2 != 0)
		return sd_seterr("the last dimension of %s is not even", SD_SHAPE_STR(x));
	sd_tensor c, r;
	if (sd_tensor_contiguous(x, &c) != 0) return -1;
	int64_t shape[SD_MAX_DIMS];
	memcpy(shape, x->shape, sizeof shape);
	int64_t half = shape[x->ndim - 1] / 2;
	shape[x->ndim - 1] = half;
	if (sd_tensor_new(&r, SD_F32, x->ndim, shape) != 0) { sd_tensor_release(&c); return -1; }
	int64_t rows = half ? sd_tensor_numel(&r) / half : 0;
	sd_geglu_f32(sd_tensor_data(&c), sd_tensor_data(&r), rows, half);
	sd_tensor_release(&c);
	*out = r;
	return 0;
}
