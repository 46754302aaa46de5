/* Minimal C test harness: CHECK records a failure without stopping the case; each case prints
 * "ok - name" or "not ok - name: first failure". main() returns non-zero if any case failed. */
#ifndef SD_CHECK_H
#define SD_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int check_failed_cases, check_case_failed;
static char check_first_failure[512];

#define CHECK(cond, ...)                                                                     \
	do {                                                                                 \
		if (!(cond) && !check_case_failed++) {                                       \
			int n_ = snprintf(check_first_failure, sizeof check_first_failure,   \
			                  "%s:%d: ", __FILE__, __LINE__);                     \
			snprintf(check_first_failure + n_, sizeof check_first_failure - n_, \
			         __VA_ARGS__);                                               \
		}                                                                            \
	} while (0)

#define RUN(name, ...)                                                                 \
	do {                                                                           \
		check_case_failed = 0;                                                 \
		__VA_ARGS__;                                                           \
		if (check_case_failed) {                                               \
			check_failed_cases++;                                          \
			printf("not ok - %s: %s\n", name, check_first_failure);        \
		} else {                                                               \
			printf("ok - %s\n", name);                                     \
		}                                                                      \
		fflush(stdout);                                                        \
	} while (0)

#define CHECK_DONE() return check_failed_cases ? 1 : 0

/* Deterministic pseudo-random floats in [-1, 1) for test inputs. */
static inline float check_rand(unsigned long long *state)
{
	*state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (float)((*state >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static inline void check_fill(float *p, long n, unsigned long long seed)
{
	for (long i = 0; i < n; i++) p[i] = check_rand(&seed);
}

/* max |a - b| over n floats against doubles */
static inline double check_maxdiff(const float *got, const double *want, long n)
{
	double m = 0;
	for (long i = 0; i < n; i++) {
		double d = fabs((double)got[i] - want[i]);
		if (!(d <= m)) m = d; /* NaN propagates as a failure */
	}
	return m;
}

#endif
