/* torch-compatible mt19937 and its uniform / normal conversions (see rng.h). Written from the
 * published mt19937 definition and torch's documented behaviour; checked against the goldens. */
#include <math.h>
#include <string.h>
#include "rng.h"
#include "sd_error.h"

#define MT_M 397
#define MT_MATRIX_A 0x9908b0dfU
#define MT_UPPER 0x80000000U
#define MT_LOWER 0x7fffffffU

void sd_rng_seed(sd_rng *g, uint64_t seed)
{
	g->seed = seed;
	g->mt[0] = (uint32_t)(seed & 0xffffffffU);
	for (uint32_t i = 1; i < SD_MT_N; i++)
		g->mt[i] = 1812433253U * (g->mt[i - 1] ^ (g->mt[i - 1] >> 30)) + i;
	g->left = 0;
	g->has_normal = 0;
	g->next_normal = 0;
}

static void mt_refill(sd_rng *g)
{
	uint32_t *s = g->mt;
	for (int i = 0; i < SD_MT_N; i++) {
		uint32_t y = (s[i] & MT_UPPER) | (s[(i + 1) % SD_MT_N] & MT_LOWER);
		s[i] = s[(i + MT_M) % SD_MT_N] ^ (y >> 1) ^ ((y & 1U) ? MT_MATRIX_A : 0U);
	}
	g->left = SD_MT_N;
}

uint32_t sd_rng_u32(sd_rng *g)
{
	if (g->left <= 0) mt_refill(g);
	uint32_t y = g->mt[SD_MT_N - g->left--];
	y ^= y >> 11;
	y ^= (y << 7) & 0x9d2c5680U;
	y ^= (y << 15) & 0xefc60000U;
	y ^= y >> 18;
	return y;
}

uint64_t sd_rng_u64(sd_rng *g)
{
	uint64_t hi = sd_rng_u32(g);
	uint64_t lo = sd_rng_u32(g);
	return hi << 32 | lo;
}

float sd_rng_uniform_f32(sd_rng *g)
{
	return (float)(sd_rng_u32(g) & 0xffffffU) * 0x1p-24f;
}

double sd_rng_uniform_f64(sd_rng *g)
{
	return (double)(sd_rng_u64(g) & ((1ULL << 53) - 1)) * 0x1p-53;
}

double sd_rng_normal_f64(sd_rng *g)
{
	if (g->has_normal) {
		g->has_normal = 0;
		return g->next_normal;
	}
	double u1 = sd_rng_uniform_f64(g);
	double u2 = sd_rng_uniform_f64(g);
	double r = sqrt(-2.0 * log1p(-u2));
	double th = 2.0 * M_PI * u1;
	g->next_normal = r * sin(th);
	g->has_normal = 1;
	return r * cos(th);
}

/* Box-Muller over one block of 16 uniforms, in float32 as torch's AVX2 kernel computes it. */
static void normal16(float *d)
{
	const float two_pi = (float)(2.0 * M_PI);
	for (int j = 0; j < 8; j++) {
		float u1 = 1.0f - d[j];
		float u2 = d[j + 8];
		float r = sqrtf(-2.0f * logf(u1));
		float th = two_pi * u2;
		d[j] = r * cosf(th);
		d[j + 8] = r * sinf(th);
	}
}

void sd_rng_randn_f32(sd_rng *g, float *out, int64_t n)
{
	if (n <= 0) return;
	if (n < 16) {
		for (int64_t i = 0; i < n; i++) out[i] = (float)sd_rng_normal_f64(g);
		return;
	}
	for (int64_t i = 0; i < n; i++) out[i] = sd_rng_uniform_f32(g);
	for (int64_t i = 0; i + 16 <= n; i += 16) normal16(out + i);
	if (n % 16 != 0) {
		float *d = out + n - 16;
		for (int i = 0; i < 16; i++) d[i] = sd_rng_uniform_f32(g);
		normal16(d);
	}
}

void sd_rng_rand_f32(sd_rng *g, float *out, int64_t n)
{
	for (int64_t i = 0; i < n; i++) out[i] = sd_rng_uniform_f32(g);
}

/* State layout, little-endian: seed u64, left i32, has_normal i32, next_normal f64 bits, mt. */
static void put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
	return v;
}
static uint64_t get_u64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
	return v;
}

void sd_rng_get_state(const sd_rng *g, unsigned char out[SD_RNG_STATE_BYTES])
{
	uint64_t nb;
	memcpy(&nb, &g->next_normal, 8);
	put_u64(out, g->seed);
	put_u32(out + 8, (uint32_t)g->left);
	put_u32(out + 12, (uint32_t)(g->has_normal != 0));
	put_u64(out + 16, nb);
	for (int i = 0; i < SD_MT_N; i++) put_u32(out + 24 + 4 * i, g->mt[i]);
}

int sd_rng_set_state(sd_rng *g, const unsigned char *in, unsigned long len)
{
	if (len != SD_RNG_STATE_BYTES)
		return sd_seterr("generator state must be %d bytes, got %lu", SD_RNG_STATE_BYTES, len);
	uint32_t left = get_u32(in + 8), has = get_u32(in + 12);
	if (left > SD_MT_N || has > 1) return sd_seterr("invalid generator state");
	uint64_t nb = get_u64(in + 16);
	g->seed = get_u64(in);
	g->left = (int)left;
	g->has_normal = (int)has;
	memcpy(&g->next_normal, &nb, 8);
	for (int i = 0; i < SD_MT_N; i++) g->mt[i] = get_u32(in + 24 + 4 * i);
	return 0;
}
