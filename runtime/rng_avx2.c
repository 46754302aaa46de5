/* The >= 16 path's Box-Muller with AVX2 + FMA (compiled with -mavx2 -mfma; called only when the
 * CPU has them): eight lanes of the same steps as sd_rng_box_muller16_generic in rng.c, one
 * block of 16 uniforms per iteration, the same bits. The fused steps are explicit fmadd; every
 * unfused product is exact or feeds no addition (see rng.c), so contraction changes nothing. */
#include <immintrin.h>
#include "rng.h"

#define SET1 _mm256_set1_ps

static __m256 log8(__m256 x)
{
	const __m256 one = SET1(1.0f);
	__m256i b = _mm256_castps_si256(x);
	__m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(b, 23), _mm256_set1_epi32(126)));
	b = _mm256_or_si256(_mm256_and_si256(b, _mm256_set1_epi32((int)0x807fffffU)), _mm256_set1_epi32(0x3f000000));
	__m256 m = _mm256_castsi256_ps(b);
	__m256 small = _mm256_cmp_ps(m, SET1(SD_RNG_SQRTHF), _CMP_LT_OQ);
	e = _mm256_sub_ps(e, _mm256_and_ps(small, one));
	m = _mm256_add_ps(_mm256_sub_ps(m, one), _mm256_and_ps(small, m)); /* 2m - 1 or m - 1 */
	__m256 z = _mm256_mul_ps(m, m);
	__m256 p = SET1(SD_RNG_LOG_P0);
	p = _mm256_fmadd_ps(p, m, SET1(SD_RNG_LOG_P1));
	p = _mm256_fmadd_ps(p, m, SET1(SD_RNG_LOG_P2));
	p = _mm256_fmadd_ps(p, m, SET1(SD_RNG_LOG_P3));
	p = _mm256_fmadd_ps(p, m, SET1(SD_RNG_LOG_P4));
	p = _mm256_fmadd_ps(p, m, SET1(SD_RNG_LOG_P5));
	p = _mm256_fmadd_ps(p, m, SET1(SD_RNG_LOG_P6));
	p = _mm256_fmadd_ps(p, m, SET1(SD_RNG_LOG_P7));
	p = _mm256_fmadd_ps(p, m, SET1(SD_RNG_LOG_P8));
	p = _mm256_mul_ps(p, m);
	__m256 y = _mm256_fmadd_ps(p, z, _mm256_mul_ps(e, SET1(SD_RNG_LN2_LO)));
	y = _mm256_sub_ps(y, _mm256_mul_ps(z, SET1(0.5f)));
	__m256 r = _mm256_add_ps(m, y);
	return _mm256_add_ps(r, _mm256_mul_ps(e, SET1(SD_RNG_LN2_HI)));
}

/* x >= 0 (theta = 2 pi u) */
static void sincos8(__m256 x, __m256 *s, __m256 *c)
{
	__m256i j = _mm256_cvttps_epi32(_mm256_mul_ps(x, SET1(SD_RNG_FOPI)));
	j = _mm256_and_si256(_mm256_add_epi32(j, _mm256_set1_epi32(1)), _mm256_set1_epi32(~1));
	__m256 y = _mm256_cvtepi32_ps(j);
	x = _mm256_add_ps(x, _mm256_mul_ps(y, SET1(SD_RNG_DP1)));
	x = _mm256_add_ps(x, _mm256_mul_ps(y, SET1(SD_RNG_DP2)));
	x = _mm256_fmadd_ps(y, SET1(SD_RNG_DP3), x);
	const __m256i four = _mm256_set1_epi32(4);
	__m256 sign_s = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(j, four), 29));
	__m256 sign_c = _mm256_castsi256_ps(
		_mm256_slli_epi32(_mm256_andnot_si256(_mm256_sub_epi32(j, _mm256_set1_epi32(2)), four), 29));
	__m256 swap = _mm256_castsi256_ps(
		_mm256_cmpeq_epi32(_mm256_and_si256(j, _mm256_set1_epi32(2)), _mm256_set1_epi32(2)));
	__m256 z = _mm256_mul_ps(x, x);
	__m256 pc = SET1(SD_RNG_COS_P0);
	pc = _mm256_fmadd_ps(pc, z, SET1(SD_RNG_COS_P1));
	pc = _mm256_fmadd_ps(pc, z, SET1(SD_RNG_COS_P2));
	pc = _mm256_mul_ps(pc, z);
	pc = _mm256_fmsub_ps(pc, z, _mm256_mul_ps(z, SET1(0.5f)));
	pc = _mm256_add_ps(pc, SET1(1.0f));
	__m256 ps = SET1(SD_RNG_SIN_P0);
	ps = _mm256_fmadd_ps(ps, z, SET1(SD_RNG_SIN_P1));
	ps = _mm256_fmadd_ps(ps, z, SET1(SD_RNG_SIN_P2));
	ps = _mm256_mul_ps(ps, z);
	ps = _mm256_fmadd_ps(ps, x, x);
	*s = _mm256_xor_ps(_mm256_blendv_ps(ps, pc, swap), sign_s);
	*c = _mm256_xor_ps(_mm256_blendv_ps(pc, ps, swap), sign_c);
}

void sd_rng_box_muller16_avx2(float *d, int64_t nblocks)
{
	const __m256 one = SET1(1.0f), minus_two = SET1(-2.0f), two_pi = SET1(SD_RNG_TWO_PI);
	const __m256 zero = _mm256_setzero_ps(); /* + 0: torch's * std + mean turns -0 into +0 */
	for (int64_t b = 0; b < nblocks; b++, d += 16) {
		__m256 u1 = _mm256_sub_ps(one, _mm256_loadu_ps(d));
		__m256 u2 = _mm256_loadu_ps(d + 8);
		__m256 r = _mm256_sqrt_ps(_mm256_mul_ps(minus_two, log8(u1)));
		__m256 s, c;
		sincos8(_mm256_mul_ps(two_pi, u2), &s, &c);
		_mm256_storeu_ps(d, _mm256_add_ps(_mm256_mul_ps(r, c), zero));
		_mm256_storeu_ps(d + 8, _mm256_add_ps(_mm256_mul_ps(r, s), zero));
	}
}
