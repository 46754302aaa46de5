/* kernels/elementwise, activation and index against naive double references: broadcasting,
 * odd sizes, size-1 dims, non-contiguous views, scalars, in place, activations' accuracy,
 * geglu, cat/stack/embedding. */
#include <stdint.h>
#include <string.h>

#include "activation.h"
#include "check.h"
#include "cpu.h"
#include "elementwise.h"
#include "index.h"
#include "sd_error.h"

static unsigned long long rng = 12345;

static int64_t rnd(int64_t n) { return (int64_t)((check_rand(&rng) + 1.0f) * 0.5f * (float)n) % n; }

static sd_tensor randt(int nd, const int64_t *shape, float amp)
{
	sd_tensor t;
	if (sd_tensor_new(&t, SD_F32, nd, shape) != 0) abort();
	float *p = sd_tensor_data(&t);
	int64_t n = sd_tensor_numel(&t);
	for (int64_t i = 0; i < n; i++) p[i] = amp * check_rand(&rng);
	return t;
}

/* element at a multi-index (broadcast: indices beyond a size-1 dim read index 0) */
static float at(const sd_tensor *t, int nd, const int64_t *idx)
{
	const float *p = (const float *)t->storage->data + t->offset;
	int lead = nd - t->ndim;
	int64_t off = 0;
	for (int i = 0; i < t->ndim; i++) {
		int64_t k = t->shape[i] == 1 ? 0 : idx[i + lead];
		off += k * t->stride[i];
	}
	return p[off];
}

static int next_index(int nd, const int64_t *shape, int64_t *idx)
{
	for (int i = nd - 1; i >= 0; i--) {
		if (++idx[i] < shape[i]) return 1;
		idx[i] = 0;
	}
	return 0;
}

static double ref_bin(sd_binop op, double a, double b)
{
	switch (op) {
	case SD_BIN_ADD: return a + b;
	case SD_BIN_SUB: return a - b;
	case SD_BIN_MUL: return a * b;
	case SD_BIN_DIV: return a / b;
	default: return pow(a, b);
	}
}

static double relerr(double got, double want)
{
	if (isnan(want)) return isnan(got) ? 0 : INFINITY;
	if (isinf(want)) return got == want ? 0 : INFINITY;
	return fabs(got - want) / (fabs(want) > 1e-30 ? fabs(want) : 1e-30);
}

/* compare a result tensor of shape (nd, shape) with f(idx) */
#define COMPARE_ALL(r, nd, shape, EXPECT, tol, what)                                              \
	do {                                                                                      \
		int64_t idx_[SD_MAX_DIMS] = {0};                                                  \
		int64_t n_ = sd_tensor_numel(&(r));                                               \
		double worst_ = 0;                                                                \
		if (n_ > 0) do {                                                                  \
				double want_ = (EXPECT), got_ = at(&(r), nd, idx_);               \
				double e_ = relerr(got_, want_);                                  \
				if (!(e_ <= worst_)) worst_ = e_;                                 \
			} while (next_index(nd, shape, idx_));                                    \
		CHECK(worst_ <= (tol), "%s: relative error %g", what, worst_);                   \
	} while (0)

static void random_pair(int *na, int64_t *sa, int *nb, int64_t *sb)
{
	int nd = 1 + (int)rnd(4);
	int64_t full[SD_MAX_DIMS];
	static const int64_t sizes[] = {1, 2, 3, 5, 7, 16, 17, 33};
	for (int i = 0; i < nd; i++) full[i] = sizes[rnd(8)];
	*na = nd;
	*nb = nd - (int)rnd(nd); /* b may have fewer leading dims */
	for (int i = 0; i < nd; i++) sa[i] = rnd(4) == 0 ? 1 : full[i];
	for (int i = 0; i < *nb; i++) sb[i] = rnd(4) == 0 ? 1 : full[i + nd - *nb];
}

static void test_binary_broadcast(void)
{
	for (int trial = 0; trial < 200; trial++) {
		int na, nb, nd;
		int64_t sa[SD_MAX_DIMS], sb[SD_MAX_DIMS], so[SD_MAX_DIMS];
		random_pair(&na, sa, &nb, sb);
		sd_tensor a = randt(na, sa, 3), b = randt(nb, sb, 3), r;
		sd_binop op = (sd_binop)(trial % SD_BINOP_COUNT);
		if (op == SD_BIN_POW) { /* positive bases */
			float *p = sd_tensor_data(&a);
			for (int64_t i = 0; i < sd_tensor_numel(&a); i++) p[i] = fabsf(p[i]) + 0.1f;
		}
		if (sd_broadcast_shape(na, sa, nb, sb, &nd, so) != 0) abort();
		CHECK(sd_binary(op, &a, &b, &r) == 0, "sd_binary: %s", sd_geterr());
		if (!check_case_failed) {
			CHECK(r.ndim == nd && !memcmp(r.shape, so, sizeof(int64_t) * (size_t)nd), "shape");
			COMPARE_ALL(r, nd, so, (float)ref_bin(op, at(&a, nd, idx_), at(&b, nd, idx_)), 3e-7, sd_binop_name(op));
			sd_tensor_release(&r);
		}
		sd_tensor_release(&a);
		sd_tensor_release(&b);
	}
}

static void test_noncontiguous(void)
{
	int64_t s[4] = {3, 5, 7, 2};
	sd_tensor base = randt(4, s, 2), a, b, r;
	int perm[4] = {2, 0, 3, 1};
	if (sd_tensor_permute(&base, &a, 4, perm) != 0) abort(); /* (7, 3, 2, 5) strided */
	int64_t sb[2] = {2, 5};
	sd_tensor bb = randt(2, sb, 2);
	if (sd_tensor_narrow(&bb, &b, 0, 1, 1) != 0) abort(); /* (1, 5), offset view */
	CHECK(sd_binary(SD_BIN_MUL, &a, &b, &r) == 0, "%s", sd_geterr());
	COMPARE_ALL(r, 4, a.shape, (float)((double)at(&a, 4, idx_) * at(&b, 4, idx_)), 0, "mul strided");
	sd_tensor_release(&r);
	/* unary on a strided view */
	CHECK(sd_activation(SD_ACT_EXP, &a, &r) == 0, "%s", sd_geterr());
	COMPARE_ALL(r, 4, a.shape, exp(at(&a, 4, idx_)), 3e-7, "exp strided");
	CHECK(sd_tensor_is_contiguous(&r), "result contiguous");
	sd_tensor_release(&r);
	/* in place on a strided view with a broadcast operand */
	sd_tensor before;
	sd_tensor_clone(&a, &before);
	CHECK(sd_binary_(SD_BIN_ADD, &a, &b) == 0, "%s", sd_geterr());
	COMPARE_ALL(a, 4, a.shape, (float)((double)at(&before, 4, idx_) + at(&b, 4, idx_)), 0, "add_ strided");
	sd_tensor_release(&before);
	sd_tensor_release(&a);
	sd_tensor_release(&b);
	sd_tensor_release(&bb);
	sd_tensor_release(&base);
}

static void test_scalar_and_inplace(void)
{
	int64_t s[3] = {4, 1, 37};
	sd_tensor x = randt(3, s, 5), r;
	CHECK(sd_binary_scalar(SD_BIN_SUB, &x, 2.5f, 1, &r) == 0, "rsub");
	COMPARE_ALL(r, 3, s, (float)(2.5 - at(&x, 3, idx_)), 0, "rsub");
	sd_tensor_release(&r);
	CHECK(sd_binary_scalar(SD_BIN_DIV, &x, 3.0f, 1, &r) == 0, "rdiv");
	COMPARE_ALL(r, 3, s, (float)(3.0 / at(&x, 3, idx_)), 3e-7, "rdiv");
	sd_tensor_release(&r);
	CHECK(sd_binary_scalar(SD_BIN_POW, &x, 2.0f, 0, &r) == 0, "pow 2");
	COMPARE_ALL(r, 3, s, (float)((double)at(&x, 3, idx_) * at(&x, 3, idx_)), 0, "pow 2");
	sd_tensor_release(&r);
	sd_tensor c;
	sd_tensor_clone(&x, &c);
	CHECK(sd_binary_scalar_(SD_BIN_MUL, &c, 0.5f) == 0, "mul_");
	COMPARE_ALL(c, 3, s, 0.5 * at(&x, 3, idx_), 0, "mul_ scalar");
	/* self op self */
	CHECK(sd_binary_(SD_BIN_ADD, &c, &c) == 0, "add_ self");
	COMPARE_ALL(c, 3, s, at(&x, 3, idx_), 0, "add_ self");
	/* result shape bigger than self: an error naming both shapes */
	int64_t sb[3] = {4, 3, 37};
	sd_tensor b = randt(3, sb, 1);
	CHECK(sd_binary_(SD_BIN_ADD, &c, &b) != 0, "in place broadcast of self must fail");
	CHECK(strstr(sd_geterr(), "(4, 3, 37)") && strstr(sd_geterr(), "(4, 1, 37)"), "message: %s", sd_geterr());
	/* not broadcastable */
	int64_t sd[1] = {5};
	sd_tensor d = randt(1, sd, 1);
	CHECK(sd_binary(SD_BIN_ADD, &x, &d, &r) != 0 && strstr(sd_geterr(), "do not broadcast"), "broadcast error");
	/* dtype */
	sd_tensor h;
	sd_tensor_to(&x, &h, SD_F16);
	CHECK(sd_binary(SD_BIN_ADD, &h, &x, &r) != 0 && strstr(sd_geterr(), "f16"), "dtype error: %s", sd_geterr());
	sd_tensor_release(&h);
	sd_tensor_release(&d);
	sd_tensor_release(&b);
	sd_tensor_release(&c);
	sd_tensor_release(&x);
}

static void test_large_parallel(void)
{
	int64_t s[4] = {2, 320, 64, 64}, sb[4] = {1, 320, 1, 1};
	sd_tensor x = randt(4, s, 1), b = randt(4, sb, 1), r;
	CHECK(sd_binary(SD_BIN_ADD, &x, &b, &r) == 0, "%s", sd_geterr());
	const float *px = sd_tensor_data(&x), *pb = sd_tensor_data(&b), *pr = sd_tensor_data(&r);
	int bad = 0;
	for (int64_t i = 0; i < sd_tensor_numel(&x); i++)
		if (pr[i] != px[i] + pb[(i / 4096) % 320]) bad++;
	CHECK(bad == 0, "%d wrong", bad);
	sd_tensor_release(&r);
	sd_tensor xt;
	int perm[4] = {0, 2, 3, 1};
	sd_tensor_permute(&x, &xt, 4, perm); /* NHWC view, inner stride 4096 */
	CHECK(sd_binary_scalar(SD_BIN_MUL, &xt, 3.0f, 0, &r) == 0, "%s", sd_geterr());
	pr = sd_tensor_data(&r);
	bad = 0;
	for (int64_t n = 0; n < 2; n++)
		for (int64_t hw = 0; hw < 4096; hw++)
			for (int64_t c = 0; c < 320; c++)
				if (pr[(n * 4096 + hw) * 320 + c] != 3.0f * px[(n * 320 + c) * 4096 + hw]) bad++;
	CHECK(bad == 0, "%d wrong (permuted)", bad);
	sd_tensor_release(&r);
	sd_tensor_release(&xt);
	sd_tensor_release(&x);
	sd_tensor_release(&b);
}

static void test_clamp_where(void)
{
	int64_t s[2] = {9, 13};
	sd_tensor x = randt(2, s, 4), r;
	float *p = sd_tensor_data(&x);
	p[3] = NAN;
	CHECK(sd_clamp(&x, -1.0f, 2.0f, &r) == 0, "clamp");
	const float *q = sd_tensor_data(&r);
	int bad = 0;
	for (int i = 0; i < 117; i++) {
		if (i == 3) { bad += !isnan(q[i]); continue; }
		float w = p[i] < -1 ? -1 : p[i] > 2 ? 2 : p[i];
		bad += q[i] != w;
	}
	CHECK(bad == 0, "clamp: %d wrong", bad);
	sd_tensor_release(&r);
	CHECK(sd_clamp(&x, NAN, 0.0f, &r) == 0, "clamp max only");
	q = sd_tensor_data(&r);
	CHECK(q[0] == (p[0] > 0 ? 0 : p[0]), "clamp max only");
	sd_tensor_release(&r);
	/* where with a u8 condition broadcast along rows and a scalar b */
	int64_t sc[2] = {9, 1};
	sd_tensor c;
	sd_tensor_new(&c, SD_U8, 2, sc);
	uint8_t *cp = sd_tensor_data(&c);
	for (int i = 0; i < 9; i++) cp[i] = (uint8_t)(i % 2);
	CHECK(sd_where(&c, &x, 0, NULL, -7.0f, &r) == 0, "where: %s", sd_geterr());
	q = sd_tensor_data(&r);
	bad = 0;
	for (int i = 0; i < 9; i++)
		for (int j = 0; j < 13; j++) {
			float w = (i % 2) ? p[i * 13 + j] : -7.0f;
			if (!(q[i * 13 + j] == w || (isnan(w) && isnan(q[i * 13 + j])))) bad++;
		}
	CHECK(bad == 0, "where: %d wrong", bad);
	sd_tensor_release(&r);
	sd_tensor_release(&c);
	sd_tensor_release(&x);
}

static double ref_act(sd_act op, double x)
{
	switch (op) {
	case SD_ACT_NEG: return -x;
	case SD_ACT_EXP: return exp(x);
	case SD_ACT_LOG: return log(x);
	case SD_ACT_SQRT: return sqrt(x);
	case SD_ACT_RSQRT: return 1 / sqrt(x);
	case SD_ACT_ABS: return fabs(x);
	case SD_ACT_SIN: return sin(x);
	case SD_ACT_COS: return cos(x);
	case SD_ACT_TANH: return tanh(x);
	case SD_ACT_SIGMOID: return 1 / (1 + exp(-x));
	case SD_ACT_SILU: return x / (1 + exp(-x));
	case SD_ACT_GELU: return 0.5 * x * erfc(-x / sqrt(2.0));
	case SD_ACT_GELU_TANH: /* 0.5 x (1 + tanh u) without the cancellation of 1 + tanh u */
		return x / (1 + exp(-2 * sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
	case SD_ACT_QUICK_GELU: return x / (1 + exp(-1.702 * x));
	default: return NAN;
	}
}

/* error in units of the float spacing at the reference value (absolute floor 1e-37) */
static double ulps(float got, double want)
{
	if (isnan(want)) return isnan(got) ? 0 : 1e30;
	if (isinf(want)) return (double)got == want ? 0 : 1e30;
	double u = fabs(want) > 1e-30 ? ldexp(1.0, ilogb(want) - 23) : 1e-37;
	return fabs((double)got - want) / u;
}

static void test_activations(void)
{
	enum { N = 4099 };
	float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
	for (int op = 0; op < SD_ACT_COUNT; op++) {
		float amp = op == SD_ACT_EXP ? 80 : op == SD_ACT_SIN || op == SD_ACT_COS ? 100 : 12;
		for (int i = 0; i < N; i++) x[i] = amp * check_rand(&rng);
		if (op == SD_ACT_LOG || op == SD_ACT_SQRT || op == SD_ACT_RSQRT)
			for (int i = 0; i < N; i++) x[i] = fabsf(x[i]) * (i % 3 ? 1.0f : 1e-30f) + 1e-38f;
		x[0] = 0.0f;
		x[1] = -0.0f;
		x[2] = 1e-20f;
		x[3] = -30.0f;
		if (op != SD_ACT_LOG && op != SD_ACT_SQRT && op != SD_ACT_RSQRT) x[4] = -88.0f, x[5] = 88.0f;
		/* odd lengths check the vector tails */
		for (int n = 1; n <= 40; n += 3) sd_act_f32((sd_act)op, x, y, (size_t)n);
		sd_act_f32((sd_act)op, x, y, N);
		double worst = 0, at_x = 0;
		for (int i = 0; i < N; i++) {
			double w = ref_act((sd_act)op, x[i]);
			double e = ulps(y[i], w);
			/* the argument of exp is rounded to float first: its error grows with its size */
			double xv = x[i];
			if (op == SD_ACT_GELU_TANH) e /= 1 + fabs(2 * 0.7978845608 * (xv + 0.044715 * xv * xv * xv));
			if (op == SD_ACT_QUICK_GELU) e /= 1 + 1.702 * fabs(xv);
			if (op == SD_ACT_SILU || op == SD_ACT_SIGMOID) e /= 1 + fabs(xv);
			if (!(e <= worst)) { worst = e; at_x = x[i]; }
		}
		double tol = (op == SD_ACT_SIN || op == SD_ACT_COS) ? 1e6 : 5; /* sin/cos: relative to ~0 results */
		CHECK(worst <= tol, "%s: %.2f ulp at x = %g", sd_act_name((sd_act)op), worst, at_x);
		if (op == SD_ACT_SIN || op == SD_ACT_COS) {
			double abs_worst = 0;
			for (int i = 0; i < N; i++) {
				double d = fabs(y[i] - ref_act((sd_act)op, x[i]));
				if (d > abs_worst) abs_worst = d;
			}
			CHECK(abs_worst <= 2e-7, "%s: abs err %g", sd_act_name((sd_act)op), abs_worst);
		}
		/* in place, and the scalar path agrees to a few ulp */
		memcpy(y, x, sizeof(float) * N);
		sd_act_f32((sd_act)op, y, y, N);
		int bad = 0;
		for (int i = 0; i < N; i++) {
			float s = sd_act_scalar((sd_act)op, x[i]);
			if (!(s == y[i] || fabsf(s - y[i]) <= 1e-5f * fabsf(s) + 1e-30f) && !(isnan(s) && isnan(y[i]))) bad++;
		}
		CHECK(bad == 0, "%s: scalar path differs at %d", sd_act_name((sd_act)op), bad);
	}
	/* gelu (the fitted Phi series) on a dense grid over its whole range, tails included */
	{
		enum { G = 1 << 20 };
		float *gx = malloc(sizeof(float) * G), *gy = malloc(sizeof(float) * G);
		for (int i = 0; i < G; i++) gx[i] = -12.0f + 24.0f * (float)i / (float)G;
		sd_act_f32(SD_ACT_GELU, gx, gy, G);
		double worst = 0, at_x = 0;
		for (int i = 0; i < G; i++) {
			double e = ulps(gy[i], 0.5 * (double)gx[i] * erfc(-(double)gx[i] / sqrt(2.0)));
			if (!(e <= worst)) { worst = e; at_x = gx[i]; }
		}
		CHECK(worst <= 5, "gelu sweep: %.2f ulp at x = %g", worst, at_x);
		free(gx);
		free(gy);
	}
	/* special values */
	float sp[6] = {INFINITY, -INFINITY, NAN, -100, 100, 0}, out[6];
	sd_act_f32(SD_ACT_SILU, sp, out, 6);
	CHECK(out[0] == INFINITY, "silu inf");
	CHECK(isnan(out[2]) && out[3] == -0.0f && out[4] == 100 && out[5] == 0, "silu specials %g %g %g", out[2], out[3], out[4]);
	sd_act_f32(SD_ACT_SIGMOID, sp, out, 6);
	CHECK(out[0] == 1 && out[1] == 0 && isnan(out[2]) && out[5] == 0.5f, "sigmoid specials");
	sd_act_f32(SD_ACT_GELU, sp, out, 6);
	CHECK(out[0] == INFINITY && out[1] == 0 && isnan(out[2]) && out[4] == 100 && out[3] == -0.0f && out[5] == 0,
	      "gelu specials %g %g %g", out[0], out[1], out[3]);
	free(x);
	free(y);
}

static void test_geglu(void)
{
	int64_t s[3] = {2, 7, 2 * 37};
	sd_tensor x = randt(3, s, 4), r, v;
	CHECK(sd_geglu(&x, &r) == 0, "geglu: %s", sd_geterr());
	CHECK(r.ndim == 3 && r.shape[2] == 37, "geglu shape");
	const float *px = sd_tensor_data(&x), *pr = sd_tensor_data(&r);
	double worst = 0;
	for (int64_t row = 0; row < 14; row++)
		for (int64_t j = 0; j < 37; j++) {
			double a = px[row * 74 + j], b = px[row * 74 + 37 + j];
			double e = relerr(pr[row * 37 + j], a * ref_act(SD_ACT_GELU, b));
			if (b < 0) e /= 1 + b * b;
			if (e > worst) worst = e;
		}
	CHECK(worst < 1e-6, "geglu rel err %g", worst);
	sd_tensor_release(&r);
	/* a big one (parallel path), and a strided input */
	int64_t sb[2] = {4096, 2 * 640};
	sd_tensor big = randt(2, sb, 3);
	CHECK(sd_geglu(&big, &r) == 0, "geglu big");
	px = sd_tensor_data(&big);
	pr = sd_tensor_data(&r);
	int bad = 0;
	for (int64_t i = 0; i < 4096; i += 97)
		for (int64_t j = 0; j < 640; j++) {
			double w = px[i * 1280 + j] * ref_act(SD_ACT_GELU, px[i * 1280 + 640 + j]);
			if (fabs(pr[i * 640 + j] - w) > 1e-6 * (1 + fabs(w))) bad++;
		}
	CHECK(bad == 0, "geglu big: %d wrong", bad);
	sd_tensor_release(&r);
	sd_tensor_transpose(&big, &v, 0, 1);
	CHECK(sd_geglu(&v, &r) == 0 && r.shape[0] == 1280 && r.shape[1] == 2048, "geglu transposed");
	pr = sd_tensor_data(&r);
	CHECK(fabs(pr[5 * 2048 + 3] - px[3 * 1280 + 5] * ref_act(SD_ACT_GELU, px[(3 + 2048) * 1280 + 5])) < 1e-5,
	      "geglu transposed value");
	sd_tensor_release(&r);
	sd_tensor_release(&v);
	int64_t so[1] = {5};
	sd_tensor odd = randt(1, so, 1);
	CHECK(sd_geglu(&odd, &r) != 0 && strstr(sd_geterr(), "not even"), "odd last dim error");
	sd_tensor_release(&odd);
	sd_tensor_release(&big);
	sd_tensor_release(&x);
	/* fused add + silu */
	enum { M = 100003 };
	float *a = malloc(sizeof(float) * M), *b = malloc(sizeof(float) * M), *y = malloc(sizeof(float) * M);
	check_fill(a, M, 1);
	check_fill(b, M, 2);
	sd_add_silu_f32(a, b, y, M);
	bad = 0;
	for (int i = 0; i < M; i++) {
		double s = (double)(a[i] + b[i]);
		if (fabs(y[i] - s / (1 + exp(-s))) > 4e-7 * (1 + fabs(s))) bad++;
	}
	CHECK(bad == 0, "add_silu: %d wrong", bad);
	free(a);
	free(b);
	free(y);
}

static void test_cat_stack_embedding(void)
{
	int64_t s1[3] = {2, 3, 5}, s2[3] = {2, 4, 5};
	sd_tensor a = randt(3, s1, 1), b = randt(3, s2, 1), r;
	const sd_tensor *ab[2] = {&a, &b};
	CHECK(sd_cat(ab, 2, 1, &r) == 0, "cat: %s", sd_geterr());
	CHECK(r.shape[0] == 2 && r.shape[1] == 7 && r.shape[2] == 5, "cat shape");
	int bad = 0;
	for (int64_t i = 0; i < 2; i++)
		for (int64_t j = 0; j < 7; j++)
			for (int64_t k = 0; k < 5; k++) {
				int64_t idx[3] = {i, j < 3 ? j : j - 3, k}, ir[3] = {i, j, k};
				if (at(&r, 3, ir) != at(j < 3 ? &a : &b, 3, idx)) bad++;
			}
	CHECK(bad == 0, "cat values");
	sd_tensor_release(&r);
	CHECK(sd_cat(ab, 2, 0, &r) != 0 && strstr(sd_geterr(), "(2, 4, 5)"), "cat mismatch error: %s", sd_geterr());
	const sd_tensor *aa[3] = {&a, &a, &a};
	CHECK(sd_stack(aa, 3, -1, &r) == 0, "stack: %s", sd_geterr());
	CHECK(r.ndim == 4 && r.shape[3] == 3 && r.shape[2] == 5, "stack shape");
	int64_t i3[4] = {1, 2, 4, 2}, ia[3] = {1, 2, 4};
	CHECK(at(&r, 4, i3) == at(&a, 3, ia), "stack value");
	sd_tensor_release(&r);
	/* embedding: f16 weight, ids as f32 and i64 */
	int64_t sw[2] = {10, 6}, si[2] = {2, 3};
	sd_tensor w = randt(2, sw, 1), wh, ids, idl;
	sd_tensor_to(&w, &wh, SD_F16);
	ids = randt(2, si, 1);
	float *ip = sd_tensor_data(&ids);
	for (int i = 0; i < 6; i++) ip[i] = (float)((i * 7) % 10);
	sd_tensor_to(&ids, &idl, SD_I64);
	CHECK(sd_embedding(&wh, &ids, &r) == 0, "embedding: %s", sd_geterr());
	CHECK(r.ndim == 3 && r.shape[2] == 6 && r.dtype == SD_F32, "embedding shape");
	const float *pr = sd_tensor_data(&r), *pw = sd_tensor_data(&w);
	bad = 0;
	for (int i = 0; i < 6; i++)
		for (int j = 0; j < 6; j++)
			if (fabsf(pr[i * 6 + j] - pw[(int)ip[i] * 6 + j]) > 1e-3f) bad++;
	CHECK(bad == 0, "embedding values");
	sd_tensor_release(&r);
	CHECK(sd_embedding(&w, &idl, &r) == 0, "embedding i64");
	pr = sd_tensor_data(&r);
	CHECK(pr[5 * 6 + 1] == pw[5 * 6 + 1], "embedding i64 values");
	sd_tensor_release(&r);
	ip[4] = 10;
	CHECK(sd_embedding(&w, &ids, &r) != 0 && strstr(sd_geterr(), "id 10") && strstr(sd_geterr(), "position 5"),
	      "out of range id: %s", sd_geterr());
	ip[4] = 2.5f;
	CHECK(sd_embedding(&w, &ids, &r) != 0 && strstr(sd_geterr(), "2.5"), "fractional id: %s", sd_geterr());
	sd_tensor_release(&ids);
	sd_tensor_release(&idl);
	sd_tensor_release(&w);
	sd_tensor_release(&wh);
	sd_tensor_release(&a);
	sd_tensor_release(&b);
}

int main(void)
{
	RUN("elementwise: binary ops with random broadcasting", test_binary_broadcast());
	RUN("elementwise: non-contiguous operands and in place", test_noncontiguous());
	RUN("elementwise: scalars, in place, error messages", test_scalar_and_inplace());
	RUN("elementwise: 2x320x64x64 bias add and permuted view", test_large_parallel());
	RUN("elementwise: clamp and where", test_clamp_where());
	RUN("activation: accuracy against double, tails, in place", test_activations());
	RUN("activation: geglu and fused add+silu", test_geglu());
	/* the same on the AVX2 and the portable paths (SSE2 SLEEF, scalar tails): the feature flags
	 * are plain data */
	sd_cpu *cpu = (sd_cpu *)sd_cpu_features();
	sd_cpu saved = *cpu;
	cpu->avx512 = 0;
	if (cpu->avx2 && cpu->fma) {
		RUN("activation (AVX2 path): accuracy against double, tails, in place", test_activations());
		RUN("activation (AVX2 path): geglu and fused add+silu", test_geglu());
	}
	cpu->avx2 = 0;
	RUN("activation (portable path): accuracy against double, tails, in place", test_activations());
	RUN("activation (portable path): geglu and fused add+silu", test_geglu());
	*cpu = saved;
	RUN("index: cat, stack, embedding", test_cat_stack_embedding());
	CHECK_DONE();
}
