/* The NN binding: x:matmul(y), x:linear(w [, b]), x:conv2d(w [, b] [, opts]),
 * T.attention(q, k, v [, opts]) over kernels/gemm, conv2d and attention.
 *
 * Every temporary (a contiguous or f32 copy) is a Lua userdata, so that a Lua error raised
 * half-way leaks nothing: the garbage collector releases it. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "attention.h"
#include "conv2d.h"
#include "gemm.h"
#include "gemm_bf16.h"
#include "precision.h"
#include "lsd.h"
#include "sd_error.h"

/* ---- helpers ---- */

/* luaL_error with the full printf format (lua_pushfstring knows no %lld) */
static int nn_error(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int nn_error(lua_State *L, const char *fmt, ...)
{
	char buf[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	return luaL_error(L, "%s", buf);
}

static int is_floatdt(sd_dtype dt) { return dt == SD_F32 || dt == SD_F16 || dt == SD_BF16; }

/* t as f32 and (if need_contig) contiguous: t itself, or a copy pushed on the stack */
static sd_tensor *as_f32(lua_State *L, const char *op, sd_tensor *t, int need_contig)
{
	if (t->dtype == SD_F32 && (!need_contig || sd_tensor_is_contiguous(t))) return t;
	sd_tensor *o = sdl_newtensor(L);
	if (sd_tensor_to(t, o, SD_F32) != 0) sdl_error(L, op);
	return o;
}

/* t contiguous in its own dtype: t itself, or a copy pushed on the stack */
static sd_tensor *contig(lua_State *L, const char *op, sd_tensor *t)
{
	if (sd_tensor_is_contiguous(t)) return t;
	sd_tensor *o = sdl_newtensor(L);
	if (sd_tensor_contiguous(t, o) != 0) sdl_error(L, op);
	return o;
}

static sd_tensor *new_f32(lua_State *L, const char *op, int ndim, const int64_t *shape)
{
	sd_tensor *o = sdl_newtensor(L);
	if (sd_tensor_new(o, SD_F32, ndim, shape) != 0) sdl_error(L, op);
	return o;
}

static void check_float(lua_State *L, const char *op, const char *what, const sd_tensor *t)
{
	if (!is_floatdt(t->dtype))
		nn_error(L, "%s: %s must be a float tensor (f32, f16 or bf16), got %s %s", op, what,
		           sd_dtype_name(t->dtype), SD_SHAPE_STR(t));
}

/* A matrix (rows x cols, strides sr, sc) as a BLAS operand: *trans and *ld, or 0 when its
 * layout does not fit (then it must be copied). */
static int blas_layout(int64_t rows, int64_t cols, int64_t sr, int64_t sc, int *trans, int64_t *ld)
{
	int64_t mincols = cols > 1 ? cols : 1, minrows = rows > 1 ? rows : 1;
	if ((cols <= 1 || sc == 1) && (rows <= 1 || sr >= mincols)) {
		*trans = 0;
		*ld = rows <= 1 ? mincols : sr;
		return 1;
	}
	if ((rows <= 1 || sr == 1) && (cols <= 1 || sc >= minrows)) {
		*trans = 1;
		*ld = cols <= 1 ? minrows : sc;
		return 1;
	}
	return 0;
}

/* The batch dims (shape bs[0..nb)) of an operand with strides st (already aligned, 0 where
 * broadcast) as one uniform stride, or 0 if they do not collapse. */
static int collapse_batch(int nb, const int64_t *bs, const int64_t *st, int64_t *stride)
{
	int64_t s = 0;
	int have = 0;
	int64_t expect = 0;
	for (int i = nb - 1; i >= 0; i--) {
		if (bs[i] == 1) continue;
		if (!have) {
			s = st[i];
			expect = st[i] * bs[i];
			have = 1;
		} else {
			if (st[i] != expect) return 0;
			expect = st[i] * bs[i];
		}
	}
	*stride = s;
	return 1;
}

/* ---- matmul ---- */

static int nn_matmul(lua_State *L)
{
	const char *op = "matmul";
	sd_tensor *x = sdl_checktensor(L, 1), *y = sdl_checktensor(L, 2);
	if (!is_floatdt(x->dtype) || !is_floatdt(y->dtype))
		return nn_error(L, "matmul: float tensors expected, got %s %s and %s %s",
		                  sd_dtype_name(x->dtype), SD_SHAPE_STR(x), sd_dtype_name(y->dtype), SD_SHAPE_STR(y));
	if (x->ndim == 0 || y->ndim == 0)
		return nn_error(L, "matmul: both arguments need at least 1 dimension, got %s and %s",
		                  SD_SHAPE_STR(x), SD_SHAPE_STR(y));
	/* 2-D (or more) views of the operands: 1-D x is (1, k), 1-D y is (k, 1) */
	sd_tensor xa = *x, ya = *y;
	if (x->ndim == 1) {
		xa.ndim = 2;
		xa.shape[0] = 1; xa.shape[1] = x->shape[0];
		xa.stride[0] = 1; xa.stride[1] = x->stride[0];
	}
	if (y->ndim == 1) {
		ya.ndim = 2;
		ya.shape[0] = y->shape[0]; ya.shape[1] = 1;
		ya.stride[0] = y->stride[0]; ya.stride[1] = 1;
	}
	int64_t n = xa.shape[xa.ndim - 2], k = xa.shape[xa.ndim - 1];
	int64_t k2 = ya.shape[ya.ndim - 2], m = ya.shape[ya.ndim - 1];
	if (k != k2)
		return nn_error(L, "matmul: shapes %s and %s cannot be multiplied (%lld != %lld)",
		                  SD_SHAPE_STR(x), SD_SHAPE_STR(y), (long long)k, (long long)k2);
	int nbx = xa.ndim - 2, nby = ya.ndim - 2, nb;
	int64_t bs[SD_MAX_DIMS];
	if (sd_broadcast_shape(nbx, xa.shape, nby, ya.shape, &nb, bs) != 0)
		return nn_error(L, "matmul: batch dimensions of %s and %s do not broadcast",
		                  SD_SHAPE_STR(x), SD_SHAPE_STR(y));
	int64_t batch = 1;
	for (int i = 0; i < nb; i++) batch *= bs[i];

	/* output: batch dims, then n (unless x was 1-D), then m (unless y was 1-D) */
	int64_t oshape[SD_MAX_DIMS];
	int ond = 0;
	for (int i = 0; i < nb; i++) oshape[ond++] = bs[i];
	if (x->ndim > 1) oshape[ond++] = n;
	if (y->ndim > 1) oshape[ond++] = m;

	/* half x: to f32 (activations); y may stay half when it is a single matrix (a weight) */
	sd_tensor *xp = &xa, *yp = &ya;
	if (xa.dtype != SD_F32) xp = as_f32(L, op, &xa, 0);
	int tx, ty;
	int64_t ldx, ldy;
	if (!blas_layout(n, k, xp->stride[xp->ndim - 2], xp->stride[xp->ndim - 1], &tx, &ldx)) {
		xp = contig(L, op, xp);
		blas_layout(n, k, xp->stride[xp->ndim - 2], xp->stride[xp->ndim - 1], &tx, &ldx);
	}
	/* batch strides aligned to bs, 0 where broadcast */
	int64_t sxb[SD_MAX_DIMS] = {0}, syb[SD_MAX_DIMS] = {0};
	int64_t ybatch = 1;
	for (int i = 0; i < nby; i++) ybatch *= ya.shape[i];

	if (ya.dtype != SD_F32 && ybatch != 1) yp = as_f32(L, op, &ya, 0);
	if (!blas_layout(k, m, yp->stride[yp->ndim - 2], yp->stride[yp->ndim - 1], &ty, &ldy)) {
		yp = contig(L, op, yp);
		blas_layout(k, m, yp->stride[yp->ndim - 2], yp->stride[yp->ndim - 1], &ty, &ldy);
	}
	for (int i = 0; i < nbx; i++) sxb[nb - nbx + i] = xp->shape[i] == 1 ? 0 : xp->stride[i];
	for (int i = 0; i < nby; i++) syb[nb - nby + i] = yp->shape[i] == 1 ? 0 : yp->stride[i];

	sd_tensor *out = new_f32(L, op, ond, oshape);
	float *c = sd_tensor_data(out);
	if (batch == 0 || n == 0 || m == 0) return 1;
	const void *xd = sd_tensor_data(xp), *yd = sd_tensor_data(yp);

	int64_t sx, sy;
	int xcol = collapse_batch(nb, bs, sxb, &sx), ycol = collapse_batch(nb, bs, syb, &sy);
	/* y one matrix, x's batch rows evenly spaced: one product of (batch*n) rows */
	if (ybatch == 1 && xcol && !tx && (batch == 1 || n == 1 ? 1 : sx == n * ldx)) {
		int64_t ld = ldx;
		if (batch > 1 && n == 1) ld = sx;
		if (batch > 1 && ld < (k > 1 ? k : 1)) goto batched; /* overlapping rows (stride 0) */
		if (sd_gemm_ex(0, ty, batch * n, m, k, 1.0f, xd, SD_F32, ld, yd, yp->dtype, ldy, 0.0f, c, m))
			return sdl_error(L, op);
		return 1;
	}
batched:
	if (yp->dtype != SD_F32) { /* the batched products need f32 */
		yp = as_f32(L, op, yp, 1);
		yd = sd_tensor_data(yp);
		ty = 0;
		ldy = m > 1 ? m : 1;
		for (int i = 0; i < nby; i++) syb[nb - nby + i] = yp->shape[i] == 1 ? 0 : yp->stride[i];
		ycol = collapse_batch(nb, bs, syb, &sy);
	}
	if (xcol && ycol) {
		if (sd_gemm_batched(tx, ty, n, m, k, 1.0f, xd, ldx, sx, yd, ldy, sy, 0.0f, c, m, n * m, batch))
			return sdl_error(L, op);
		return 1;
	}
	/* general broadcast: walk the batch index */
	for (int64_t bi = 0; bi < batch; bi++) {
		int64_t r = bi, ox = 0, oy = 0;
		for (int i = nb - 1; i >= 0; i--) {
			int64_t ii = r % bs[i];
			r /= bs[i];
			ox += ii * sxb[i];
			oy += ii * syb[i];
		}
		if (sd_sgemm(tx, ty, n, m, k, 1.0f, (const float *)xd + ox, ldx, (const float *)yd + oy, ldy,
		             0.0f, c + bi * n * m, m))
			return sdl_error(L, op);
	}
	return 1;
}

/* ---- linear ---- */

static int nn_linear(lua_State *L)
{
	const char *op = "linear";
	sd_tensor *x = sdl_checktensor(L, 1), *w = sdl_checktensor(L, 2);
	sd_tensor *b = lua_isnoneornil(L, 3) ? NULL : sdl_checktensor(L, 3);
	check_float(L, op, "input", x);
	check_float(L, op, "weight", w);
	if (x->ndim < 1) return nn_error(L, "linear: input must have at least 1 dimension, got %s", SD_SHAPE_STR(x));
	if (w->ndim != 2) return nn_error(L, "linear: weight must be 2-D (out, in), got %s", SD_SHAPE_STR(w));
	int64_t in = x->shape[x->ndim - 1], outf = w->shape[0];
	if (w->shape[1] != in)
		return nn_error(L, "linear: input %s has %lld features but weight %s expects %lld",
		                  SD_SHAPE_STR(x), (long long)in, SD_SHAPE_STR(w), (long long)w->shape[1]);
	if (b) {
		check_float(L, op, "bias", b);
		if (b->ndim != 1 || b->shape[0] != outf)
			return nn_error(L, "linear: bias %s does not match weight %s (expected (%lld,))",
			                  SD_SHAPE_STR(b), SD_SHAPE_STR(w), (long long)outf);
		b = as_f32(L, op, b, 1);
	}
	/* weight rows contiguous */
	int64_t ldw = w->stride[0];
	if (!(in <= 1 || w->stride[1] == 1) || (outf > 1 && ldw < (in > 1 ? in : 1))) {
		w = contig(L, op, w);
		ldw = in > 1 ? in : 1;
	}
	if (outf <= 1) ldw = in > 1 ? in : 1;
	/* input rows: all leading dims folded into M rows with one stride */
	int64_t rows = 1;
	for (int i = 0; i < x->ndim - 1; i++) rows *= x->shape[i];
	x = as_f32(L, op, x, 0);
	int64_t ldx;
	{
		int64_t lead[SD_MAX_DIMS], st[SD_MAX_DIMS], s;
		int nl = x->ndim - 1;
		for (int i = 0; i < nl; i++) { lead[i] = x->shape[i]; st[i] = x->stride[i]; }
		int ok = (in <= 1 || x->stride[x->ndim - 1] == 1) && collapse_batch(nl, lead, st, &s);
		ldx = rows <= 1 ? (in > 1 ? in : 1) : s;
		if (!ok || ldx < (in > 1 ? in : 1)) {
			x = contig(L, op, x);
			ldx = in > 1 ? in : 1;
		}
	}
	int64_t oshape[SD_MAX_DIMS];
	for (int i = 0; i < x->ndim - 1; i++) oshape[i] = x->shape[i];
	oshape[x->ndim - 1] = outf;
	sd_tensor *out = new_f32(L, op, x->ndim, oshape);
	if (rows == 0 || outf == 0) return 1;
	if (sd_linear(rows, outf, in, sd_tensor_data(x), ldx, sd_tensor_data(w), w->dtype, ldw,
	              b ? sd_tensor_data(b) : NULL, sd_tensor_data(out), outf))
		return sdl_error(L, op);
	return 1;
}

/* ---- conv2d ---- */

/* opts.<field>: a number or {h, w}; defaults to def */
static void pair_opt(lua_State *L, int idx, const char *field, int64_t def, int64_t *h, int64_t *w)
{
	*h = *w = def;
	if (lua_isnoneornil(L, idx)) return;
	int t = lua_getfield(L, idx, field);
	if (t == LUA_TNIL) {
		lua_pop(L, 1);
		return;
	}
	if (t == LUA_TTABLE) {
		if (luaL_len(L, -1) != 2) nn_error(L, "conv2d: option '%s' must be a number or {h, w}", field);
		int64_t v[2];
		for (int i = 0; i < 2; i++) {
			lua_geti(L, -1, i + 1);
			int isnum;
			v[i] = lua_tointegerx(L, -1, &isnum);
			if (!isnum || lua_type(L, -1) != LUA_TNUMBER) nn_error(L, "conv2d: option '%s' must be integers {h, w}", field);
			lua_pop(L, 1);
		}
		*h = v[0];
		*w = v[1];
	} else {
		int isnum;
		lua_Integer v = lua_tointegerx(L, -1, &isnum);
		if (!isnum || t != LUA_TNUMBER) nn_error(L, "conv2d: option '%s' must be an integer or {h, w}, got %s", field, luaL_typename(L, -1));
		*h = *w = v;
	}
	lua_pop(L, 1);
}

static int nn_conv2d(lua_State *L)
{
	const char *op = "conv2d";
	sd_tensor *x = sdl_checktensor(L, 1), *w = sdl_checktensor(L, 2), *b = NULL;
	int oi = 3;
	if (sdl_totensor(L, 3)) {
		b = sdl_checktensor(L, 3);
		oi = 4;
	} else if (lua_isnil(L, 3)) {
		oi = 4;
	} else if (!lua_isnone(L, 3) && !lua_istable(L, 3)) {
		return nn_error(L, "conv2d: argument 3 must be a bias tensor, nil or an options table, got %s",
		                  luaL_typename(L, 3));
	}
	if (!lua_isnoneornil(L, oi) && !lua_istable(L, oi))
		return nn_error(L, "conv2d: options must be a table, got %s", luaL_typename(L, oi));
	check_float(L, op, "input", x);
	check_float(L, op, "weight", w);
	if (x->ndim != 4 && x->ndim != 3)
		return nn_error(L, "conv2d: input must be (N, C, H, W) or (C, H, W), got %s", SD_SHAPE_STR(x));
	if (w->ndim != 4)
		return nn_error(L, "conv2d: weight must be (O, C/groups, kh, kw), got %s", SD_SHAPE_STR(w));
	sd_conv2d_params p;
	pair_opt(L, oi, "stride", 1, &p.stride_h, &p.stride_w);
	pair_opt(L, oi, "padding", 0, &p.pad_h, &p.pad_w);
	pair_opt(L, oi, "dilation", 1, &p.dil_h, &p.dil_w);
	p.groups = sdl_optfield_int(L, oi, "groups", 1);
	if (p.stride_h < 1 || p.stride_w < 1)
		return nn_error(L, "conv2d: stride must be positive, got {%lld, %lld}", (long long)p.stride_h, (long long)p.stride_w);
	if (p.dil_h < 1 || p.dil_w < 1)
		return nn_error(L, "conv2d: dilation must be positive, got {%lld, %lld}", (long long)p.dil_h, (long long)p.dil_w);
	if (p.pad_h < 0 || p.pad_w < 0 || p.pad_h > (1 << 20) || p.pad_w > (1 << 20))
		return nn_error(L, "conv2d: padding must be between 0 and 2^20, got {%lld, %lld}", (long long)p.pad_h, (long long)p.pad_w);
	if (p.groups < 1) return nn_error(L, "conv2d: groups must be positive, got %lld", (long long)p.groups);
	int batched = x->ndim == 4;
	int64_t n = batched ? x->shape[0] : 1, c = x->shape[batched], h = x->shape[batched + 1], wd = x->shape[batched + 2];
	int64_t o = w->shape[0], kh = w->shape[2], kw = w->shape[3];
	if (c % p.groups || o % p.groups)
		return nn_error(L, "conv2d: groups %lld must divide the input channels of %s and the output channels of weight %s",
		                  (long long)p.groups, SD_SHAPE_STR(x), SD_SHAPE_STR(w));
	if (w->shape[1] * p.groups != c) {
		if (p.groups == 1)
			return nn_error(L, "conv2d: input %s has %lld channels but weight %s expects %lld",
			                  SD_SHAPE_STR(x), (long long)c, SD_SHAPE_STR(w), (long long)w->shape[1]);
		return nn_error(L, "conv2d: input %s has %lld channels but weight %s expects %lld (%lld per group x %lld groups)",
		                  SD_SHAPE_STR(x), (long long)c, SD_SHAPE_STR(w), (long long)(w->shape[1] * p.groups),
		                  (long long)w->shape[1], (long long)p.groups);
	}
	if (o == 0 || kh == 0 || kw == 0 || c == 0)
		return nn_error(L, "conv2d: empty weight %s or input %s", SD_SHAPE_STR(w), SD_SHAPE_STR(x));
	if (b) {
		check_float(L, op, "bias", b);
		if (b->ndim != 1 || b->shape[0] != o)
			return nn_error(L, "conv2d: bias %s does not match weight %s (expected (%lld,))", SD_SHAPE_STR(b),
			                  SD_SHAPE_STR(w), (long long)o);
		b = as_f32(L, op, b, 1);
	}
	int64_t oh = sd_conv2d_outsize(h, kh, p.stride_h, p.pad_h, p.dil_h);
	int64_t ow = sd_conv2d_outsize(wd, kw, p.stride_w, p.pad_w, p.dil_w);
	if (oh <= 0 || ow <= 0)
		return nn_error(L, "conv2d: input %s is too small for weight %s with padding {%lld, %lld} and dilation {%lld, %lld}",
		                  SD_SHAPE_STR(x), SD_SHAPE_STR(w), (long long)p.pad_h, (long long)p.pad_w,
		                  (long long)p.dil_h, (long long)p.dil_w);
	x = as_f32(L, op, x, 1);
	w = contig(L, op, w);
	int64_t oshape[4] = {n, o, oh, ow};
	sd_tensor *out = new_f32(L, op, batched ? 4 : 3, batched ? oshape : oshape + 1);
	if (n == 0) return 1;
	if (sd_conv2d(sd_tensor_data(x), n, c, h, wd, sd_tensor_data(w), w->dtype, o, kh, kw,
	              b ? sd_tensor_data(b) : NULL, &p, sd_tensor_data(out)))
		return sdl_error(L, op);
	return 1;
}

/* ---- attention ---- */

static sd_tensor *attn_arg(lua_State *L, int idx, const char *name)
{
	sd_tensor *t = sdl_checktensor(L, idx);
	if (!is_floatdt(t->dtype))
		nn_error(L, "attention: %s must be a float tensor, got %s %s", name, sd_dtype_name(t->dtype), SD_SHAPE_STR(t));
	if (t->ndim != 4)
		nn_error(L, "attention: %s must be 4-D (B, H, tokens, dim), got %s", name, SD_SHAPE_STR(t));
	return t;
}

/* f32 with a unit last stride and rows that do not overlap */
static sd_tensor *attn_ready(lua_State *L, sd_tensor *t)
{
	t = as_f32(L, "attention", t, 0);
	int64_t d = t->shape[3];
	if ((d > 1 && t->stride[3] != 1) || t->stride[0] < 0 || t->stride[1] < 0 || t->stride[2] < 0) t = contig(L, "attention", t);
	return t;
}

static int nn_attention(lua_State *L)
{
	sd_tensor *q = attn_arg(L, 1, "q"), *k = attn_arg(L, 2, "k"), *v = attn_arg(L, 3, "v");
	if (!lua_isnoneornil(L, 4) && !lua_istable(L, 4))
		return nn_error(L, "attention: options must be a table, got %s", luaL_typename(L, 4));
	int64_t B = q->shape[0], H = q->shape[1], N = q->shape[2], d = q->shape[3];
	int64_t M = k->shape[2], dv = v->shape[3];
	for (int i = 0; i < 2; i++) {
		if ((k->shape[i] != q->shape[i] && k->shape[i] != 1) || (v->shape[i] != q->shape[i] && v->shape[i] != 1))
			return nn_error(L, "attention: q %s, k %s and v %s must agree in batch and heads",
			                  SD_SHAPE_STR(q), SD_SHAPE_STR(k), SD_SHAPE_STR(v));
	}
	if (k->shape[3] != d)
		return nn_error(L, "attention: q %s and k %s differ in head dimension (%lld != %lld)",
		                  SD_SHAPE_STR(q), SD_SHAPE_STR(k), (long long)d, (long long)k->shape[3]);
	if (v->shape[2] != M)
		return nn_error(L, "attention: k %s and v %s differ in number of keys (%lld != %lld)",
		                  SD_SHAPE_STR(k), SD_SHAPE_STR(v), (long long)M, (long long)v->shape[2]);
	if (d == 0 || dv == 0)
		return nn_error(L, "attention: empty head dimension in q %s, k %s, v %s", SD_SHAPE_STR(q),
		                  SD_SHAPE_STR(k), SD_SHAPE_STR(v));
	int causal = sdl_optfield_bool(L, 4, "causal", 0);
	double scale = sdl_optfield_num(L, 4, "scale", 1.0 / sqrt((double)d));
	if (!isfinite(scale)) return nn_error(L, "attention: scale must be finite, got %f", scale);
	q = attn_ready(L, q);
	k = attn_ready(L, k);
	v = attn_ready(L, v);
	int64_t qs[3], ks[3], vs[3];
	for (int i = 0; i < 3; i++) {
		qs[i] = q->shape[i] == 1 ? 0 : q->stride[i];
		ks[i] = k->shape[i] == 1 ? 0 : k->stride[i];
		vs[i] = v->shape[i] == 1 ? 0 : v->stride[i];
	}
	int64_t oshape[4] = {B, N, H, dv};
	sd_tensor *buf = new_f32(L, "attention", 4, oshape);
	if (sd_attention(B, H, N, M, d, dv, sd_tensor_data(q), qs, sd_tensor_data(k), ks, sd_tensor_data(v), vs,
	                 (float)scale, causal, sd_tensor_data(buf)))
		return sdl_error(L, "attention");
	sd_tensor *out = sdl_newtensor(L);
	if (sd_tensor_transpose(buf, out, 1, 2) != 0) return sdl_error(L, "attention");
	sd_tensor_release(buf); /* the view holds the storage now; the buffer's own userdata must not
	                         * keep it alive until the garbage collector runs */
	return 1;
}

/* sd.precision([name]): sets the matmul precision ("f32" or "bf16") when given; returns the
 * setting in effect and whether the bf16 kernels run (false on a CPU without AVX512_BF16). */
static int nn_precision(lua_State *L)
{
	if (!lua_isnoneornil(L, 1)) {
		const char *name = luaL_checkstring(L, 1);
		sd_precision p;
		if (sd_precision_parse(name, &p) != 0)
			return luaL_error(L, "precision: expected \"f32\" or \"bf16\", got \"%s\"", name);
		sd_set_precision(p);
	}
	lua_pushstring(L, sd_precision_name(sd_get_precision()));
	lua_pushboolean(L, sd_gemm_bf16_enabled());
	return 2;
}

void sdl_open_nn(lua_State *L)
{
	static const luaL_Reg core_fns[] = {
		{"precision", nn_precision},
		{NULL, NULL},
	};
	sdl_addcore(L, NULL, core_fns);
	static const luaL_Reg methods[] = {
		{"matmul", nn_matmul},
		{"linear", nn_linear},
		{"conv2d", nn_conv2d},
		{NULL, NULL},
	};
	static const luaL_Reg funcs[] = {
		{"matmul", nn_matmul},
		{"linear", nn_linear},
		{"conv2d", nn_conv2d},
		{"attention", nn_attention},
		{NULL, NULL},
	};
	sdl_addmethods(L, methods);
	sdl_addfuncs(L, funcs);
}
