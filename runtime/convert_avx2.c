/* f16 <-> f32 with F16C (compiled with -mavx2 -mf16c; called only when the CPU has them). */
#include <immintrin.h>
#include "dtype.h"

void sd_f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n);
void sd_f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n);

void sd_f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
	for (; i < n; i++) dst[i] = sd_f16_to_f32(src[i]);
}

void sd_f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(dst + i),
		                 _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
	for (; i < n; i++) dst[i] = sd_f32_to_f16(src[i]);
}
