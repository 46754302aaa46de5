/* torch-compatible mt19937 and its uniform / normal conversions (see rng.h). Written from the
 * published mt19937 definition, torch's documented behaviour and the published Cephes single-
 * precision log / sin / cos approximations; checked bit for bit against the goldens. */
#include <math.h>
#include <string.h>
#include "cpu.h"
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

/* The >= 16 path, bit for bit as torch's AVX2 kernel computes it (see rng.h). Every step is an
 * IEEE single operation; the fused multiply-adds are explicit fmaf calls (exact everywhere). The
 * products left unfused are either exact (e * LN2_HI, j * DP1, j * DP2, z * 0.5) or feed no
 * addition, so a compiler contracting a * b + c cannot change a bit. Not for -ffast-math. */

/* log x for the x = 1 - u in [2^-24, 1] of Box-Muller (positive normal floats). */
static float cephes_logf(float x)
{
	uint32_t b;
	memcpy(&b, &x, sizeof b);
	float e = (float)((int32_t)(b >> 23) - 126); /* x = m 2^e, m in [0.5, 1) */
	b = (b & 0x807fffffU) | 0x3f000000U;
	float m;
	memcpy(&m, &b, sizeof m);
	if (m < SD_RNG_SQRTHF) { /* m in [sqrt(1/2), sqrt(2)): t = 2m - 1, exact */
		e = e - 1.0f;
		m = (m - 1.0f) + m;
	} else {
		m = m - 1.0f;
	}
	float z = m * m;
	float p = SD_RNG_LOG_P0;
	p = fmaf(p, m, SD_RNG_LOG_P1);
	p = fmaf(p, m, SD_RNG_LOG_P2);
	p = fmaf(p, m, SD_RNG_LOG_P3);
	p = fmaf(p, m, SD_RNG_LOG_P4);
	p = fmaf(p, m, SD_RNG_LOG_P5);
	p = fmaf(p, m, SD_RNG_LOG_P6);
	p = fmaf(p, m, SD_RNG_LOG_P7);
	p = fmaf(p, m, SD_RNG_LOG_P8);
	p = p * m;
	float lo = e * SD_RNG_LN2_LO;
	float y = fmaf(p, z, lo);   /* t^3 P(t) + e LN2_LO */
	y = y - z * 0.5f;
	float r = m + y;
	return r + e * SD_RNG_LN2_HI;
}

/* sin and cos of x in [0, 2 pi) (any finite x of moderate size). */
static void cephes_sincosf(float x, float *s, float *c)
{
	uint32_t sign_s = 0;
	if (x < 0.0f) {
		x = -x;
		sign_s = 0x80000000U;
	}
	int32_t j = (int32_t)(x * SD_RNG_FOPI);
	j = (j + 1) & ~1;
	float y = (float)j;
	x = x + y * SD_RNG_DP1;
	x = x + y * SD_RNG_DP2;
	x = fmaf(y, SD_RNG_DP3, x);
	sign_s ^= (uint32_t)(j & 4) << 29;
	uint32_t sign_c = (uint32_t)(~(j - 2) & 4) << 29;
	float z = x * x;
	float pc = SD_RNG_COS_P0;
	pc = fmaf(pc, z, SD_RNG_COS_P1);
	pc = fmaf(pc, z, SD_RNG_COS_P2);
	pc = pc * z;
	pc = fmaf(pc, z, -(z * 0.5f));
	pc = pc + 1.0f;             /* cos x, |x| <= pi/4 */
	float ps = SD_RNG_SIN_P0;
	ps = fmaf(ps, z, SD_RNG_SIN_P1);
	ps = fmaf(ps, z, SD_RNG_SIN_P2);
	ps = ps * z;
	ps = fmaf(ps, x, x);        /* sin x, |x| <= pi/4 */
	float sv = (j & 2) ? pc : ps, cv = (j & 2) ? ps : pc;
	uint32_t bs, bc;
	memcpy(&bs, &sv, sizeof bs);
	memcpy(&bc, &cv, sizeof bc);
	bs ^= sign_s;
	bc ^= sign_c;
	memcpy(s, &bs, sizeof bs);
	memcpy(c, &bc, sizeof bc);
}

void sd_rng_box_muller16_generic(float *d, int64_t nblocks)
{
	for (int64_t b = 0; b < nblocks; b++, d += 16) {
		for (int j = 0; j < 8; j++) {
			float r = sqrtf(-2.0f * cephes_logf(1.0f - d[j]));
			float s, c;
			cephes_sincosf(SD_RNG_TWO_PI * d[j + 8], &s, &c);
			d[j] = r * c + 0.0f; /* torch: r cos th * std + mean, std 1, mean 0 (-0 -> +0) */
			d[j + 8] = r * s + 0.0f;
		}
	}
}

void sd_rng_box_muller16(float *d, int64_t nblocks)
{
	const sd_cpu *cpu = sd_cpu_features();
	if (cpu->avx2 && cpu->fma) sd_rng_box_muller16_avx2(d, nblocks);
	else sd_rng_box_muller16_generic(d, nblocks);
}

void sd_rng_randn_f32(sd_rng *g, float *out, int64_t n)
{
	if (n <= 0) return;
	if (n < 16) {
		for (int64_t i = 0; i < n; i++) out[i] = (float)sd_rng_normal_f64(g);
		return;
	}
	for (int64_t i = 0; i < n; i++) out[i] = sd_rng_uniform_f32(g);
	sd_rng_box_muller16(out, n / 16);
	if (n % 16 != 0) {
		float *d = out + n - 16;
		for (int i = 0; i < 16; i++) d[i] = sd_rng_uniform_f32(g);
		sd_rng_box_muller16(d, 1);
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
