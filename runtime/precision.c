#include "precision.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_int current = SD_PRECISION_F32;
static pthread_once_t initialised = PTHREAD_ONCE_INIT;

static void init_from_env(void)
{
	const char *env = getenv("SDLUA_PRECISION");
	sd_precision p;
	if (env && sd_precision_parse(env, &p) == 0) atomic_store(&current, (int)p);
}

sd_precision sd_get_precision(void)
{
	pthread_once(&initialised, init_from_env);
	return (sd_precision)atomic_load_explicit(&current, memory_order_relaxed);
}

void sd_set_precision(sd_precision p)
{
	pthread_once(&initialised, init_from_env);
	atomic_store(&current, p == SD_PRECISION_BF16 ? SD_PRECISION_BF16 : SD_PRECISION_F32);
}

const char *sd_precision_name(sd_precision p)
{
	return p == SD_PRECISION_BF16 ? "bf16" : "f32";
}

int sd_precision_parse(const char *name, sd_precision *p)
{
	if (!name) return -1;
	if (!strcmp(name, "f32") || !strcmp(name, "fp32") || !strcmp(name, "float32")) {
		*p = SD_PRECISION_F32;
		return 0;
	}
	if (!strcmp(name, "bf16") || !strcmp(name, "bfloat16")) {
		*p = SD_PRECISION_BF16;
		return 0;
	}
	return -1;
}
