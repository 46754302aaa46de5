/* Elementwise binary arithmetic with broadcasting (sd_iter), clamp and where. */
#include <math.h>
#include <string.h>
#include "elementwise.h"
#include "sd_error.h"

#define EW_CHUNK 16384       /* elements per parallel task */
#define EW_PAR_MIN (1 << 16) /* below this many elements, one thread */

static const char *const binop_names[SD_BINOP_COUNT] = {"add", "sub", "mul", "div", "pow"};
const char *sd_binop_name(sd_binop op) { return (unsigned)op < SD_BINOP_COUNT ? binop_names[op] : "?"; }

static inline float f_add(float a, float b) { return a + b; }
static inline float f_sub(float a, float b) { return a - b; }
static inline float f_mul(float a, float b) { return a * b; }
static inline float f_div(float a, float b) { return a / b; }
static inline float f_pow(float a, float b) { return powf(a, b); }

/* The contiguous and one-side-broadcast cases as separate simple loops the compiler vectorises;
 * y may be the same array as a or b (never a partial overlap). */
#define BIN_LOOPS(F)                                                                         \
	do {                                                                                 \
		if (sy == 1 && sa == 1 && sb == 1) {                                         \
			_Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = F(a[i], b[i]); \
		} else if (sy == 1 && sa == 1 && sb == 0) {                                  \
			const float bv = *b;                                                 \
			_Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = F(a[i], bv);   \
		} else if (sy == 1 && sa == 0 && sb == 1) {                                  \
			const float av = *a;                                                 \
			_Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = F(av, b[i]);   \
		} else {                                                                     \
			for (int64_t i = 0; i < n; i++) y[i * sy] = F(a[i * sa], b[i * sb]); \
		}                                                                            \
	} while (0)

void sd_binary_f32(sd_binop op, const float *a, int64_t sa, const float *b, int64_t sb, float *y, int64_t sy, int64_t n)
{
	switch (op) {
	case SD_BIN_ADD: BIN_LOOPS(f_add); break;
	case SD_BIN_SUB: BIN_LOOPS(f_sub); break;
	case SD_BIN_MUL: BIN_LOOPS(f_mul); break;
	case SD_BIN_DIV: BIN_LOOPS(f_div); break;
	case SD_BIN_POW:
		if (sb == 0 && *b == 2.0f) {
			const float *x = a;
			for (int64_t i = 0; i < n; i++) y[i * sy] = x[i * sa] * x[i * sa];
		} else if (sb == 0 && *b == 1.0f) {
			for (int64_t i = 0; i < n; i++) y[i * sy] = a[i * sa];
		} else if (sb == 0 && *b == 0.5f) {
			for (int64_t i = 0; i < n; i++) y[i * sy] = sqrtf(a[i * sa]);
		} else { /* powf calls: no vector form */
			for (int64_t i = 0; i < n; i++) y[i * sy] = f_pow(a[i * sa], b[i * sb]);
		}
		break;
	default: break;
	}
}

void sd_clamp_f32(const float *x, int64_t sx, float *y, int64_t sy, int64_t n, float lo, float hi)
{
	/* NaN stays NaN: compare so that a NaN x fails both tests */
	if (sx == 1 && sy == 1) {
		#pragma omp simd
		for (int64_t i = 0; i < n; i++) {
			float v = x[i];
			v = v < lo ? lo : v;
			y[i] = v > hi ? hi : v;
		}
	} else {
		for (int64_t i = 0; i < n; i++) {
			float v = x[i * sx];
			v = v < lo ? lo : v;
			y[i * sy] = v > hi ? hi : v;
		}
	}
}

void sd_where_f32(const float *c, int64_t sc, const float *a, int64_t sa, const float *b, int64_t sb,
                  float *y, int64_t sy, int64_t n)
{
	for (int64_t i = 0; i < n; i++) y[i * sy] = c[i * sc] != 0.0f ? a[i * sa] : b[i * sb];
}

int sd_foreach(int nops, const sd_tensor *const *ops, int ndim, const int64_t *shape, sd_rowfn fn, const void *ctx)
{
	sd_iter it;
	if (sd_iter_init(&it, nops, ops, ndim, shape) != 0) return -1;
	int64_t total = it.rows * it.inner;
	if (total == 0) return 0;
	const sd_iter *itp = &it;
	if (it.inner >= EW_CHUNK) {
		int64_t per = (it.inner + EW_CHUNK - 1) / EW_CHUNK, tasks = it.rows * per;
		#pragma omp parallel for schedule(static) if (total >= EW_PAR_MIN)
		for (int64_t t = 0; t < tasks; t++) {
			char *p[SD_ITER_MAXOPS];
			int64_t r = t / per, s = (t % per) * EW_CHUNK;
			int64_t len = itp->inner - s < EW_CHUNK ? itp->inner - s : EW_CHUNK;
			sd_iter_row(itp, r, p);
			for (int k = 0; k < itp->nops; k++) p[k] += s * itp->inner_stride[k] * (int64_t)itp->elsize[k];
			fn(p, itp->inner_stride, len, ctx);
		}
	} else {
		int64_t per = EW_CHUNK / it.inner, tasks = (it.rows + per - 1) / per;
		#pragma omp parallel for schedule(static) if (total >= EW_PAR_MIN)
		for (int64_t t = 0; t < tasks; t++) {
			char *p[SD_ITER_MAXOPS];
			int64_t r1 = (t + 1) * per < itp->rows ? (t + 1) * per : itp->rows;
			for (int64_t r = t * per; r < r1; r++) {
				sd_iter_row(itp, r, p);
				fn(p, itp->inner_stride, itp->inner, ctx);
			}
		}
	}
	return 0;
}

static int need_f32(const sd_tensor *t)
{
	if (t->dtype != SD_F32) return sd_seterr("expected an f32 tensor, got %s %s", sd_dtype_name(t->dtype), SD_SHAPE_STR(t));
	return 0;
}

struct binctx { sd_binop op; float s; int scalar_first; };

static void row_binary(char **p, const int64_t *st, int64_t n, const void *ctx)
{
	const struct binctx *c = ctx;
	sd_binary_f32(c->op, (const float *)p[1], st[1], (const float *)p[2], st[2], (float *)p[0], st[0], n);
}

static void row_scalar(char **p, const int64_t *st, int64_t n, const void *ctx)
{
	const struct binctx *c = ctx;
	float s = c->s;
	if (c->scalar_first) sd_binary_f32(c->op, &s, 0, (const float *)p[1], st[1], (float *)p[0], st[0], n);
	else sd_binary_f32(c->op, (const float *)p[1], st[1], &s, 0, (float *)p[0], st[0], n);
}

int sd_binary(sd_binop op, const sd_tensor *a, const sd_tensor *b, sd_tensor *out)
{
	if ((unsigned)op >= SD_BINOP_COUNT) return sd_seterr("unknown operation %d", (int)op);
	if (need_f32(a) || need_f32(b)) return -1;
	int nd;
	int64_t shape[SD_MAX_DIMS];
	if (sd_broadcast_shape(a->ndim, a->shape, b->ndim, b->shape, &nd, shape) != 0) return -1;
	sd_tensor r;
	if (sd_tensor_new(&r, SD_F32, nd, shape) != 0) return -1;
	const sd_tensor *ops[3] = {&r, a, b};
	struct binctx c = {op, 0, 0};
	if (sd_foreach(3, ops, nd, shape, row_binary, &c) != 0) { sd_tensor_release(&r); return -1; }
	*out = r;
	return 0;
}

int sd_binary_scalar(sd_binop op, const sd_tensor *x, float s, int scalar_first, sd_tensor *out)
{
	if ((unsigned)op >= SD_BINOP_COUNT) return sd_seterr("unknown operation %d", (int)op);
	if (need_f32(x)) return -1;
	sd_tensor r;
	if (sd_tensor_new(&r, SD_F32, x->ndim, x->shape) != 0) return -1;
	const sd_tensor *ops[2] = {&r, x};
	struct binctx c = {op, s, scalar_first};
	if (sd_foreach(2, ops, x->ndim, x->shape, row_scalar, &c) != 0) { sd_tensor_release(&r); return -1; }
	*out = r;
	return 0;
}

int sd_binary_(sd_binop op, sd_tensor *self, const sd_tensor *b)
{
	if ((unsigned)op >= SD_BINOP_COUNT) return sd_seterr("unknown operation %d", (int)op);
	if (need_f32(self) || need_f32(b)) return -1;
	int nd;
	int64_t shape[SD_MAX_DIMS];
	if (sd_broadcast_shape(self->ndim, self->shape, b->ndim, b->shape, &nd, shape) != 0) return -1;
	if (nd != self->ndim || memcmp(shape, self->shape, sizeof(int64_t) * (size_t)nd) != 0)
		return sd_seterr("in place: the result shape %s differs from self's shape %s",
		                 sd_shape_str(nd, shape, (char[160]){0}, 160), SD_SHAPE_STR(self));
	for (int i = 0; i < self->ndim; i++)
		if (self->stride[i] == 0 && self->shape[i] > 1)
			return sd_seterr("in place: self %s is an expanded (broadcast) view", SD_SHAPE_STR(self));
	/* a b sharing self's storage but not identical to it is read before being overwritten only
	 * when it is the same view; other overlaps are copied first */
	sd_tensor tmp = {0};
	const sd_tensor *bb = b;
	if (b->storage == self->storage && !(b->offset == self->offset && sd_tensor_same_shape(b, self) &&
	                                     !memcmp(b->stride, self->stride, sizeof(int64_t) * (size_t)b->ndim))) {
		if (sd_tensor_clone(b, &tmp) != 0) return -1;
		bb = &tmp;
	}
	const sd_tensor *ops[3] = {self, self, bb};
	struct binctx c = {op, 0, 0};
	int rc = sd_foreach(3, ops, nd, shape, row_binary, &c);
	if (tmp.storage) sd_tensor_release(&tmp);
	return rc;
}

int sd_binary_scalar_(sd_binop op, sd_tensor *self, float s)
{
	if ((unsigned)op >= SD_BINOP_COUNT) return sd_seterr("unknown operation %d", (int)op);
	if (need_f32(self)) return -1;
	for (int i = 0; i < self->ndim; i++)
		if (self->stride[i] == 0 && self->shape[i] > 1)
			return sd_seterr("in place: self %s is an expanded (broadcast) view", SD_SHAPE_STR(self));
	const sd_tensor *ops[2] = {self, self};
	struct binctx c = {op, s, 0};
	return sd_foreach(2, ops, self->ndim, self->shape, row_scalar, &c);
}

struct clampctx { float lo, hi; };

static void row_clamp(char **p, const int64_t *st, int64_t n, const void *ctx)
{
	const struct clampctx *c = ctx;
	sd_clamp_f32((const float *)p[1], st[1], (float *)p[0], st[0], n, c->lo, c->hi);
}

int sd_clamp(const sd_tensor *x, float lo, float hi, sd_tensor *out)
{
	if (need_f32(x)) return -1;
	struct clampctx c = {isnan(lo) ? -INFINITY : lo, isnan(hi) ? INFINITY : hi};
	sd_tensor r;
	if (sd_tensor_new(&r, SD_F32, x->ndim, x->shape) != 0) return -1;
	const sd_tensor *ops[2] = {&r, x};
	if (sd_foreach(2, ops, x->ndim, x->shape, row_clamp, &c) != 0) { sd_tensor_release(&r); return -1; }
	*out = r;
	return 0;
}

struct wherectx { int ia, ib; float as, bs; };

static void row_where(char **p, const int64_t *st, int64_t n, const void *ctx)
{
	const struct wherectx *c = ctx;
	float as = c->as, bs = c->bs;
	const float *a = c->ia ? (const float *)p[c->ia] : &as, *b = c->ib ? (const float *)p[c->ib] : &bs;
	sd_where_f32((const float *)p[1], st[1], a, c->ia ? st[c->ia] : 0, b, c->ib ? st[c->ib] : 0,
	             (float *)p[0], st[0], n);
}

int sd_where(const sd_tensor *cond, const sd_tensor *a, float as, const sd_tensor *b, float bs, sd_tensor *out)
{
	if ((a && need_f32(a)) || (b && need_f32(b))) return -1;
	int nd = cond->ndim;
	int64_t shape[SD_MAX_DIMS];
	memcpy(shape, cond->shape, sizeof shape);
	const sd_tensor *others[2] = {a, b};
	for (int k = 0; k < 2; k++) {
		if (!others[k]) continue;
		int64_t s2[SD_MAX_DIMS];
		if (sd_broadcast_shape(nd, shape, others[k]->ndim, others[k]->shape, &nd, s2) != 0) return -1;
		memcpy(shape, s2, sizeof s2);
	}
	sd_tensor cf, r;
	if (cond->dtype == SD_F32) sd_tensor_share(&cf, cond);
	else if (sd_tensor_to(cond, &cf, SD_F32) != 0) return -1;
	if (sd_tensor_new(&r, SD_F32, nd, shape) != 0) { sd_tensor_release(&cf); return -1; }
	const sd_tensor *ops[4] = {&r, &cf, NULL, NULL};
	int n = 2;
	struct wherectx c = {0, 0, as, bs};
	if (a) { c.ia = n; ops[n++] = a; }
	if (b) { c.ib = n; ops[n++] = b; }
	int rc = sd_foreach(n, ops, nd, shape, row_where, &c);
	sd_tensor_release(&cf);
	if (rc != 0) { sd_tensor_release(&r); return -1; }
	*out = r;
	return 0;
}
