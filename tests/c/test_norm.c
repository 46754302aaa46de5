/* kernels/norm against naive double references: group norm (affine or not, fused SiLU, large
 * offsets, the SD size), layer norm, softmax over any dim with big logits and -inf. */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "cpu.h"
#include "norm.h"
#include "sd_error.h"


static void ref_group_norm(const float *x, double *y, int64_t N, int64_t C, int64_t HW, int64_t G,
                           const float *w, const float *b, double eps, int silu)
{
	int64_t cg = C / G, n = cg * HW;
	for (int64_t i = 0; i < N * G; i++) {
		const float *p = x + i * n;
		double m = 0, v = 0;
		for (int64_t k = 0; k < n; k++) m += p[k];
		m /= (double)n;
		for (int64_t k = 0; k < n; k++) v += (p[k] - m) * (p[k] - m);
		v /= (double)n;
		double rs = 1 / sqrt(v + eps);
		for (int64_t k = 0; k < n; k++) {
			int64_t c = (i % G) * cg + k / HW;
			double t = (p[k] - m) * rs * (w ? w[c] : 1) + (b ? b[c] : 0);
			y[i * n + k] = silu ? t / (1 + exp(-t)) : t;
		}
	}
}

/* max |got - want| / (1 + |want|) */
static double maxrel(const float *got, const double *want, int64_t n)
{
	double m = 0;
	for (int64_t i = 0; i < n; i++) {
		double d = fabs(got[i] - want[i]) / (1 + fabs(want[i]));
		if (!(d <= m)) m = d;
	}
	return m;
}

static void test_group_norm_small(void)
{
	static const int64_t cases[][4] = {{2, 6, 35, 3}, {1, 4, 1, 4}, {3, 32, 17, 32}, {2, 64, 9, 32}, {1, 5, 49, 1}};
	for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
		int64_t N = cases[t][0], C = cases[t][1], HW = cases[t][2], G = cases[t][3], n = N * C * HW;
		float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
		float *w = malloc(sizeof(float) * (size_t)C), *b = malloc(sizeof(float) * (size_t)C);
		double *want = malloc(sizeof(double) * (size_t)n);
		check_fill(x, n, 10 + t);
		check_fill(w, C, 20 + t);
		check_fill(b, C, 30 + t);
		for (int affine = 0; affine < 2; affine++)
			for (int silu = 0; silu < 2; silu++) {
				sd_group_norm_f32(x, y, N, C, HW, G, affine ? w : NULL, affine ? b : NULL, 1e-5f, silu);
				ref_group_norm(x, want, N, C, HW, G, affine ? w : NULL, affine ? b : NULL, 1e-5, silu);
				double e = maxrel(y, want, n);
				CHECK(e < 2e-6, "case %zu affine %d silu %d: err %g", t, affine, silu, e);
			}
		free(x); free(y); free(w); free(b); free(want);
	}
}

static void test_group_norm_offset(void)
{
	/* data far from zero compared with their spread: one-pass sums in float would fail */
	int64_t N = 1, C = 8, HW = 1001, G = 2, n = N * C * HW;
	float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
	double *want = malloc(sizeof(double) * (size_t)n);
	check_fill(x, n, 5);
	for (int64_t i = 0; i < n; i++) x[i] = 1000.0f + 0.01f * x[i];
	x[0] = -3000.0f; /* the shift value itself is an outlier */
	sd_group_norm_f32(x, y, N, C, HW, G, NULL, NULL, 1e-6f, 0);
	ref_group_norm(x, want, N, C, HW, G, NULL, NULL, 1e-6, 0);
	double e = maxrel(y, want, n);
	CHECK(e < 2e-5, "offset data: err %g", e);
	/* a constant group: var 0, output 0 (plus bias) */
	for (int64_t i = 0; i < n; i++) x[i] = 3.25f;
	sd_group_norm_f32(x, y, N, C, HW, G, NULL, NULL, 1e-5f, 0);
	CHECK(y[0] == 0 && y[n - 1] == 0, "constant input gives %g", y[0]);
	free(x); free(y); free(want);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_group_norm_sd(void)
{
	int64_t N = 2, C = 320, HW = 64 * 64, G = 32, n = N * C * HW;
	float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
	float *w = malloc(sizeof(float) * (size_t)C), *b = malloc(sizeof(float) * (size_t)C);
	double *want = malloc(sizeof(double) * (size_t)n);
	check_fill(x, n, 1);
	for (int64_t i = 0; i < n; i++) x[i] = 3 * x[i] + 0.5f;
	check_fill(w, C, 2);
	check_fill(b, C, 3);
	sd_group_norm_f32(x, y, N, C, HW, G, w, b, 1e-5f, 1);
	ref_group_norm(x, want, N, C, HW, G, w, b, 1e-5, 1);
	double e = maxrel(y, want, n);
	CHECK(e < 2e-6, "2x320x64x64: err %g", e);
	/* speed against a copy of the same bytes */
	double t0 = now();
	for (int r = 0; r < 10; r++) memcpy(y, x, sizeof(float) * (size_t)n);
	double tc = (now() - t0) / 10;
	t0 = now();
	for (int r = 0; r < 10; r++) sd_group_norm_f32(x, y, N, C, HW, G, w, b, 1e-5f, 0);
	double tg = (now() - t0) / 10;
	t0 = now();
	for (int r = 0; r < 10; r++) sd_group_norm_f32(x, y, N, C, HW, G, w, b, 1e-5f, 1);
	double ts = (now() - t0) / 10;
	printf("# group_norm 2x320x64x64: %.2f ms (memcpy %.2f ms), with silu %.2f ms\n", tg * 1e3, tc * 1e3, ts * 1e3);
	free(x); free(y); free(w); free(b); free(want);
}

static void test_group_norm_tensor(void)
{
	int64_t s[4] = {2, 6, 5, 7};
	sd_tensor x, r, w, bad;
	sd_tensor_new(&x, SD_F32, 4, s);
	check_fill(sd_tensor_data(&x), 420, 9);
	int64_t sw[1] = {6}, sb[1] = {5};
	sd_tensor_new(&w, SD_F32, 1, sw);
	check_fill(sd_tensor_data(&w), 6, 8);
	CHECK(sd_group_norm(&x, 3, &w, NULL, 1e-5f, 0, &r) == 0, "%s", sd_geterr());
	double *want = malloc(sizeof(double) * 420);
	ref_group_norm(sd_tensor_data(&x), want, 2, 6, 35, 3, sd_tensor_data(&w), NULL, 1e-5, 0);
	CHECK(maxrel(sd_tensor_data(&r), want, 420) < 2e-6, "tensor group_norm");
	sd_tensor_release(&r);
	/* a non-contiguous input: the transposed HW dims normalise to the transposed result */
	sd_tensor xt;
	sd_tensor_transpose(&x, &xt, 2, 3);
	CHECK(sd_group_norm(&xt, 3, &w, NULL, 1e-5f, 0, &r) == 0, "%s", sd_geterr());
	const float *pr = sd_tensor_data(&r);
	CHECK(fabs(pr[(1 * 6 + 4) * 35 + 2 * 5 + 3] - want[(1 * 6 + 4) * 35 + 3 * 7 + 2]) < 2e-6, "transposed input");
	sd_tensor_release(&r);
	sd_tensor_release(&xt);
	CHECK(sd_group_norm(&x, 4, NULL, NULL, 1e-5f, 0, &r) != 0 && strstr(sd_geterr(), "4 groups"), "groups error: %s", sd_geterr());
	sd_tensor_new(&bad, SD_F32, 1, sb);
	CHECK(sd_group_norm(&x, 3, &bad, NULL, 1e-5f, 0, &r) != 0 && strstr(sd_geterr(), "(5,)"), "weight error: %s", sd_geterr());
	sd_tensor_release(&bad);
	sd_tensor_release(&w);
	sd_tensor_release(&x);
	free(want);
}

static void test_layer_norm(void)
{
	static const int64_t dims[][2] = {{77, 768}, {5, 1}, {3, 37}, {4096, 320}};
	for (size_t t = 0; t < sizeof dims / sizeof dims[0]; t++) {
		int64_t R = dims[t][0], D = dims[t][1], n = R * D;
		float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
		float *w = malloc(sizeof(float) * (size_t)D), *b = malloc(sizeof(float) * (size_t)D);
		double *want = malloc(sizeof(double) * (size_t)n);
		check_fill(x, n, 40 + t);
		for (int64_t i = 0; i < n; i++) x[i] = 5 * x[i] + 2;
		check_fill(w, D, 50 + t);
		check_fill(b, D, 60 + t);
		for (int affine = 0; affine < 2; affine++) {
			sd_layer_norm_f32(x, y, R, D, affine ? w : NULL, affine ? b : NULL, 1e-5f);
			for (int64_t r = 0; r < R; r++) {
				double m = 0, v = 0;
				for (int64_t k = 0; k < D; k++) m += x[r * D + k];
				m /= (double)D;
				for (int64_t k = 0; k < D; k++) v += (x[r * D + k] - m) * (x[r * D + k] - m);
				v /= (double)D;
				for (int64_t k = 0; k < D; k++)
					want[r * D + k] = (x[r * D + k] - m) / sqrt(v + 1e-5) * (affine ? w[k] : 1) + (affine ? b[k] : 0);
			}
			double e = maxrel(y, want, n);
			CHECK(e < 2e-6, "(%lld, %lld) affine %d: err %g", (long long)R, (long long)D, affine, e);
		}
		free(x); free(y); free(w); free(b); free(want);
	}
}

static void ref_softmax(const float *x, double *y, int64_t outer, int64_t D, int64_t inner)
{
	for (int64_t o = 0; o < outer; o++)
		for (int64_t j = 0; j < inner; j++) {
			double m = -INFINITY, s = 0;
			for (int64_t d = 0; d < D; d++) m = fmax(m, x[(o * D + d) * inner + j]);
			for (int64_t d = 0; d < D; d++) s += exp(x[(o * D + d) * inner + j] - m);
			for (int64_t d = 0; d < D; d++) y[(o * D + d) * inner + j] = exp(x[(o * D + d) * inner + j] - m) / s;
		}
}

static void test_softmax(void)
{
	static const int64_t cases[][3] = {{3, 77, 1}, {2, 1, 5}, {4, 13, 9}, {1, 1000, 1}, {2, 7, 1500}, {8, 4096, 1}};
	for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
		int64_t O = cases[t][0], D = cases[t][1], I = cases[t][2], n = O * D * I;
		float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
		double *want = malloc(sizeof(double) * (size_t)n);
		check_fill(x, n, 70 + t);
		for (int64_t i = 0; i < n; i++) x[i] *= (t % 2) ? 1000.0f : 20.0f; /* big logits */
		x[0] = -INFINITY;
		sd_softmax_f32(x, y, O, D, I);
		ref_softmax(x, want, O, D, I);
		double e = 0;
		for (int64_t i = 0; i < n; i++) {
			double d = fabs(y[i] - want[i]) / (want[i] + 1e-30);
			if (want[i] < 1e-30) d = fabs(y[i] - want[i]) * 1e30;
			if (!(d <= e)) e = d;
		}
		CHECK(e < 2e-5 || (D == 1 && e < 1e-6), "case %zu: rel err %g", t, e);
		/* in place gives the same */
		memcpy(want, y, 0);
		float *z = malloc(sizeof(float) * (size_t)n);
		memcpy(z, x, sizeof(float) * (size_t)n);
		sd_softmax_f32(z, z, O, D, I);
		CHECK(memcmp(z, y, sizeof(float) * (size_t)n) == 0, "case %zu: in place differs", t);
		free(z); free(x); free(y); free(want);
	}
	/* a NaN poisons its row only */
	float x[6] = {1, NAN, 2, 3, 4, 5}, y[6];
	sd_softmax_f32(x, y, 2, 3, 1);
	CHECK(isnan(y[0]) && isnan(y[2]) && fabsf(y[3] + y[4] + y[5] - 1) < 1e-6f, "NaN row");
}

static void test_softmax_tensor(void)
{
	int64_t s[3] = {3, 4, 5};
	sd_tensor x, r, xt;
	sd_tensor_new(&x, SD_F32, 3, s);
	check_fill(sd_tensor_data(&x), 60, 3);
	double want[60];
	CHECK(sd_softmax(&x, 1, &r) == 0, "%s", sd_geterr());
	ref_softmax(sd_tensor_data(&x), want, 3, 4, 5);
	CHECK(maxrel(sd_tensor_data(&r), want, 60) < 1e-6, "dim 1");
	sd_tensor_release(&r);
	CHECK(sd_softmax(&x, -1, &r) == 0, "%s", sd_geterr());
	ref_softmax(sd_tensor_data(&x), want, 12, 5, 1);
	CHECK(maxrel(sd_tensor_data(&r), want, 60) < 1e-6, "dim -1");
	sd_tensor_release(&r);
	sd_tensor_transpose(&x, &xt, 0, 2); /* (5, 4, 3) */
	CHECK(sd_softmax(&xt, 2, &r) == 0, "%s", sd_geterr());
	/* r[k, j, i] = softmax over i of x[i, j, k] = reference over dim 0 of x */
	ref_softmax(sd_tensor_data(&x), want, 1, 3, 20);
	const float *pr = sd_tensor_data(&r);
	CHECK(fabs(pr[(4 * 4 + 2) * 3 + 1] - want[(1 * 4 + 2) * 5 + 4]) < 1e-6, "transposed");
	sd_tensor_release(&r);
	sd_tensor_release(&xt);
	CHECK(sd_softmax(&x, 3, &r) != 0, "dim out of range");
	sd_tensor_release(&x);
}

int main(void)
{
	RUN("norm: group_norm small shapes, affine and not, fused silu", test_group_norm_small());
	RUN("norm: group_norm with a large offset and a constant group", test_group_norm_offset());
	RUN("norm: group_norm 2x320x64x64", test_group_norm_sd());
	RUN("norm: group_norm tensor level, strided input, errors", test_group_norm_tensor());
	RUN("norm: layer_norm", test_layer_norm());
	RUN("norm: softmax over any dim, big logits, -inf, NaN", test_softmax());
	RUN("norm: softmax tensor level", test_softmax_tensor());
	sd_cpu *cpu = (sd_cpu *)sd_cpu_features();
	int had = cpu->avx512;
	cpu->avx512 = 0;
	RUN("norm (portable path): group_norm small shapes", test_group_norm_small());
	RUN("norm (portable path): group_norm offset", test_group_norm_offset());
	RUN("norm (portable path): layer_norm", test_layer_norm());
	RUN("norm (portable path): softmax", test_softmax());
	cpu->avx512 = had;
	CHECK_DONE();
}
