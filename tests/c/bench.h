/* Timing for the benchmarks (bench_kernels, test_gemm_bf16 bench): a kernel and its reference
 * run alternately, so that on a shared machine both see the same conditions, and the best of
 * many runs filters out the time slices lost to other work. */
#ifndef SD_BENCH_H
#define SD_BENCH_H

#include <time.h>

typedef void (*bench_fn)(void *ctx);

static inline double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Best times of fa(ca) and fb(cb) (fb may be NULL), run alternately after a warm-up (page
 * faults, workspace growth, BLAS buffers) for about `seconds`: at least 3 and at most 500
 * rounds. */
static inline void bench_pair(bench_fn fa, void *ca, bench_fn fb, void *cb, double seconds, double *ta,
                              double *tb)
{
	fa(ca);
	if (fb) fb(cb);
	double total = 0;
	int reps = 0;
	*ta = *tb = 1e30;
	while ((total < seconds || reps < 3) && reps < 500) {
		double t0 = bench_now();
		fa(ca);
		double t1 = bench_now();
		if (fb) fb(cb);
		double t2 = bench_now();
		if (t1 - t0 < *ta) *ta = t1 - t0;
		if (fb && t2 - t1 < *tb) *tb = t2 - t1;
		total += t2 - t0;
		reps++;
	}
}

#endif
