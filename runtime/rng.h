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

/* Bytes of an opaque, position-independent snapshot (sd_rng_get_state / sd_rng_set_state). */
#define SD_RNG_STATE_BYTES (8 + 4 + 4 + 8 + 4 * SD_MT_N)
void sd_rng_get_state(const sd_rng *g, unsigned char out[SD_RNG_STATE_BYTES]);
/* 0, or -1 (sd_seterr) when the bytes are not a valid state. */
int sd_rng_set_state(sd_rng *g, const unsigned char *in, unsigned long len);

#endif
