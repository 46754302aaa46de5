/* bf16 <-> f32 with AVX-512 (compiled with -mavx512*; called only when the CPU has them). */
#include <immintrin.h>
#include "cpu.h"
#include "dtype.h"

void sd_bf16_to_f32_avx512(const uint16_t *src, float *dst, size_t n);
void sd_f32_to_bf16_avx512(const float *src, uint16_t *dst, size_t n);

void sd_bf16_to_f32_avx512(const uint16_t *src, float *dst, size_t n)
{
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i)));
		_mm512_storeu_si512(dst + i, _mm512_slli_epi32(w, 16));
	}
	for (; i < n; i++) dst[i] = sd_bf16_to_f32(src[i]);
}

/* Round to nearest even in integer arithmetic; NaN becomes a quiet NaN (as the scalar path). */
void sd_f32_to_bf16_avx512(const float *src, uint16_t *dst, size_t n)
{
	size_t i = 0;
	const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
	const __m512i absmask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
	for (; i + 16 <= n; i += 16) {
		__m512i u = _mm512_loadu_si512(src + i);
		__m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
		__m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, lsb)), 16);
		__mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, absmask), inf);
		__m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
		r = _mm512_mask_mov_epi32(r, nan, q);
		_mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(r));
	}
	for (; i < n; i++) dst[i] = sd_f32_to_bf16(src[i]);
}
