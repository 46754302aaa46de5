/* Tests of the tensor core: shapes, views, copies, broadcasting iteration, dtype conversion. */
#include <math.h>
#include <string.h>
#include "check.h"
#include "cpu.h"
#include "sd_error.h"
#include "tensor.h"

static float at(const sd_tensor *t, int64_t i, int64_t j)
{
	return ((float *)t->storage->data)[t->offset + i * t->stride[0] + j * t->stride[1]];
}

static void test_views(void)
{
	sd_tensor a, v, p, n, s, e, c;
	int64_t shape[2] = {3, 4};
	CHECK(sd_tensor_new(&a, SD_F32, 2, shape) == 0, "new");
	float *d = sd_tensor_data(&a);
	for (int i = 0; i < 12; i++) d[i] = (float)i;
	int64_t vs[3] = {2, -1, 3};
	CHECK(sd_tensor_view(&a, &v, 3, vs) == 0 && v.shape[1] == 2 && v.stride[0] == 6, "view infers -1");
	CHECK(a.storage->refcount == 2, "a view shares storage (refcount %ld)", a.storage->refcount);
	int perm[2] = {1, 0};
	CHECK(sd_tensor_permute(&a, &p, 2, perm) == 0 && at(&p, 3, 2) == 11 && !sd_tensor_is_contiguous(&p), "permute");
	int64_t bad[2] = {6, 2};
	CHECK(sd_tensor_view(&p, &e, 2, bad) != 0 && strstr(sd_geterr(), "reshape"), "view of a transposed tensor refuses: %s", sd_geterr());
	CHECK(sd_tensor_reshape(&p, &e, 2, bad) == 0 && sd_tensor_is_contiguous(&e) && ((float *)sd_tensor_data(&e))[1] == 4, "reshape copies");
	sd_tensor_release(&e);
	CHECK(sd_tensor_narrow(&a, &n, 1, 1, 2) == 0 && at(&n, 2, 1) == 10, "narrow");
	CHECK(sd_tensor_narrow(&a, &e, 1, 3, 2) != 0, "narrow out of range fails");
	CHECK(sd_tensor_select(&a, &s, 0, 2) == 0 && s.ndim == 1 && ((float *)sd_tensor_data(&s))[3] == 11, "select");
	int64_t es[3] = {2, 3, 4};
	CHECK(sd_tensor_expand(&a, &e, 3, es) == 0 && e.stride[0] == 0, "expand adds a broadcast dim");
	CHECK(sd_tensor_contiguous(&e, &c) == 0 && sd_tensor_numel(&c) == 24 && ((float *)sd_tensor_data(&c))[12 + 5] == 5, "contiguous of expanded");
	/* view of a narrowed tensor keeps working where memory allows */
	sd_tensor nv;
	int64_t flat[1] = {-1};
	CHECK(sd_tensor_view(&n, &nv, 1, flat) != 0, "narrowed columns cannot be flattened without a copy");
	sd_tensor rows;
	CHECK(sd_tensor_narrow(&a, &rows, 0, 1, 2) == 0 && sd_tensor_view(&rows, &nv, 1, flat) == 0 && nv.shape[0] == 8 &&
	      ((float *)sd_tensor_data(&nv))[0] == 4, "narrowed rows flatten as a view");
	sd_tensor u, q;
	CHECK(sd_tensor_unsqueeze(&a, &u, 1) == 0 && u.ndim == 3 && u.shape[1] == 1, "unsqueeze");
	CHECK(sd_tensor_squeeze(&u, &q, -SD_MAX_DIMS - 1) == 0 && q.ndim == 2, "squeeze all");
	sd_tensor *all[] = {&a, &v, &p, &n, &s, &e, &c, &nv, &rows, &u, &q};
	for (size_t i = 0; i < sizeof all / sizeof *all; i++) sd_tensor_release(all[i]);
}

static void test_view_size1(void)
{
	/* (4,1,3) with a junk stride on the size-1 dim views as (12,) */
	sd_tensor a, b, x;
	int64_t shape[3] = {4, 1, 3}, flat[1] = {12};
	CHECK(sd_tensor_new(&a, SD_F32, 3, shape) == 0, "new");
	b = a;
	b.stride[1] = 999;
	CHECK(sd_tensor_view(&b, &x, 1, flat) == 0 && x.stride[0] == 1, "size-1 dims carry no stride");
	sd_tensor_release(&x);
	sd_tensor_release(&a);
}

static void test_overflow(void)
{
	sd_tensor t;
	int64_t huge[3] = {1LL << 40, 1LL << 30, 16};
	CHECK(sd_tensor_new(&t, SD_F32, 3, huge) != 0 && strstr(sd_geterr(), "too many"), "overflow is an error: %s", sd_geterr());
	int64_t neg[2] = {2, -3};
	CHECK(sd_tensor_new(&t, SD_F32, 2, neg) != 0, "negative size is an error");
	int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
	CHECK(sd_tensor_new(&t, SD_F32, 9, nine) != 0, "9 dims is an error");
}

static void test_broadcast_iter(void)
{
	sd_tensor a, b;
	int64_t sa[4] = {2, 3, 4, 5}, sb[4] = {1, 3, 1, 1}, out[8];
	int n;
	CHECK(sd_tensor_zeros(&a, SD_F32, 4, sa) == 0 && sd_tensor_zeros(&b, SD_F32, 4, sb) == 0, "alloc");
	CHECK(sd_broadcast_shape(4, sa, 4, sb, &n, out) == 0 && n == 4 && out[1] == 3, "broadcast shape");
	int64_t sc[1] = {4};
	CHECK(sd_broadcast_shape(4, sa, 1, sc, &n, out) != 0, "5 vs 4 does not broadcast");
	const sd_tensor *ops[2] = {&a, &b};
	sd_iter it;
	CHECK(sd_iter_init(&it, 2, ops, 4, sa) == 0, "iter");
	CHECK(it.inner == 20 && it.inner_stride[1] == 0 && it.rows == 6, "coalesced to 6 rows of 20 (got %lld x %lld)",
	      (long long)it.rows, (long long)it.inner);
	sd_tensor_release(&a);
	sd_tensor_release(&b);
}

/* f16 reference: the nearest representable value, ties to even, via doubles. */
static uint16_t ref_f16(float f)
{
	if (isnan(f)) return 0x7e00;
	uint16_t best = 0;
	double bd = INFINITY;
	(void)bd;
	/* binary search over the ordered positive halves */
	double a = fabs((double)f);
	uint16_t sign = signbit(f) ? 0x8000 : 0;
	if (a >= 65520.0) return sign | 0x7c00;
	uint16_t lo = 0, hi = 0x7bff;
	while (lo < hi) {
		uint16_t mid = (uint16_t)((lo + hi + 1) / 2);
		if (sd_f16_to_f32(mid) <= a) lo = mid; else hi = (uint16_t)(mid - 1);
	}
	best = lo;
	if (best < 0x7bff) {
		double d0 = a - sd_f16_to_f32(best), d1 = sd_f16_to_f32((uint16_t)(best + 1)) - a;
		if (d1 < d0 || (d1 == d0 && (best & 1))) best++;
	} else if (a - sd_f16_to_f32(best) >= 16.0) {
		return sign | 0x7c00;
	}
	return sign | best;
}

static void test_f16(void)
{
	int bad = 0;
	for (uint32_t h = 0; h < 65536; h++) { /* every half round-trips */
		float f = sd_f16_to_f32((uint16_t)h);
		if (isnan(f)) continue;
		if (sd_f32_to_f16(f) != h) bad++;
	}
	CHECK(bad == 0, "%d halves do not round-trip", bad);
	unsigned long long seed = 7;
	bad = 0;
	for (int i = 0; i < 200000; i++) {
		float f = check_rand(&seed) * powf(2.0f, (float)(i % 40) - 26.0f);
		if (sd_f32_to_f16(f) != ref_f16(f)) bad++;
	}
	CHECK(bad == 0, "%d random floats round differently from the reference", bad);
	CHECK(sd_f32_to_f16(65519.99f) == 0x7bff && sd_f32_to_f16(65520.0f) == 0x7c00, "overflow boundary");
	CHECK(sd_f32_to_f16(0x1p-25f) == 0 && sd_f32_to_f16(0x1.8p-25f) == 1, "subnormal tie to even");
	/* bulk (F16C when present) agrees with scalar */
	float src[1000];
	uint16_t h1[1000], h2[1000];
	for (int i = 0; i < 1000; i++) src[i] = check_rand(&seed) * 70000.0f;
	sd_f32_to_f16_n(src, h1, 1000);
	for (int i = 0; i < 1000; i++) h2[i] = sd_f32_to_f16(src[i]);
	CHECK(memcmp(h1, h2, sizeof h1) == 0, "bulk f32->f16 (%s) matches scalar", sd_cpu_describe());
	float back1[1000], back2[1000];
	sd_f16_to_f32_n(h1, back1, 1000);
	for (int i = 0; i < 1000; i++) back2[i] = sd_f16_to_f32(h1[i]);
	CHECK(memcmp(back1, back2, sizeof back1) == 0, "bulk f16->f32 matches scalar");
}

static void test_bf16(void)
{
	CHECK(sd_f32_to_bf16(1.0f) == 0x3f80, "1.0");
	CHECK(sd_f32_to_bf16(1.00390625f) == 0x3f80, "tie rounds to even (down)");
	CHECK(sd_f32_to_bf16(1.01171875f) == 0x3f82, "tie rounds to even (up)");
	CHECK(isnan(sd_bf16_to_f32(sd_f32_to_bf16(NAN))), "NaN stays NaN");
	unsigned long long seed = 9;
	float src[1003];
	uint16_t b1[1003], b2[1003];
	for (int i = 0; i < 1003; i++) src[i] = check_rand(&seed) * 1e5f;
	src[5] = NAN;
	src[6] = INFINITY;
	sd_f32_to_bf16_n(src, b1, 1003);
	for (int i = 0; i < 1003; i++) b2[i] = sd_f32_to_bf16(src[i]);
	CHECK(memcmp(b1, b2, sizeof b1) == 0, "bulk f32->bf16 matches scalar");
}

static void test_int_conversion(void)
{
	float f[5] = {-1.7f, 300.0f, NAN, 2.9f, -3e10f};
	uint8_t u[5];
	int32_t i[5];
	sd_convert(f, SD_F32, u, SD_U8, 5);
	CHECK(u[0] == 0 && u[1] == 255 && u[2] == 0 && u[3] == 2, "f32 -> u8 truncates and saturates");
	sd_convert(f, SD_F32, i, SD_I32, 5);
	CHECK(i[0] == -1 && i[3] == 2 && i[4] == INT32_MIN, "f32 -> i32");
	int64_t big = (1LL << 53) + 1, out;
	sd_convert(&big, SD_I64, &out, SD_I64, 1);
	CHECK(out == big, "i64 copy exact");
}

static void test_copy_strided(void)
{
	sd_tensor a, t, c;
	int64_t shape[2] = {5, 7};
	CHECK(sd_tensor_new(&a, SD_F32, 2, shape) == 0, "new");
	float *d = sd_tensor_data(&a);
	for (int i = 0; i < 35; i++) d[i] = (float)i * 0.5f;
	CHECK(sd_tensor_transpose(&a, &t, 0, 1) == 0 && sd_tensor_to(&t, &c, SD_F16) == 0, "to f16 of a transposed view");
	const uint16_t *h = sd_tensor_data(&c);
	CHECK(sd_f16_to_f32(h[1]) == 3.5f && sd_f16_to_f32(h[5]) == 0.5f, "values land transposed");
	sd_tensor_release(&a);
	sd_tensor_release(&t);
	sd_tensor_release(&c);
}

int main(void)
{
	RUN("tensor views share storage and check ranges", test_views());
	RUN("tensor view ignores strides of size-1 dims", test_view_size1());
	RUN("tensor shapes are overflow-checked", test_overflow());
	RUN("broadcast shapes and iterator coalescing", test_broadcast_iter());
	RUN("f16 conversion rounds to nearest even", test_f16());
	RUN("bf16 conversion rounds to nearest even", test_bf16());
	RUN("integer conversions truncate and saturate", test_int_conversion());
	RUN("strided copy with dtype conversion", test_copy_strided());
	CHECK_DONE();
}
