/* The torch-compatible generator: mt19937 reference values, torch's known draws, the serial
 * normal cache, the 16-block path and its tail, state round trips. The full comparison with
 * torch's numbers is the golden test tests/lua/test_rng.lua. */
#include <math.h>
#include <string.h>
#include "check.h"
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

static void block_path(void)
{
	/* n = 20: uniforms u[0..20) then 16 fresh; out[0..4) from the first block, out[4..20) recomputed */
	sd_rng g, h;
	float out[20], u[36];
	sd_rng_seed(&g, 99);
	sd_rng_seed(&h, 99);
	sd_rng_randn_f32(&g, out, 20);
	for (int i = 0; i < 36; i++) u[i] = sd_rng_uniform_f32(&h);
	const float two_pi = (float)(2.0 * M_PI);
	int ok = 1;
	for (int j = 0; j < 4; j++) { /* only out[0..4) of the first block survive */
		float rr = sqrtf(-2.0f * logf(1.0f - u[j]));
		ok &= out[j] == rr * cosf(two_pi * u[j + 8]);
	}
	for (int j = 0; j < 8; j++) {
		float rr = sqrtf(-2.0f * logf(1.0f - u[20 + j]));
		ok &= out[4 + j] == rr * cosf(two_pi * u[28 + j]);
		ok &= out[12 + j] == rr * sinf(two_pi * u[28 + j]);
	}
	CHECK(ok, "block path or tail recomputation mismatch");
	CHECK(sd_rng_u32(&g) == sd_rng_u32(&h), "engine position after randn(20)");
	/* statistics of a large draw */
	static float big[1 << 18];
	sd_rng_randn_f32(&g, big, 1 << 18);
	double s = 0, s2 = 0;
	for (int i = 0; i < 1 << 18; i++) { s += big[i]; s2 += (double)big[i] * big[i]; }
	double mean = s / (1 << 18), var = s2 / (1 << 18) - mean * mean;
	CHECK(fabs(mean) < 0.01 && fabs(var - 1) < 0.01, "mean %g var %g", mean, var);
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
	RUN("rng: state round trip", state_roundtrip());
	CHECK_DONE();
}
