/* The torch-compatible generator: mt19937 reference values, torch's known draws, the serial
 * normal cache, the 16-block path (bit for bit torch's, portable and AVX2 versions) and its tail,
 * state round trips. The full comparison with torch's numbers is the golden test
 * tests/lua/test_rng.lua. */
#include <math.h>
#include <string.h>
#include "check.h"
#include "cpu.h"
#include "rng.h"

static void mt_reference(void)
{
	sd_rng g;
	sd_rng_seed(&g, 5489); /* the canonical default seed of mt19937 */
	uint32_t first = sd_rng_u32(&g), last = first;
	for (int i = 1; i < 10000; i++) last = sd_rng_u32(&g);
	CHECK(first == 3499211612U, "first output %u", first);
	CHECK(last == 4123659995U, "10000th output %u", last); /* the C++ standard's check value */
	sd_rng_seed(&g, 0);
	uint32_t z = sd_rng_u32(&g);
	CHECK(z == 2357136044U, "seed 0 first output %u", z);
}

static void seed_aliasing(void)
{
	sd_rng a, b;
	sd_rng_seed(&a, 4294967301ULL);
	sd_rng_seed(&b, 5);
	int same = 1;
	for (int i = 0; i < 2000; i++) same &= sd_rng_u32(&a) == sd_rng_u32(&b);
	CHECK(same, "seed 2^32+5 differs from seed 5");
	CHECK(a.seed == 4294967301ULL, "initial seed not kept");
	sd_rng_seed(&a, (uint64_t)-1); /* a negative Lua seed: low 32 bits all ones */
	sd_rng_seed(&b, 0xffffffffULL);
	CHECK(sd_rng_u32(&a) == sd_rng_u32(&b), "seed -1 differs from 0xffffffff");
}

static void torch_known(void)
{
	/* torch.manual_seed(0); torch.rand(3) and torch.randn(3) */
	sd_rng g;
	float r[3], n[3];
	sd_rng_seed(&g, 0);
	sd_rng_rand_f32(&g, r, 3);
	CHECK(fabsf(r[0] - 0.4962566f) < 1e-7f && fabsf(r[1] - 0.7682218f) < 1e-7f && fabsf(r[2] - 0.0884774f) < 1e-7f,
	      "rand %.7f %.7f %.7f", r[0], r[1], r[2]);
	sd_rng_seed(&g, 0);
	sd_rng_randn_f32(&g, n, 3);
	CHECK(fabsf(n[0] - 1.5409961f) < 1e-6f && fabsf(n[1] + 0.2934289f) < 1e-6f && fabsf(n[2] + 2.1787894f) < 1e-6f,
	      "randn %.7f %.7f %.7f", n[0], n[1], n[2]);
	/* uniforms are multiples of 2^-24 in [0, 1) */
	int ok = 1;
	for (int i = 0; i < 100000; i++) {
		float u = sd_rng_uniform_f32(&g);
		ok &= u >= 0 && u < 1 && u * 16777216.0f == floorf(u * 16777216.0f);
	}
	CHECK(ok, "uniform out of range or off the 2^-24 grid");
}

static void serial_cache(void)
{
	sd_rng g;
	float a[6], b[6], c[16], d[16], e1, e2[4];
	/* randn(3) twice == randn(6): the second call starts with the cached r*sin */
	sd_rng_seed(&g, 7);
	sd_rng_randn_f32(&g, a, 3);
	sd_rng_randn_f32(&g, a + 3, 3);
	sd_rng_seed(&g, 7);
	sd_rng_randn_f32(&g, b, 6);
	CHECK(memcmp(a, b, sizeof a) == 0, "randn(3), randn(3) != randn(6)");
	/* manual_seed clears the cache */
	sd_rng_seed(&g, 7);
	sd_rng_randn_f32(&g, a, 3);
	sd_rng_seed(&g, 7);
	sd_rng_randn_f32(&g, b, 3);
	CHECK(memcmp(a, b, 3 * sizeof *a) == 0, "manual_seed did not clear the cached normal");
	/* a >= 16 call ignores (and keeps) the cache: it only consumes engine draws */
	sd_rng_seed(&g, 7);
	sd_rng_randn_f32(&g, a, 3); /* 2 pairs = 8 u32, caches one value */
	sd_rng_randn_f32(&g, c, 16);
	sd_rng_randn_f32(&g, &e1, 1); /* the cached value */
	sd_rng_seed(&g, 7);
	for (int i = 0; i < 8; i++) sd_rng_u32(&g);
	sd_rng_randn_f32(&g, d, 16);
	CHECK(memcmp(c, d, sizeof c) == 0, "randn(16) after randn(3) used the cache");
	sd_rng_seed(&g, 7);
	sd_rng_randn_f32(&g, e2, 4);
	CHECK(e1 == e2[3], "cache lost across a randn(16) call: %g vs %g", e1, e2[3]);
	/* the serial path is Box-Muller in double over 53-bit uniforms */
	sd_rng h;
	sd_rng_seed(&g, 123);
	sd_rng_seed(&h, 123);
	sd_rng_randn_f32(&g, a, 2);
	double u1 = (double)(sd_rng_u64(&h) & ((1ULL << 53) - 1)) * 0x1p-53;
	double u2 = (double)(sd_rng_u64(&h) & ((1ULL << 53) - 1)) * 0x1p-53;
	double r = sqrt(-2.0 * log1p(-u2)), th = 2.0 * M_PI * u1;
	CHECK(a[0] == (float)(r * cos(th)) && a[1] == (float)(r * sin(th)), "serial Box-Muller mismatch");
}

/* FNV-1a over the bytes of n floats */
static uint64_t fnv(const float *p, int64_t n)
{
	const unsigned char *b = (const unsigned char *)p;
	uint64_t h = 0xcbf29ce484222325ULL;
	for (int64_t i = 0; i < 4 * n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
	return h;
}

static void block_path(void)
{
	/* n = 20: uniforms u[0..20) then 16 fresh; out[0..4) from the first block, out[4..20) recomputed */
	sd_rng g, h;
	float out[20], u[36];
	sd_rng_seed(&g, 99);
	sd_rng_seed(&h, 99);
	sd_rng_randn_f32(&g, out, 20);
	for (int i = 0; i < 36; i++) u[i] = sd_rng_uniform_f32(&h);
	float b1[16], b2[16];
	memcpy(b1, u, sizeof b1);
	memcpy(b2, u + 20, sizeof b2);
	sd_rng_box_muller16_generic(b1, 1);
	sd_rng_box_muller16_generic(b2, 1);
	CHECK(memcmp(out, b1, 4 * sizeof *out) == 0, "out[0..4) is not the first block's");
	CHECK(memcmp(out + 4, b2, sizeof b2) == 0, "tail not recomputed from 16 fresh uniforms");
	CHECK(sd_rng_u32(&g) == sd_rng_u32(&h), "engine position after randn(20)");
	/* Box-Muller within a few float32 ulps of the same formula in double */
	double worst = 0;
	for (int j = 0; j < 8; j++) {
		double r = sqrt(-2.0 * log(1.0 - (double)u[20 + j])), th = (double)(float)(2.0 * M_PI) * u[28 + j];
		worst = fmax(worst, fabs(out[4 + j] - r * cos(th)));
		worst = fmax(worst, fabs(out[12 + j] - r * sin(th)));
	}
	CHECK(worst < 1e-6, "block path off the double formula by %g", worst);
	/* statistics of a large draw */
	static float big[1 << 18];
	sd_rng_randn_f32(&g, big, 1 << 18);
	double s = 0, s2 = 0;
	for (int i = 0; i < 1 << 18; i++) { s += big[i]; s2 += (double)big[i] * big[i]; }
	double mean = s / (1 << 18), var = s2 / (1 << 18) - mean * mean;
	CHECK(fabs(mean) < 0.01 && fabs(var - 1) < 0.01, "mean %g var %g", mean, var);
}

/* torch.randn bit for bit (hashes of reference randn.safetensors tensors, and their first values),
 * by the dispatching path, the portable one and, when the CPU has it, the AVX2 one. */
static void torch_bits(void)
{
	static const struct { uint64_t seed; int64_t n; uint64_t hash; uint32_t first[4]; } ref[] = {
		{42, 4 * 64 * 64, 0xa6f589a085841b88ULL, {0x3ff6a529, 0x3fbe5f53, 0x3f669567, 0xc006c0db}},
		{0, 4 * 96 * 64, 0xa61b4857089dae5bULL, {0xbf901b85, 0xbf93808a, 0xbe804bd6, 0xbede255d}},
		{1234567, 2 * 4 * 16 * 16, 0xddad597696efcaa4ULL, {0xbfbb238b, 0xbe909631, 0x401d2cdd, 0x3fce32c3}},
	};
	static float a[4 * 96 * 64], b[4 * 96 * 64];
	const sd_cpu *cpu = sd_cpu_features();
	for (size_t t = 0; t < sizeof ref / sizeof ref[0]; t++) {
		sd_rng g;
		int64_t n = ref[t].n;
		sd_rng_seed(&g, ref[t].seed);
		sd_rng_randn_f32(&g, a, n);
		uint32_t first[4];
		memcpy(first, a, sizeof first);
		CHECK(memcmp(first, ref[t].first, sizeof first) == 0, "seed %llu: first values %08x %08x %08x %08x",
		      (unsigned long long)ref[t].seed, first[0], first[1], first[2], first[3]);
		CHECK(fnv(a, n) == ref[t].hash, "seed %llu n %lld: not torch's bits (hash %016llx)",
		      (unsigned long long)ref[t].seed, (long long)n, (unsigned long long)fnv(a, n));
		sd_rng_seed(&g, ref[t].seed);
		sd_rng_rand_f32(&g, b, n);
		sd_rng_box_muller16_generic(b, n / 16);
		CHECK(fnv(b, n) == ref[t].hash, "seed %llu: generic path not torch's bits", (unsigned long long)ref[t].seed);
		if (cpu->avx2 && cpu->fma) {
			sd_rng_seed(&g, ref[t].seed);
			sd_rng_rand_f32(&g, b, n);
			sd_rng_box_muller16_avx2(b, n / 16);
			CHECK(fnv(b, n) == ref[t].hash, "seed %llu: avx2 path not torch's bits", (unsigned long long)ref[t].seed);
		}
	}
}

/* Every possible uniform as u[j] (the radius) and as u[j + 8] (the angle): the portable and
 * AVX2 versions agree bit for bit, stay close to the double formula, and u = 0 gives +0. */
static void generic_matches_avx2(void)
{
	const sd_cpu *cpu = sd_cpu_features();
	enum { CHUNK = 1 << 16 }; /* uniforms per chunk, as 8 per block */
	static float a[2 * CHUNK], b[2 * CHUNK];
	int64_t ndiff = 0;
	double worst = 0;
	for (uint32_t base = 0; base < (1U << 24); base += CHUNK) {
		for (uint32_t k = 0; k < CHUNK; k++) {
			uint32_t i = base + k, blk = k / 8, j = k % 8;
			a[16 * blk + j] = (float)i * 0x1p-24f;
			a[16 * blk + 8 + j] = (float)((i * 2654435761U) & 0xffffffU) * 0x1p-24f; /* a bijection */
		}
		memcpy(b, a, sizeof a);
		sd_rng_box_muller16_generic(a, CHUNK / 8);
		if (cpu->avx2 && cpu->fma) {
			sd_rng_box_muller16_avx2(b, CHUNK / 8);
			for (int k = 0; k < 2 * CHUNK; k++) ndiff += memcmp(&a[k], &b[k], sizeof *a) != 0;
		}
		if (base % (1U << 20) == 0) { /* accuracy on a sample */
			for (uint32_t k = 0; k < CHUNK; k++) {
				uint32_t i = base + k, blk = k / 8, j = k % 8;
				double r = sqrt(-2.0 * log(1.0 - (double)((float)i * 0x1p-24f)));
				double th = (double)(float)(2.0 * M_PI) * (double)((float)((i * 2654435761U) & 0xffffffU) * 0x1p-24f);
				double ec = fabs(a[16 * blk + j] - r * cos(th)), es = fabs(a[16 * blk + 8 + j] - r * sin(th));
				worst = fmax(worst, fmax(ec, es) / fmax(r, 1.0));
			}
		}
		if (base == 0) {
			CHECK(a[0] == 0 && !signbit(a[0]) && a[8] == 0 && !signbit(a[8]), "u = 0: %g %g", a[0], a[8]);
		}
	}
	CHECK(ndiff == 0, "%lld values differ between the generic and AVX2 paths", (long long)ndiff);
	CHECK(worst < 1e-6, "off the double formula by %g (relative to max(r, 1))", worst);
	if (!(cpu->avx2 && cpu->fma)) printf("# no AVX2 + FMA here: generic path only\n");
}

static void state_roundtrip(void)
{
	sd_rng g, h;
	unsigned char st[SD_RNG_STATE_BYTES];
	float a[5], b[5];
	sd_rng_seed(&g, 2024);
	sd_rng_randn_f32(&g, a, 3); /* leaves a cached normal */
	sd_rng_get_state(&g, st);
	sd_rng_seed(&h, 1);
	CHECK(sd_rng_set_state(&h, st, sizeof st) == 0, "set_state failed");
	sd_rng_randn_f32(&g, a, 5);
	sd_rng_randn_f32(&h, b, 5);
	CHECK(memcmp(a, b, sizeof a) == 0, "state round trip differs");
	CHECK(h.seed == 2024, "seed not restored");
	CHECK(sd_rng_set_state(&h, st, 10) != 0, "short state accepted");
	st[8] = 0xff; st[9] = 0xff; /* left > 624 */
	CHECK(sd_rng_set_state(&h, st, sizeof st) != 0, "bad state accepted");
}

int main(void)
{
	RUN("rng: mt19937 reference outputs", mt_reference());
	RUN("rng: seeds use their low 32 bits", seed_aliasing());
	RUN("rng: torch.rand / torch.randn known values", torch_known());
	RUN("rng: serial normal cache", serial_cache());
	RUN("rng: 16-block path and tail", block_path());
	RUN("rng: 16-block path is torch's bit for bit (dispatch, generic, avx2)", torch_bits());
	RUN("rng: generic and AVX2 Box-Muller agree on every uniform", generic_matches_avx2());
	RUN("rng: state round trip", state_roundtrip());
	CHECK_DONE();
}
