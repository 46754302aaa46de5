/* The Lua binding of the pointwise, normalising, reducing and resampling ops (kernels/elementwise,
 * activation, norm, reduce, resample, index). Float ops take f32 tensors and return new
 * contiguous f32 tensors; every error names the op. Dimensions are 1-based (negative from the end). */
#include <math.h>
#include <string.h>
#include "activation.h"
#include "elementwise.h"
#include "index.h"
#include "lsd.h"
#include "norm.h"
#include "reduce.h"
#include "resample.h"
#include "sd_error.h"

/* the tensor at idx, required to be f32; the error names the op */
static sd_tensor *check_f32(lua_State *L, int idx, const char *op)
{
	sd_tensor *t = sdl_checktensor(L, idx);
	if (t->dtype != SD_F32)
		luaL_error(L, "%s: expected an f32 tensor, got %s %s", op, sd_dtype_name(t->dtype), SD_SHAPE_STR(t));
	return t;
}

/* an optional tensor argument: nil/none gives NULL */
static sd_tensor *opt_tensor(lua_State *L, int idx, const char *op, const char *what)
{
	if (lua_isnoneornil(L, idx)) return NULL;
	sd_tensor *t = sdl_totensor(L, idx);
	if (!t) luaL_error(L, "%s: %s must be a tensor or nil, got %s", op, what, luaL_typename(L, idx));
	if (!t->storage) luaL_error(L, "%s: %s has been released", op, what);
	return t;
}

/* ---- elementwise arithmetic ---- */

static int binary(lua_State *L, sd_binop op, const char *name, int reversed)
{
	sd_tensor *a = check_f32(L, 1, name);
	if (lua_type(L, 2) == LUA_TNUMBER) {
		float s = (float)lua_tonumber(L, 2);
		sd_tensor *r = sdl_newtensor(L);
		if (sd_binary_scalar(op, a, s, reversed, r) != 0) return sdl_error(L, name);
		return 1;
	}
	sd_tensor *b = sdl_totensor(L, 2);
	if (!b) return luaL_error(L, "%s: the operand must be a tensor or a number, got %s", name, luaL_typename(L, 2));
	if (!b->storage) return luaL_error(L, "%s: the operand has been released", name);
	if (b->dtype != SD_F32)
		return luaL_error(L, "%s: expected an f32 tensor, got %s %s", name, sd_dtype_name(b->dtype), SD_SHAPE_STR(b));
	sd_tensor *r = sdl_newtensor(L);
	if (sd_binary(op, reversed ? b : a, reversed ? a : b, r) != 0) return sdl_error(L, name);
	return 1;
}

static int m_add(lua_State *L) { return binary(L, SD_BIN_ADD, "add", 0); }
static int m_sub(lua_State *L) { return binary(L, SD_BIN_SUB, "sub", 0); }
static int m_mul(lua_State *L) { return binary(L, SD_BIN_MUL, "mul", 0); }
static int m_div(lua_State *L) { return binary(L, SD_BIN_DIV, "div", 0); }
static int m_pow(lua_State *L) { return binary(L, SD_BIN_POW, "pow", 0); }
static int m_rsub(lua_State *L) { return binary(L, SD_BIN_SUB, "rsub", 1); }
static int m_rdiv(lua_State *L) { return binary(L, SD_BIN_DIV, "rdiv", 1); }
static int m_rpow(lua_State *L) { return binary(L, SD_BIN_POW, "rpow", 1); }

static int binary_(lua_State *L, sd_binop op, const char *name)
{
	sd_tensor *a = check_f32(L, 1, name);
	int rc;
	if (lua_type(L, 2) == LUA_TNUMBER) {
		rc = sd_binary_scalar_(op, a, (float)lua_tonumber(L, 2));
	} else {
		sd_tensor *b = sdl_totensor(L, 2);
		if (!b) return luaL_error(L, "%s: the operand must be a tensor or a number, got %s", name, luaL_typename(L, 2));
		if (!b->storage) return luaL_error(L, "%s: the operand has been released", name);
		rc = sd_binary_(op, a, b);
	}
	if (rc != 0) return sdl_error(L, name);
	lua_settop(L, 1);
	return 1;
}

static int m_add_(lua_State *L) { return binary_(L, SD_BIN_ADD, "add_"); }
static int m_sub_(lua_State *L) { return binary_(L, SD_BIN_SUB, "sub_"); }
static int m_mul_(lua_State *L) { return binary_(L, SD_BIN_MUL, "mul_"); }
static int m_div_(lua_State *L) { return binary_(L, SD_BIN_DIV, "div_"); }

static int m_clamp(lua_State *L)
{
	sd_tensor *x = check_f32(L, 1, "clamp");
	float lo = lua_isnoneornil(L, 2) ? NAN : (float)luaL_checknumber(L, 2);
	float hi = lua_isnoneornil(L, 3) ? NAN : (float)luaL_checknumber(L, 3);
	sd_tensor *r = sdl_newtensor(L);
	if (sd_clamp(x, lo, hi, r) != 0) return sdl_error(L, "clamp");
	return 1;
}

/* T.where(cond, a, b): a and b tensors or numbers */
static int t_where(lua_State *L)
{
	sd_tensor *c = sdl_checktensor(L, 1);
	sd_tensor *ab[2] = {NULL, NULL};
	float sv[2] = {0, 0};
	for (int k = 0; k < 2; k++) {
		int idx = 2 + k;
		if (lua_type(L, idx) == LUA_TNUMBER) {
			sv[k] = (float)lua_tonumber(L, idx);
		} else {
			ab[k] = sdl_totensor(L, idx);
			if (!ab[k]) return luaL_error(L, "where: argument %d must be a tensor or a number, got %s", idx, luaL_typename(L, idx));
			if (!ab[k]->storage) return luaL_error(L, "where: argument %d has been released", idx);
		}
	}
	sd_tensor *r = sdl_newtensor(L);
	if (sd_where(c, ab[0], sv[0], ab[1], sv[1], r) != 0) return sdl_error(L, "where");
	return 1;
}

/* ---- activations ---- */

static int unary(lua_State *L, sd_act op)
{
	const char *name = sd_act_name(op);
	sd_tensor *x = check_f32(L, 1, name);
	sd_tensor *r = sdl_newtensor(L);
	if (sd_activation(op, x, r) != 0) return sdl_error(L, name);
	return 1;
}

static int m_neg(lua_State *L) { return unary(L, SD_ACT_NEG); }
static int m_exp(lua_State *L) { return unary(L, SD_ACT_EXP); }
static int m_log(lua_State *L) { return unary(L, SD_ACT_LOG); }
static int m_sqrt(lua_State *L) { return unary(L, SD_ACT_SQRT); }
static int m_rsqrt(lua_State *L) { return unary(L, SD_ACT_RSQRT); }
static int m_abs(lua_State *L) { return unary(L, SD_ACT_ABS); }
static int m_sin(lua_State *L) { return unary(L, SD_ACT_SIN); }
static int m_cos(lua_State *L) { return unary(L, SD_ACT_COS); }
static int m_tanh(lua_State *L) { return unary(L, SD_ACT_TANH); }
static int m_sigmoid(lua_State *L) { return unary(L, SD_ACT_SIGMOID); }
static int m_silu(lua_State *L) { return unary(L, SD_ACT_SILU); }
static int m_gelu(lua_State *L) { return unary(L, SD_ACT_GELU); }
static int m_gelu_tanh(lua_State *L) { return unary(L, SD_ACT_GELU_TANH); }
static int m_quick_gelu(lua_State *L) { return unary(L, SD_ACT_QUICK_GELU); }

static int m_geglu(lua_State *L)
{
	sd_tensor *x = check_f32(L, 1, "geglu");
	sd_tensor *r = sdl_newtensor(L);
	if (sd_geglu(x, r) != 0) return sdl_error(L, "geglu");
	return 1;
}

/* x:add_silu(y) = silu(x + y), fused when the shapes are equal and both are contiguous */
static int m_add_silu(lua_State *L)
{
	sd_tensor *a = check_f32(L, 1, "add_silu");
	sd_tensor *b = check_f32(L, 2, "add_silu");
	sd_tensor *r = sdl_newtensor(L);
	if (sd_tensor_same_shape(a, b) && sd_tensor_is_contiguous(a) && sd_tensor_is_contiguous(b)) {
		if (sd_tensor_new(r, SD_F32, a->ndim, a->shape) != 0) return sdl_error(L, "add_silu");
		sd_add_silu_f32(sd_tensor_data(a), sd_tensor_data(b), sd_tensor_data(r), (size_t)sd_tensor_numel(a));
		return 1;
	}
	if (sd_binary(SD_BIN_ADD, a, b, r) != 0) return sdl_error(L, "add_silu");
	float *p = sd_tensor_data(r);
	sd_act_f32(SD_ACT_SILU, p, p, (size_t)sd_tensor_numel(r));
	return 1;
}

/* ---- reductions ---- */

static int reduce(lua_State *L, sd_redop op)
{
	const char *name = sd_redop_name(op);
	sd_tensor *x = check_f32(L, 1, name);
	int unbiased = 1;
	if (op == SD_RED_VAR && !lua_isnoneornil(L, 4)) {
		luaL_checktype(L, 4, LUA_TBOOLEAN);
		unbiased = lua_toboolean(L, 4);
	}
	sd_tensor *r;
	if (lua_isnoneornil(L, 2)) {
		r = sdl_newtensor(L);
		if (sd_reduce_all(op, x, unbiased, r) != 0) return sdl_error(L, name);
		return 1;
	}
	int dim = sdl_checkdim(L, 2, x->ndim ? x->ndim : 1);
	int keepdim = lua_toboolean(L, 3);
	r = sdl_newtensor(L);
	if (sd_reduce(op, x, dim, keepdim, unbiased, r) != 0) return sdl_error(L, name);
	return 1;
}

static int m_sum(lua_State *L) { return reduce(L, SD_RED_SUM); }
static int m_mean(lua_State *L) { return reduce(L, SD_RED_MEAN); }
static int m_var(lua_State *L) { return reduce(L, SD_RED_VAR); }
static int m_max(lua_State *L) { return reduce(L, SD_RED_MAX); }
static int m_min(lua_State *L) { return reduce(L, SD_RED_MIN); }

/* 1-based indices (i64), as Lua indexes */
static int argext(lua_State *L, int want_min)
{
	const char *name = want_min ? "argmin" : "argmax";
	sd_tensor *x = check_f32(L, 1, name);
	int all = lua_isnoneornil(L, 2), keepdim = lua_toboolean(L, 3);
	int dim = all ? 0 : sdl_checkdim(L, 2, x->ndim ? x->ndim : 1);
	lua_settop(L, 3);
	sd_tensor *r = sdl_newtensor(L);
	int rc = all ? sd_argmax_all(x, want_min, r) : sd_argmax(x, dim, keepdim, want_min, r);
	if (rc != 0) return sdl_error(L, name);
	int64_t *p = sd_tensor_data(r), n = sd_tensor_numel(r);
	for (int64_t i = 0; i < n; i++) p[i] += 1;
	return 1;
}

static int m_argmax(lua_State *L) { return argext(L, 0); }
static int m_argmin(lua_State *L) { return argext(L, 1); }

static int m_cumprod(lua_State *L)
{
	sd_tensor *x = check_f32(L, 1, "cumprod");
	int dim = sdl_checkdim(L, 2, x->ndim ? x->ndim : 1);
	sd_tensor *r = sdl_newtensor(L);
	if (sd_cumprod(x, dim, r) != 0) return sdl_error(L, "cumprod");
	return 1;
}

/* ---- normalisation ---- */

static int m_softmax(lua_State *L)
{
	sd_tensor *x = check_f32(L, 1, "softmax");
	int nd = x->ndim ? x->ndim : 1;
	int dim = sdl_optdim(L, 2, nd, nd - 1);
	sd_tensor *r = sdl_newtensor(L);
	if (sd_softmax(x, dim, r) != 0) return sdl_error(L, "softmax");
	return 1;
}

/* x:group_norm(groups, weight, bias, eps [, silu]) */
static int m_group_norm(lua_State *L)
{
	sd_tensor *x = check_f32(L, 1, "group_norm");
	lua_Integer groups = luaL_checkinteger(L, 2);
	sd_tensor *w = opt_tensor(L, 3, "group_norm", "weight");
	sd_tensor *b = opt_tensor(L, 4, "group_norm", "bias");
	float eps = (float)luaL_optnumber(L, 5, 1e-5);
	int silu = lua_toboolean(L, 6);
	sd_tensor *r = sdl_newtensor(L);
	if (sd_group_norm(x, (int64_t)groups, w, b, eps, silu, r) != 0) return sdl_error(L, "group_norm");
	return 1;
}

/* x:layer_norm(weight, bias, eps) over the last dim */
static int m_layer_norm(lua_State *L)
{
	sd_tensor *x = check_f32(L, 1, "layer_norm");
	sd_tensor *w = opt_tensor(L, 2, "layer_norm", "weight");
	sd_tensor *b = opt_tensor(L, 3, "layer_norm", "bias");
	float eps = (float)luaL_optnumber(L, 4, 1e-5);
	sd_tensor *r = sdl_newtensor(L);
	if (sd_layer_norm(x, w, b, eps, r) != 0) return sdl_error(L, "layer_norm");
	return 1;
}

/* ---- resampling ---- */

static int m_upsample_nearest(lua_State *L)
{
	sd_tensor *x = check_f32(L, 1, "upsample_nearest");
	lua_Number s = luaL_optnumber(L, 2, 2);
	if (!(s > 0)) return luaL_error(L, "upsample_nearest: scale must be positive, got %f", (double)s);
	sd_tensor *r = sdl_newtensor(L);
	if (sd_interpolate(x, SD_RESAMPLE_NEAREST, 0, 0, s, s, r) != 0) return sdl_error(L, "upsample_nearest");
	return 1;
}

/* a number, or a table {h, w} of numbers, from option field f of the table at idx */
static int pair_field(lua_State *L, int idx, const char *f, double v[2])
{
	int t = lua_getfield(L, idx, f);
	if (t == LUA_TNIL) { lua_pop(L, 1); return 0; }
	if (t == LUA_TNUMBER) {
		v[0] = v[1] = lua_tonumber(L, -1);
	} else if (t == LUA_TTABLE) {
		if (luaL_len(L, -1) != 2) luaL_error(L, "interpolate: option '%s' must have 2 entries {h, w}", f);
		for (int i = 0; i < 2; i++) {
			lua_geti(L, -1, i + 1);
			int isnum;
			v[i] = lua_tonumberx(L, -1, &isnum);
			if (!isnum) luaL_error(L, "interpolate: option '%s' entries must be numbers, got %s", f, luaL_typename(L, -1));
			lua_pop(L, 1);
		}
	} else {
		luaL_error(L, "interpolate: option '%s' must be a number or {h, w}, got %s", f, luaL_typename(L, -1));
	}
	lua_pop(L, 1);
	return 1;
}

/* x:interpolate{size={h,w} | scale=s, mode="nearest"|"bilinear"} */
static int m_interpolate(lua_State *L)
{
	sd_tensor *x = check_f32(L, 1, "interpolate");
	luaL_checktype(L, 2, LUA_TTABLE);
	double size[2] = {0, 0}, scale[2] = {0, 0};
	int has_size = pair_field(L, 2, "size", size);
	int has_scale = pair_field(L, 2, "scale", scale);
	if (!has_scale) has_scale = pair_field(L, 2, "scale_factor", scale);
	if (has_size == has_scale) return luaL_error(L, "interpolate: give exactly one of size= and scale=");
	sd_resample_mode mode = SD_RESAMPLE_NEAREST;
	if (lua_getfield(L, 2, "mode") != LUA_TNIL) {
		const char *m = lua_tostring(L, -1);
		if (m && strcmp(m, "nearest") == 0) mode = SD_RESAMPLE_NEAREST;
		else if (m && strcmp(m, "bilinear") == 0) mode = SD_RESAMPLE_BILINEAR;
		else return luaL_error(L, "interpolate: unknown mode '%s' (nearest or bilinear)", m ? m : luaL_typename(L, -1));
	}
	lua_pop(L, 1);
	if (sdl_optfield_bool(L, 2, "align_corners", 0))
		return luaL_error(L, "interpolate: align_corners=true is not supported");
	int64_t oh = 0, ow = 0;
	if (has_size) {
		for (int i = 0; i < 2; i++)
			if (!(size[i] >= 1 && size[i] <= 1e9 && size[i] == floor(size[i])))
				return luaL_error(L, "interpolate: size entries must be positive integers, got %f", size[i]);
		oh = (int64_t)size[0];
		ow = (int64_t)size[1];
	} else {
		for (int i = 0; i < 2; i++)
			if (!(scale[i] > 0)) return luaL_error(L, "interpolate: scale must be positive, got %f", scale[i]);
	}
	sd_tensor *r = sdl_newtensor(L);
	if (sd_interpolate(x, mode, oh, ow, scale[0], scale[1], r) != 0) return sdl_error(L, "interpolate");
	return 1;
}

/* ---- joining, gathering, ranges ---- */

/* the tensors of the list at idx into a buffer kept alive as a userdata on the stack */
static const sd_tensor **list_arg(lua_State *L, int idx, const char *op, int *n)
{
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_Integer len = luaL_len(L, idx);
	if (len < 1) luaL_error(L, "%s: the list of tensors is empty", op);
	if (len > 1 << 20) luaL_error(L, "%s: too many tensors (%d)", op, (int)len);
	const sd_tensor **ts = lua_newuserdatauv(L, sizeof(sd_tensor *) * (size_t)len, 0);
	for (lua_Integer i = 1; i <= len; i++) {
		lua_geti(L, idx, i);
		sd_tensor *t = sdl_totensor(L, -1);
		if (!t) luaL_error(L, "%s: list entry %d is %s, not a tensor", op, (int)i, luaL_typename(L, -1));
		if (!t->storage) luaL_error(L, "%s: list entry %d has been released", op, (int)i);
		ts[i - 1] = t;
		lua_pop(L, 1); /* the list keeps it alive */
	}
	*n = (int)len;
	return ts;
}

static int t_cat(lua_State *L)
{
	int n;
	lua_settop(L, 2);
	const sd_tensor **ts = list_arg(L, 1, "cat", &n);
	int nd = ts[0]->ndim;
	if (nd == 0) return luaL_error(L, "cat: cannot join 0-dimensional tensors");
	int dim = sdl_optdim(L, 2, nd, 0);
	sd_tensor *r = sdl_newtensor(L);
	if (sd_cat(ts, n, dim, r) != 0) return sdl_error(L, "cat");
	return 1;
}

static int t_stack(lua_State *L)
{
	int n;
	lua_settop(L, 2);
	const sd_tensor **ts = list_arg(L, 1, "stack", &n);
	int dim = sdl_optdim(L, 2, ts[0]->ndim + 1, 0);
	sd_tensor *r = sdl_newtensor(L);
	if (sd_stack(ts, n, dim, r) != 0) return sdl_error(L, "stack");
	return 1;
}

static int t_embedding(lua_State *L)
{
	sd_tensor *w = sdl_checktensor(L, 1);
	sd_tensor *ids = sdl_checktensor(L, 2);
	sd_tensor *r = sdl_newtensor(L);
	if (sd_embedding(w, ids, r) != 0) return sdl_error(L, "embedding");
	return 1;
}

static int t_linspace(lua_State *L)
{
	lua_Number a = luaL_checknumber(L, 1), b = luaL_checknumber(L, 2);
	lua_Integer n = luaL_checkinteger(L, 3);
	if (n < 0 || n > ((lua_Integer)1 << 40)) return luaL_error(L, "linspace: number of steps %d is out of range", (int)n);
	sd_tensor *r = sdl_newtensor(L);
	if (sd_linspace(a, b, (int64_t)n, r) != 0) return sdl_error(L, "linspace");
	return 1;
}

/* T.arange([start,] stop [, step] [, dtype]) */
static int t_arange(lua_State *L)
{
	double v[3];
	int nnum = 0, top = lua_gettop(L);
	sd_dtype dt = SD_F32;
	for (int i = 1; i <= top; i++) {
		if (lua_type(L, i) == LUA_TNUMBER && nnum < 3) {
			v[nnum++] = lua_tonumber(L, i);
		} else if (lua_type(L, i) == LUA_TSTRING && i == top) {
			dt = sdl_checkdtype(L, i);
		} else if (!(lua_isnil(L, i) && i == top)) {
			return luaL_error(L, "arange: argument %d must be a number (or the dtype last), got %s", i, luaL_typename(L, i));
		}
	}
	double start = 0, stop, step = 1;
	if (nnum == 0) return luaL_error(L, "arange: expected (start, stop [, step] [, dtype]) or (stop)");
	if (nnum == 1) stop = v[0];
	else { start = v[0]; stop = v[1]; if (nnum == 3) step = v[2]; }
	sd_tensor *r = sdl_newtensor(L);
	if (sd_arange(start, stop, step, dt, r) != 0) return sdl_error(L, "arange");
	return 1;
}

static int t_cumprod(lua_State *L) { return m_cumprod(L); }

static const luaL_Reg methods[] = {
	{"add", m_add}, {"sub", m_sub}, {"mul", m_mul}, {"div", m_div}, {"pow", m_pow},
	{"rsub", m_rsub}, {"rdiv", m_rdiv}, {"rpow", m_rpow},
	{"add_", m_add_}, {"sub_", m_sub_}, {"mul_", m_mul_}, {"div_", m_div_}, {"clamp", m_clamp},
	{"neg", m_neg}, {"exp", m_exp}, {"log", m_log}, {"sqrt", m_sqrt}, {"rsqrt", m_rsqrt},
	{"abs", m_abs}, {"sin", m_sin}, {"cos", m_cos}, {"tanh", m_tanh}, {"sigmoid", m_sigmoid},
	{"silu", m_silu}, {"gelu", m_gelu}, {"gelu_tanh", m_gelu_tanh}, {"quick_gelu", m_quick_gelu},
	{"geglu", m_geglu}, {"add_silu", m_add_silu},
	{"sum", m_sum}, {"mean", m_mean}, {"var", m_var}, {"max", m_max}, {"min", m_min},
	{"argmax", m_argmax}, {"argmin", m_argmin}, {"cumprod", m_cumprod},
	{"softmax", m_softmax}, {"group_norm", m_group_norm}, {"layer_norm", m_layer_norm},
	{"upsample_nearest", m_upsample_nearest}, {"interpolate", m_interpolate},
	{NULL, NULL}};

static const luaL_Reg functions[] = {
	{"cat", t_cat}, {"stack", t_stack}, {"where", t_where}, {"embedding", t_embedding},
	{"linspace", t_linspace}, {"arange", t_arange}, {"cumprod", t_cumprod}, {NULL, NULL}};

void sdl_open_math(lua_State *L)
{
	sdl_addmethods(L, methods);
	sdl_addfuncs(L, functions);
}
