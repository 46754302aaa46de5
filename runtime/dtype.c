#include <math.h>
#include <string.h>
#include "cpu.h"
#include "dtype.h"

static const struct { const char *name; size_t size; } dtypes[SD_NDTYPES] = {
	[SD_F32] = {"f32", 4}, [SD_F16] = {"f16", 2}, [SD_BF16] = {"bf16", 2},
	[SD_I32] = {"i32", 4}, [SD_I64] = {"i64", 8}, [SD_U8] = {"u8", 1},
};

size_t sd_dtype_size(sd_dtype dt) { return dtypes[dt].size; }
const char *sd_dtype_name(sd_dtype dt) { return dtypes[dt].name; }
int sd_dtype_is_float(sd_dtype dt) { return dt == SD_F32 || dt == SD_F16 || dt == SD_BF16; }

int sd_dtype_from_name(const char *name, sd_dtype *dt)
{
	for (int i = 0; i < SD_NDTYPES; i++)
		if (strcmp(name, dtypes[i].name) == 0) {
			*dt = (sd_dtype)i;
			return 0;
		}
	return -1;
}

static uint32_t float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bits_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float sd_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	if (exp == 0x1f) /* inf or NaN */
		return bits_float(sign | 0x7f800000 | (man << 13));
	if (exp == 0) { /* zero or subnormal: man * 2^-24 */
		float f = (float)man * 0x1p-24f;
		return sign ? -f : f;
	}
	return bits_float(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t sd_f32_to_f16(float f)
{
	uint32_t u = float_bits(f), sign = (u >> 16) & 0x8000, absu = u & 0x7fffffff;
	if (absu > 0x7f800000) /* NaN: keep it quiet */
		return (uint16_t)(sign | 0x7e00 | ((absu >> 13) & 0x3ff));
	if (absu >= 0x477ff000) /* rounds to >= 65520: inf */
		return (uint16_t)(sign | 0x7c00);
	if (absu < 0x38800000) { /* below 2^-14: subnormal half; let the FPU round man * 2^24 */
		float a = bits_float(absu) * 0x1p24f;
		return (uint16_t)(sign | (uint16_t)lrintf(a));
	}
	/* normal: rebias the exponent, round the 13 dropped bits to nearest even */
	uint32_t r = absu + 0xfff + ((absu >> 13) & 1);
	return (uint16_t)(sign | ((r - 0x38000000) >> 13));
}

float sd_bf16_to_f32(uint16_t b) { return bits_float((uint32_t)b << 16); }

uint16_t sd_f32_to_bf16(float f)
{
	uint32_t u = float_bits(f);
	if ((u & 0x7fffffff) > 0x7f800000)
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fff + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

/* ISA-specific bulk versions (runtime/convert_avx2.c, runtime/convert_avx512.c). */
void sd_f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n);
void sd_f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n);
void sd_bf16_to_f32_avx512(const uint16_t *src, float *dst, size_t n);
void sd_f32_to_bf16_avx512(const float *src, uint16_t *dst, size_t n);

void sd_f16_to_f32_n(const uint16_t *src, float *dst, size_t n)
{
	if (sd_cpu_features()->f16c) { sd_f16_to_f32_avx2(src, dst, n); return; }
	for (size_t i = 0; i < n; i++) dst[i] = sd_f16_to_f32(src[i]);
}

void sd_f32_to_f16_n(const float *src, uint16_t *dst, size_t n)
{
	if (sd_cpu_features()->f16c) { sd_f32_to_f16_avx2(src, dst, n); return; }
	for (size_t i = 0; i < n; i++) dst[i] = sd_f32_to_f16(src[i]);
}

void sd_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n)
{
	if (sd_cpu_features()->avx512) { sd_bf16_to_f32_avx512(src, dst, n); return; }
	for (size_t i = 0; i < n; i++) dst[i] = sd_bf16_to_f32(src[i]);
}

void sd_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n)
{
	if (sd_cpu_features()->avx512) { sd_f32_to_bf16_avx512(src, dst, n); return; }
	for (size_t i = 0; i < n; i++) dst[i] = sd_f32_to_bf16(src[i]);
}

/* Float to integer: truncate toward zero, saturate, NaN -> 0. */
static double saturate(double v, double lo, double hi)
{
	if (isnan(v)) return 0;
	v = trunc(v);
	return v < lo ? lo : v > hi ? hi : v;
}

static double load(const void *p, sd_dtype t, size_t i)
{
	switch (t) {
	case SD_F32: return ((const float *)p)[i];
	case SD_F16: return sd_f16_to_f32(((const uint16_t *)p)[i]);
	case SD_BF16: return sd_bf16_to_f32(((const uint16_t *)p)[i]);
	case SD_I32: return ((const int32_t *)p)[i];
	case SD_I64: return (double)((const int64_t *)p)[i];
	case SD_U8: return ((const uint8_t *)p)[i];
	default: return 0;
	}
}

static void store(void *p, sd_dtype t, size_t i, double v)
{
	switch (t) {
	case SD_F32: ((float *)p)[i] = (float)v; break;
	case SD_F16: ((uint16_t *)p)[i] = sd_f32_to_f16((float)v); break;
	case SD_BF16: ((uint16_t *)p)[i] = sd_f32_to_bf16((float)v); break;
	case SD_I32: ((int32_t *)p)[i] = (int32_t)saturate(v, -2147483648.0, 2147483647.0); break;
	case SD_I64: ((int64_t *)p)[i] = (int64_t)saturate(v, -9223372036854775808.0, 9223372036854774784.0); break;
	case SD_U8: ((uint8_t *)p)[i] = (uint8_t)saturate(v, 0, 255); break;
	default: break;
	}
}

void sd_convert(const void *src, sd_dtype st, void *dst, sd_dtype dt, size_t n)
{
	if (st == dt) { memcpy(dst, src, n * sd_dtype_size(st)); return; }
	if (st == SD_F16 && dt == SD_F32) { sd_f16_to_f32_n(src, dst, n); return; }
	if (st == SD_F32 && dt == SD_F16) { sd_f32_to_f16_n(src, dst, n); return; }
	if (st == SD_BF16 && dt == SD_F32) { sd_bf16_to_f32_n(src, dst, n); return; }
	if (st == SD_F32 && dt == SD_BF16) { sd_f32_to_bf16_n(src, dst, n); return; }
	if (st == SD_I64 && dt == SD_I32) { /* exact integer path: doubles lose bits above 2^53 */
		const int64_t *s = src;
		for (size_t i = 0; i < n; i++)
			((int32_t *)dst)[i] = s[i] < INT32_MIN ? INT32_MIN : s[i] > INT32_MAX ? INT32_MAX : (int32_t)s[i];
		return;
	}
	if (st == SD_I32 && dt == SD_I64) {
		for (size_t i = 0; i < n; i++) ((int64_t *)dst)[i] = ((const int32_t *)src)[i];
		return;
	}
	for (size_t i = 0; i < n; i++) store(dst, dt, i, load(src, st, i));
}
