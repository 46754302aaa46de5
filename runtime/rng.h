/* The torch-compatible random number generator: the Mersenne Twister (mt19937) that torch's CPU
 * generator uses, with torch's conversions to uniforms and normals, so that a seed gives the
 * same numbers as torch.randn / torch.rand on the CPU. No Lua here (see lrng.c). */
#ifndef SD_RNG_H
#define SD_RNG_H

#include <stdint.h>

#define SD_MT_N 624
/* torch's default generator seed (c10::default_rng_seed_val) */
#define SD_RNG_DEFAULT_SEED 67280421310721ULL

typedef struct sd_rng {
	uint32_t mt[SD_MT_N];
	int left;              /* outputs left in the current block of mt[] */
	uint64_t seed;         /* as given: only the low 32 bits seed the engine, as in torch */
	int has_normal;        /* the serial normal path's cached second value (torch's */
	double next_normal;    /* next_double_normal_sample) */
} sd_rng;

/* Seeds with seed & 0xffffffff (torch's manual_seed); clears the cached normal. */
void sd_rng_seed(sd_rng *g, uint64_t seed);
uint32_t sd_rng_u32(sd_rng *g);
/* Two draws: first << 32 | second (torch's random64). */
uint64_t sd_rng_u64(sd_rng *g);

/* torch's uniform_real_distribution: float (u32 & 0xFFFFFF) * 2^-24, double
 * (u64 & (2^53-1)) * 2^-53; both in [0, 1). */
float sd_rng_uniform_f32(sd_rng *g);
double sd_rng_uniform_f64(sd_rng *g);
/* torch's normal_distribution<double>: Box-Muller in double with the second value cached. */
double sd_rng_normal_f64(sd_rng *g);

/* torch.randn(n) in float32: n >= 16 takes the vectorised path (blocks of 16, float32 math,
 * the last 16 recomputed from fresh uniforms when n % 16 != 0), n < 16 the serial double path. */
void sd_rng_randn_f32(sd_rng *g, float *out, int64_t n);
/* torch.rand(n) in float32. */
void sd_rng_rand_f32(sd_rng *g, float *out, int64_t n);

/* The >= 16 path's Box-Muller, in place over nblocks blocks of 16 uniforms in [0, 1): in each
 * block, for j < 8, r = sqrt(-2 log(1 - d[j])), th = float(2 pi) * d[j + 8], d[j] = r cos th,
 * d[j + 8] = r sin th, with log and sin/cos computed as torch's AVX2 kernel computes them (the
 * Cephes single-precision approximations, with its fused multiply-adds), so the results are
 * torch's bit for bit. sd_rng_box_muller16 picks the AVX2 version when the CPU has AVX2 + FMA;
 * the generic (portable C, fmaf) and AVX2 versions give identical bits. */
void sd_rng_box_muller16(float *d, int64_t nblocks);
void sd_rng_box_muller16_generic(float *d, int64_t nblocks);
/* Only when sd_cpu_features() reports avx2 and fma (rng_avx2.c). */
void sd_rng_box_muller16_avx2(float *d, int64_t nblocks);

/* Constants of those approximations (Cephes logf, sinf, cosf), shared by rng.c and rng_avx2.c.
 * log x = e ln2 + log m, m in [sqrt(1/2), sqrt(2)): ln2 = LN2_HI + LN2_LO (Cody-Waite), log m
 * from t = m - 1 as t - t^2/2 + t^3 P(t), P of degree 8 (P0 the leading coefficient). sin/cos:
 * j = (trunc(x 4/pi) + 1) & ~1, the reduced x - j pi/4 with pi/4 = -(DP1 + DP2 + DP3) (Cody-Waite,
 * the last step fused), then the sine or cosine polynomial and the signs by the octant bits. */
#define SD_RNG_SQRTHF 0.707106781186547524f
#define SD_RNG_LOG_P0 7.0376836292e-2f
#define SD_RNG_LOG_P1 -1.1514610310e-1f
#define SD_RNG_LOG_P2 1.1676998740e-1f
#define SD_RNG_LOG_P3 -1.2420140846e-1f
#define SD_RNG_LOG_P4 1.4249322787e-1f
#define SD_RNG_LOG_P5 -1.6668057665e-1f
#define SD_RNG_LOG_P6 2.0000714765e-1f
#define SD_RNG_LOG_P7 -2.4999993993e-1f
#define SD_RNG_LOG_P8 3.3333331174e-1f
#define SD_RNG_LN2_LO -2.12194440e-4f
#define SD_RNG_LN2_HI 0.693359375f
#define SD_RNG_FOPI 1.27323954473516f
#define SD_RNG_DP1 -0.78515625f
#define SD_RNG_DP2 -2.4187564849853515625e-4f
#define SD_RNG_DP3 -3.77489497744594108e-8f
#define SD_RNG_SIN_P0 -1.9515295891e-4f
#define SD_RNG_SIN_P1 8.3321608736e-3f
#define SD_RNG_SIN_P2 -1.6666654611e-1f
#define SD_RNG_COS_P0 2.443315711809948e-5f
#define SD_RNG_COS_P1 -1.388731625493765e-3f
#define SD_RNG_COS_P2 4.166664568298827e-2f
#define SD_RNG_TWO_PI ((float)6.283185307179586)

/* Bytes of an opaque, position-independent snapshot (sd_rng_get_state / sd_rng_set_state). */
#define SD_RNG_STATE_BYTES (8 + 4 + 4 + 8 + 4 * SD_MT_N)
void sd_rng_get_state(const sd_rng *g, unsigned char out[SD_RNG_STATE_BYTES]);
/* 0, or -1 (sd_seterr) when the bytes are not a valid state. */
int sd_rng_set_state(sd_rng *g, const unsigned char *in, unsigned long len);

#endif
