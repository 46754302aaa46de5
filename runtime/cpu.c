#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "cpu.h"

static sd_cpu features;
static char description[128];
static pthread_once_t detected = PTHREAD_ONCE_INIT;

static void detect(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	features.avx2 = __builtin_cpu_supports("avx2");
	features.fma = __builtin_cpu_supports("fma");
	/* GCC 12 has no "f16c" name for __builtin_cpu_supports; every AVX2 CPU has F16C. */
	features.f16c = features.avx2;
	features.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
	features.avx512_bf16 = features.avx512 && __builtin_cpu_supports("avx512bf16");
	features.avx512_vnni = features.avx512 && __builtin_cpu_supports("avx512vnni");
#endif
	/* SDLUA_CPU=generic|avx2 caps the ISA, to test the fallbacks on a newer machine. */

	const char *cap = getenv("SDLUA_CPU");
	if (cap && strcmp(cap, "generic") == 0)
		memset(&features, 0, sizeof features);
	else if (cap && strcmp(cap, "avx2") == 0)
		features.avx512 = features.avx512_bf16 = features.avx512_vnni = 0;
	description[0] = 0;
	if (features.avx2) strcat(description, "avx2 fma f16c ");
	if (features.avx512) strcat(description, "avx512 ");
	if (features.avx512_bf16) strcat(description, "avx512_bf16 ");
	if (features.avx512_vnni) strcat(description, "avx512_vnni ");
	size_t n = strlen(description);
	if (n) description[n - 1] = 0; else strcpy(description, "generic");
}

/* Safe to call from any thread, first time included. */
const sd_cpu *sd_cpu_features(void)
{
	pthread_once(&detected, detect);
	return &features;
}

const char *sd_cpu_describe(void)
{
	pthread_once(&detected, detect);
	return description;
}
