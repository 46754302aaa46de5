/* The tensor userdata: constructors, fields, views, copies, element access and metamethods.
 * Arithmetic metamethods forward to the methods add/sub/... that lmath.c registers. */
#include <math.h>
#include <string.h>
#include "lsd.h"
#include "sd_error.h"

/* ---- constructors ---------------------------------------------------------------------- */

static sd_tensor *new_filled(lua_State *L, const char *op, int ndim, const int64_t *shape, sd_dtype dt, int zero)
{
	sd_tensor *t = sdl_newtensor(L);
	if ((zero ? sd_tensor_zeros : sd_tensor_new)(t, dt, ndim, shape) != 0) sdl_error(L, op);
	return t;
}

static void fill(lua_State *L, sd_tensor *t, double v, const char *op)
{
	sd_tensor one;
	int64_t shape1[1] = {1};
	if (sd_tensor_new(&one, SD_F32, 0, shape1) != 0) sdl_error(L, op);
	if (t->dtype == SD_I64 || t->dtype == SD_I32) {
		/* integers beyond 2^24 must not pass through f32 */
		sd_tensor_release(&one);
		if (sd_tensor_new(&one, SD_I64, 0, shape1) != 0) sdl_error(L, op);
		*(int64_t *)sd_tensor_data(&one) = (int64_t)v;
	} else {
		*(float *)sd_tensor_data(&one) = (float)v;
	}
	int r = sd_tensor_copy(t, &one);
	sd_tensor_release(&one);
	if (r != 0) sdl_error(L, op);
}

/* The optional dtype after a shape given as a table (argument 2) or as n numbers. */
static sd_dtype shape_dtype(lua_State *L, int n)
{
	return sdl_optdtype(L, lua_istable(L, 1) ? 2 : n + 1, SD_F32);
}

/* T.empty(shape [, dtype]), T.zeros, T.ones */
static int t_empty(lua_State *L)
{
	int64_t shape[SD_MAX_DIMS];
	int n = sdl_checkshape(L, 1, shape);
	new_filled(L, "empty", n, shape, shape_dtype(L, n), 0);
	return 1;
}

static int t_zeros(lua_State *L)
{
	int64_t shape[SD_MAX_DIMS];
	int n = sdl_checkshape(L, 1, shape);
	new_filled(L, "zeros", n, shape, shape_dtype(L, n), 1);
	return 1;
}

static int t_ones(lua_State *L)
{
	int64_t shape[SD_MAX_DIMS];
	int n = sdl_checkshape(L, 1, shape);
	sd_tensor *t = new_filled(L, "ones", n, shape, shape_dtype(L, n), 0);
	fill(L, t, 1.0, "ones");
	return 1;
}

/* T.full(shape, value [, dtype]) */
static int t_full(lua_State *L)
{
	int64_t shape[SD_MAX_DIMS];
	luaL_checktype(L, 1, LUA_TTABLE);
	int n = sdl_checkshape(L, 1, shape);
	double v = luaL_checknumber(L, 2);
	sd_tensor *t = new_filled(L, "full", n, shape, sdl_optdtype(L, 3, SD_F32), 0);
	fill(L, t, v, "full");
	return 1;
}

/* T.from(list, shape [, dtype]): a flat list of numbers (or nested lists when shape is omitted) */
static int count_nested(lua_State *L, int idx, int depth, int64_t *shape, int *ndim)
{
	lua_Integer len = luaL_len(L, idx);
	if (depth >= SD_MAX_DIMS) return luaL_error(L, "from: nesting deeper than %d", SD_MAX_DIMS);
	if (depth >= *ndim) { shape[depth] = len; *ndim = depth + 1; }
	else if (shape[depth] != len) return luaL_error(L, "from: ragged nested list (dimension %d has lengths %d and %d)", depth + 1, (int)shape[depth], (int)len);
	if (len > 0 && lua_geti(L, idx, 1) == LUA_TTABLE) {
		for (lua_Integer i = 1; i <= len; i++) {
			lua_geti(L, idx, i);
			if (!lua_istable(L, -1)) return luaL_error(L, "from: mixed numbers and lists at dimension %d", depth + 1);
			count_nested(L, lua_gettop(L), depth + 1, shape, ndim);
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	return 0;
}

static void store_value(lua_State *L, sd_tensor *t, int64_t i, int idx)
{
	int isnum;
	char *p = (char *)sd_tensor_data(t) + i * (int64_t)sd_dtype_size(t->dtype);
	if ((t->dtype == SD_I64 || t->dtype == SD_I32) && lua_isinteger(L, idx)) {
		int64_t v = lua_tointeger(L, idx);
		sd_convert(&v, SD_I64, p, t->dtype, 1);
		return;
	}
	double v = lua_tonumberx(L, idx, &isnum);
	if (!isnum) luaL_error(L, "from: element %d is a %s, not a number", (int)i + 1, luaL_typename(L, idx));
	if (t->dtype == SD_F32) { *(float *)p = (float)v; return; }
	/* the double -> dtype path of sd_convert goes through f32 for half types, exact for ints */
	float f = (float)v;
	if (t->dtype == SD_F16 || t->dtype == SD_BF16) sd_convert(&f, SD_F32, p, t->dtype, 1);
	else { int64_t iv = (int64_t)v; sd_convert(&iv, SD_I64, p, t->dtype, 1); }
}

static void fill_nested(lua_State *L, int idx, sd_tensor *t, int depth, int64_t *pos)
{
	lua_Integer len = luaL_len(L, idx);
	for (lua_Integer i = 1; i <= len; i++) {
		lua_geti(L, idx, i);
		if (depth + 1 < t->ndim) fill_nested(L, lua_gettop(L), t, depth + 1, pos);
		else store_value(L, t, (*pos)++, lua_gettop(L));
		lua_pop(L, 1);
	}
}

static int t_from(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	int64_t shape[SD_MAX_DIMS];
	int ndim = 0;
	if (lua_istable(L, 2)) {
		ndim = sdl_checkshape(L, 2, shape);
		sd_tensor *t = new_filled(L, "from", ndim, shape, sdl_optdtype(L, 3, SD_F32), 0);
		int64_t n = sd_tensor_numel(t);
		if (luaL_len(L, 1) != n)
			return luaL_error(L, "from: %d values given for shape %s (%d elements)", (int)luaL_len(L, 1), SD_SHAPE_STR(t), (int)n);
		for (int64_t i = 0; i < n; i++) {
			lua_geti(L, 1, i + 1);
			store_value(L, t, i, lua_gettop(L));
			lua_pop(L, 1);
		}
		return 1;
	}
	count_nested(L, 1, 0, shape, &ndim);
	sd_tensor *t = new_filled(L, "from", ndim, shape, sdl_optdtype(L, 2, SD_F32), 0);
	int64_t pos = 0;
	if (sd_tensor_numel(t) > 0) fill_nested(L, 1, t, 0, &pos);
	return 1;
}

static int t_is_tensor(lua_State *L)
{
	lua_pushboolean(L, sdl_totensor(L, 1) != NULL);
	return 1;
}

/* Mapped files: T.map(path) -> a mapping m (zero-copy, copy-on-write: writing to a tensor never
 * changes the file, and each T.map of a file is independent); m:tensor(byte_offset, dtype, shape)
 * -> a view of those bytes; m:size(). T.from_file(path, offset, dtype, shape) maps and views once. */
#define MAPPING "sd.Mapping"

static sd_mapping *check_mapping(lua_State *L, int idx)
{
	sd_mapping **m = luaL_checkudata(L, idx, MAPPING);
	if (!*m) luaL_argerror(L, idx, "mapping has been closed");
	return *m;
}

static int mapping_gc(lua_State *L)
{
	sd_mapping **m = luaL_checkudata(L, 1, MAPPING);
	if (*m) sd_mapping_release(*m);
	*m = NULL;
	return 0;
}

static int mapping_size(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)sd_mapping_size(check_mapping(L, 1)));
	return 1;
}

static int mapping_tensor(lua_State *L)
{
	sd_mapping *m = check_mapping(L, 1);
	lua_Integer off = luaL_checkinteger(L, 2);
	sd_dtype dt = sdl_checkdtype(L, 3);
	int64_t shape[SD_MAX_DIMS], numel;
	int n = sdl_checkshape(L, 4, shape);
	if (off < 0) return luaL_argerror(L, 2, "byte offset must not be negative");
	if (sd_shape_check(n, shape) != 0 || sd_shape_numel(n, shape, &numel) != 0) return sdl_error(L, "map");
	sd_storage *s = sd_storage_from_mapping(m, (size_t)off, (size_t)numel * sd_dtype_size(dt));
	if (!s) return sdl_error(L, "map");
	sd_tensor *t = sdl_newtensor(L);
	int r = sd_tensor_over(t, s, 0, dt, n, shape);
	sd_storage_release(s);
	if (r != 0) return sdl_error(L, "map");
	if ((uintptr_t)sd_tensor_data(t) % sd_dtype_size(dt) != 0) { /* misaligned in the file: copy */
		sd_tensor *c = sdl_newtensor(L);
		if (sd_tensor_clone(t, c) != 0) return sdl_error(L, "map");
	}
	return 1;
}

static int t_map(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	sd_mapping **ud = lua_newuserdatauv(L, sizeof *ud, 0);
	*ud = NULL;
	if (luaL_newmetatable(L, MAPPING)) {
		static const luaL_Reg fns[] = {{"tensor", mapping_tensor}, {"size", mapping_size}, {NULL, NULL}};
		lua_pushcfunction(L, mapping_gc);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, mapping_gc);
		lua_setfield(L, -2, "__close");
		luaL_newlib(L, fns);
		lua_setfield(L, -2, "__index");
	}
	lua_setmetatable(L, -2);
	*ud = sd_mapping_open(path);
	if (!*ud) return sdl_error(L, "map");
	return 1;
}

static int t_from_file(lua_State *L)
{
	lua_settop(L, 4);
	lua_pushcfunction(L, t_map);
	lua_pushvalue(L, 1);
	lua_call(L, 1, 1);    /* 5: the mapping */
	lua_replace(L, 1);
	return mapping_tensor(L);
}

/* ---- fields and element access --------------------------------------------------------- */

static void push_shape(lua_State *L, const sd_tensor *t)
{
	lua_createtable(L, t->ndim, 0);
	for (int i = 0; i < t->ndim; i++) {
		lua_pushinteger(L, t->shape[i]);
		lua_rawseti(L, -2, i + 1);
	}
}

static double load_value(const sd_tensor *t, const char *p)
{
	double v;
	float f;
	switch (t->dtype) {
	case SD_F32: return *(const float *)p;
	case SD_I64: return (double)*(const int64_t *)p;
	case SD_I32: return *(const int32_t *)p;
	case SD_U8: return *(const uint8_t *)p;
	default: sd_convert(p, t->dtype, &f, SD_F32, 1); v = f; return v;
	}
}

static void push_value(lua_State *L, const sd_tensor *t, const char *p)
{
	if (t->dtype == SD_I64) lua_pushinteger(L, *(const int64_t *)p);
	else if (t->dtype == SD_I32) lua_pushinteger(L, *(const int32_t *)p);
	else if (t->dtype == SD_U8) lua_pushinteger(L, *(const uint8_t *)p);
	else lua_pushnumber(L, load_value(t, p));
}

static int m_size(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	if (lua_isnoneornil(L, 2)) { push_shape(L, t); return 1; }
	lua_pushinteger(L, t->shape[sdl_checkdim(L, 2, t->ndim)]);
	return 1;
}

static int m_numel(lua_State *L)
{
	lua_pushinteger(L, sd_tensor_numel(sdl_checktensor(L, 1)));
	return 1;
}

static int m_is_contiguous(lua_State *L)
{
	lua_pushboolean(L, sd_tensor_is_contiguous(sdl_checktensor(L, 1)));
	return 1;
}

/* pointer to the element at 1-based (or negative) indices idx.. */
static const char *element(lua_State *L, const sd_tensor *t, int first, const char *op)
{
	int n = lua_gettop(L) - first + 1;
	if (n < t->ndim) luaL_error(L, "%s: %d indices given for a tensor of %d dimensions %s", op, n, t->ndim, SD_SHAPE_STR(t));
	int64_t off = 0;
	for (int i = 0; i < t->ndim; i++) {
		lua_Integer k = luaL_checkinteger(L, first + i);
		int64_t j = k > 0 ? k - 1 : t->shape[i] + k;
		if (k == 0 || j < 0 || j >= t->shape[i])
			luaL_error(L, "%s: index %d out of range for dimension %d of size %d", op, (int)k, i + 1, (int)t->shape[i]);
		off += j * t->stride[i];
	}
	return (const char *)sd_tensor_data(t) + off * (int64_t)sd_dtype_size(t->dtype);
}

/* x:get(i, j, ...) -> number */
static int m_get(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	push_value(L, t, element(L, t, 2, "get"));
	return 1;
}

/* x:set(i, j, ..., value) */
static int m_set(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	int top = lua_gettop(L);
	luaL_checknumber(L, top);
	lua_pushvalue(L, top);
	lua_remove(L, top); /* value now on top, indices 2..top-1 */
	lua_insert(L, 2);
	char *p = (char *)element(L, t, 3, "set");
	sd_tensor one = *t;
	one.offset = (p - (char *)t->storage->data) / (int64_t)sd_dtype_size(t->dtype);
	one.ndim = 0;
	store_value(L, &one, 0, 2);
	lua_settop(L, 1);
	return 1;
}

static int m_item(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	if (sd_tensor_numel(t) != 1)
		return luaL_error(L, "item: tensor %s has %d elements, not 1", SD_SHAPE_STR(t), (int)sd_tensor_numel(t));
	push_value(L, t, sd_tensor_data(t));
	return 1;
}

static void push_nested(lua_State *L, const sd_tensor *t, int depth, const char *p)
{
	if (depth == t->ndim) { push_value(L, t, p); return; }
	lua_createtable(L, (int)t->shape[depth], 0);
	for (int64_t i = 0; i < t->shape[depth]; i++) {
		push_nested(L, t, depth + 1, p + i * t->stride[depth] * (int64_t)sd_dtype_size(t->dtype));
		lua_rawseti(L, -2, i + 1);
	}
}

/* x:totable() -> nested lists (like torch's tolist); a 0-d tensor gives a number */
static int m_totable(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	luaL_checkstack(L, t->ndim + 4, "totable");
	push_nested(L, t, 0, sd_tensor_data(t));
	return 1;
}

/* ---- views ----------------------------------------------------------------------------- */

static int finish(lua_State *L, sd_tensor *out, int r, const char *op)
{
	if (r != 0) sdl_error(L, op);
	(void)out;
	return 1;
}

static int m_view(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	int64_t shape[SD_MAX_DIMS];
	int n = sdl_checkshape(L, 2, shape);
	sd_tensor *o = sdl_newtensor(L);
	return finish(L, o, sd_tensor_view(t, o, n, shape), "view");
}

static int m_reshape(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	int64_t shape[SD_MAX_DIMS];
	int n = sdl_checkshape(L, 2, shape);
	sd_tensor *o = sdl_newtensor(L);
	return finish(L, o, sd_tensor_reshape(t, o, n, shape), "reshape");
}

static int m_permute(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	int64_t p64[SD_MAX_DIMS];
	int perm[SD_MAX_DIMS];
	int n = sdl_checkshape(L, 2, p64);
	if (n != t->ndim)
		return luaL_error(L, "permute: %d dimensions given for a tensor of %d %s", n, t->ndim, SD_SHAPE_STR(t));
	for (int i = 0; i < n; i++) {
		int64_t d = p64[i];
		if (d == 0 || d > n || d < -n) return luaL_error(L, "permute: dimension %d out of range for %d dimensions", (int)d, n);
		perm[i] = (int)(d > 0 ? d - 1 : n + d);
	}
	sd_tensor *o = sdl_newtensor(L);
	return finish(L, o, sd_tensor_permute(t, o, n, perm), "permute");
}

static int m_transpose(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	int a = sdl_checkdim(L, 2, t->ndim), b = sdl_checkdim(L, 3, t->ndim);
	sd_tensor *o = sdl_newtensor(L);
	return finish(L, o, sd_tensor_transpose(t, o, a, b), "transpose");
}

/* x:narrow(dim, start, length), start 1-based */
static int m_narrow(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	int d = sdl_checkdim(L, 2, t->ndim);
	lua_Integer start = luaL_checkinteger(L, 3), len = luaL_checkinteger(L, 4);
	if (start < 0) start += t->shape[d] + 1;
	sd_tensor *o = sdl_newtensor(L);
	return finish(L, o, sd_tensor_narrow(t, o, d, start - 1, len), "narrow");
}

static int m_select(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	int d = sdl_checkdim(L, 2, t->ndim);
	lua_Integer i = luaL_checkinteger(L, 3);
	int64_t j = i > 0 ? i - 1 : t->shape[d] + i;
	if (i == 0) j = -1;
	sd_tensor *o = sdl_newtensor(L);
	return finish(L, o, sd_tensor_select(t, o, d, j), "select");
}

static int m_squeeze(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	int d = lua_isnoneornil(L, 2) ? -SD_MAX_DIMS - 1 : sdl_checkdim(L, 2, t->ndim);
	sd_tensor *o = sdl_newtensor(L);
	return finish(L, o, sd_tensor_squeeze(t, o, d), "squeeze");
}

static int m_unsqueeze(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	int d = sdl_checkdim(L, 2, t->ndim + 1);
	sd_tensor *o = sdl_newtensor(L);
	return finish(L, o, sd_tensor_unsqueeze(t, o, d), "unsqueeze");
}

static int m_expand(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	int64_t shape[SD_MAX_DIMS];
	int n = sdl_checkshape(L, 2, shape);
	sd_tensor *o = sdl_newtensor(L);
	return finish(L, o, sd_tensor_expand(t, o, n, shape), "expand");
}

/* x:chunk(n [, dim=1]) -> list of views, the last one smaller when the size does not divide */
static int m_chunk(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	lua_Integer n = luaL_checkinteger(L, 2);
	int d = sdl_optdim(L, 3, t->ndim, 0);
	if (n < 1) return luaL_argerror(L, 2, "number of chunks must be positive");
	int64_t size = t->shape[d], step = (size + n - 1) / n;
	lua_newtable(L);
	int k = 1;
	for (int64_t s = 0; s < size || (size == 0 && k == 1); s += step ? step : 1) {
		int64_t len = size - s < step ? size - s : step;
		sd_tensor *o = sdl_newtensor(L);
		if (sd_tensor_narrow(t, o, d, s, len) != 0) sdl_error(L, "chunk");
		lua_rawseti(L, -2, k++);
		if (size == 0) break;
	}
	return 1;
}

/* ---- copies ---------------------------------------------------------------------------- */

static int m_contiguous(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	if (sd_tensor_is_contiguous(t)) { lua_settop(L, 1); return 1; }
	sd_tensor *o = sdl_newtensor(L);
	return finish(L, o, sd_tensor_contiguous(t, o), "contiguous");
}

static int m_clone(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	sd_tensor *o = sdl_newtensor(L);
	return finish(L, o, sd_tensor_clone(t, o), "clone");
}

/* x:to(dtype): a converted copy; x itself when it already has that dtype */
static int m_to(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	sd_dtype dt = sdl_checkdtype(L, 2);
	if (dt == t->dtype) { lua_settop(L, 1); return 1; }
	sd_tensor *o = sdl_newtensor(L);
	return finish(L, o, sd_tensor_to(t, o, dt), "to");
}

static int m_copy_(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1), *s = sdl_checktensor(L, 2);
	if (sd_tensor_copy(t, s) != 0) sdl_error(L, "copy_");
	lua_settop(L, 1);
	return 1;
}

static int m_fill_(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	fill(L, t, luaL_checknumber(L, 2), "fill_");
	lua_settop(L, 1);
	return 1;
}

/* x:release(): drops the storage now instead of at garbage collection; x is unusable after. */
static int m_release(lua_State *L)
{
	sd_tensor *t = luaL_checkudata(L, 1, SDL_TENSOR);
	sd_tensor_release(t);
	return 0;
}

/* x:drop_pages(): a tensor mapped from a file gives its resident pages back to the page cache
 * (read again on use; what was written into them is lost). The loader calls it on half-precision
 * sources once widened, so widening a checkpoint does not hold both copies. */
static int m_drop_pages(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	sd_storage_drop_pages(t->storage);
	return 0;
}

/* x:equal(y): same shape and every element equal (NaN is unequal) */
static int m_equal(lua_State *L)
{
	sd_tensor *a = sdl_checktensor(L, 1), *b = sdl_checktensor(L, 2);
	if (!sd_tensor_same_shape(a, b)) { lua_pushboolean(L, 0); return 1; }
	sd_tensor x, y;
	if (sd_tensor_to(a, &x, SD_F32) != 0) sdl_error(L, "equal");
	if (sd_tensor_to(b, &y, SD_F32) != 0) { sd_tensor_release(&x); sdl_error(L, "equal"); }
	int64_t n = sd_tensor_numel(&x);
	const float *p = sd_tensor_data(&x), *q = sd_tensor_data(&y);
	int eq = 1;
	for (int64_t i = 0; i < n && eq; i++) eq = p[i] == q[i];
	sd_tensor_release(&x);
	sd_tensor_release(&y);
	lua_pushboolean(L, eq);
	return 1;
}

/* ---- printing -------------------------------------------------------------------------- */

#define EDGE 3 /* elements shown at each end of a long dimension */

static void preview(luaL_Buffer *b, const sd_tensor *t, int depth, const char *p, int integer)
{
	size_t es = sd_dtype_size(t->dtype);
	if (depth == t->ndim) {
		char num[48];
		double v = load_value(t, p);
		if (integer) snprintf(num, sizeof num, "%lld", (long long)v);
		else snprintf(num, sizeof num, "% .4g", v);
		luaL_addstring(b, num);
		return;
	}
	luaL_addchar(b, '[');
	int64_t n = t->shape[depth];
	for (int64_t i = 0; i < n; i++) {
		if (n > 2 * EDGE && i == EDGE) {
			luaL_addstring(b, depth + 1 == t->ndim ? "..., " : "...,\n");
			i = n - EDGE;
		}
		preview(b, t, depth + 1, p + i * t->stride[depth] * (int64_t)es, integer);
		if (i + 1 < n) {
			luaL_addchar(b, ',');
			if (depth + 1 == t->ndim) luaL_addchar(b, ' ');
			else { luaL_addchar(b, '\n'); for (int k = 0; k <= depth; k++) luaL_addchar(b, ' '); }
		}
	}
	luaL_addchar(b, ']');
}

/* Summary statistics over all elements (strided walk). */
static void stats(const sd_tensor *t, double *mn, double *mx, double *mean)
{
	const sd_tensor *ops[1] = {t};
	sd_iter it;
	*mn = INFINITY; *mx = -INFINITY; *mean = 0;
	if (sd_iter_init(&it, 1, ops, t->ndim, t->shape) != 0) return;
	size_t es = sd_dtype_size(t->dtype);
	double sum = 0;
	for (int64_t r = 0; r < it.rows; r++) {
		char *p;
		sd_iter_row(&it, r, &p);
		for (int64_t i = 0; i < it.inner; i++) {
			double v = load_value(t, p + i * it.inner_stride[0] * (int64_t)es);
			if (v < *mn) *mn = v;
			if (v > *mx) *mx = v;
			sum += v;
		}
	}
	int64_t n = sd_tensor_numel(t);
	*mean = n ? sum / (double)n : NAN;
}

static int m_tostring(lua_State *L)
{
	sd_tensor *t = luaL_checkudata(L, 1, SDL_TENSOR);
	if (!t->storage) { lua_pushliteral(L, "tensor (released)"); return 1; }
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	char head[256];
	int64_t n = sd_tensor_numel(t);
	snprintf(head, sizeof head, "tensor %s %s", SD_SHAPE_STR(t), sd_dtype_name(t->dtype));
	luaL_addstring(&b, head);
	if (n > 0) {
		double mn, mx, mean;
		stats(t, &mn, &mx, &mean);
		snprintf(head, sizeof head, "  min %.4g max %.4g mean %.4g", mn, mx, mean);
		luaL_addstring(&b, head);
		luaL_addchar(&b, '\n');
		preview(&b, t, 0, sd_tensor_data(t), !sd_dtype_is_float(t->dtype));
	}
	luaL_pushresult(&b);
	return 1;
}

/* ---- metamethods ----------------------------------------------------------------------- */

static int mt_gc(lua_State *L)
{
	sd_tensor *t = luaL_checkudata(L, 1, SDL_TENSOR);
	sd_tensor_release(t);
	return 0;
}

/* x.shape, x.dtype, x.ndim, then methods */
static int mt_index(lua_State *L)
{
	sd_tensor *t = luaL_checkudata(L, 1, SDL_TENSOR);
	if (lua_type(L, 2) == LUA_TSTRING) {
		const char *k = lua_tostring(L, 2);
		if (strcmp(k, "shape") == 0) {
			if (!t->storage) return luaL_error(L, "tensor has been released");
			push_shape(L, t);
			return 1;
		}
		if (strcmp(k, "dtype") == 0) { lua_pushstring(L, sd_dtype_name(t->dtype)); return 1; }
		if (strcmp(k, "ndim") == 0) { lua_pushinteger(L, t->ndim); return 1; }
		lua_pushvalue(L, 2);
		lua_rawget(L, lua_upvalueindex(1));
		return 1;
	}
	if (lua_isinteger(L, 2)) { /* x[i]: select along the first dimension */
		if (!t->storage) return luaL_error(L, "tensor has been released");
		if (t->ndim == 0) return luaL_error(L, "cannot index a 0-dimensional tensor");
		lua_Integer i = lua_tointeger(L, 2);
		int64_t j = i > 0 ? i - 1 : t->shape[0] + i;
		if (i == 0) j = -1;
		sd_tensor *o = sdl_newtensor(L);
		if (sd_tensor_select(t, o, 0, j) != 0) sdl_error(L, "select");
		return 1;
	}
	return luaL_error(L, "tensor index must be a method name or an integer, got %s", luaL_typename(L, 2));
}

static int mt_newindex(lua_State *L)
{
	return luaL_error(L, "tensors have no assignable fields (use x:copy_(y), x:set(i, ..., v) or x:fill_(v))");
}

static int mt_len(lua_State *L)
{
	sd_tensor *t = sdl_checktensor(L, 1);
	lua_pushinteger(L, t->ndim ? t->shape[0] : 1);
	return 1;
}

/* a == b: the same view of the same storage (identity, as for tables); x:equal(y) compares values */
static int mt_eq(lua_State *L)
{
	sd_tensor *a = sdl_totensor(L, 1), *b = sdl_totensor(L, 2);
	int same = a && b && a->storage == b->storage && a->offset == b->offset && a->dtype == b->dtype &&
	           sd_tensor_same_shape(a, b) && memcmp(a->stride, b->stride, sizeof(int64_t) * (size_t)a->ndim) == 0;
	lua_pushboolean(L, same);
	return 1;
}

/* Binary arithmetic: x op y calls x:name(y); n op x calls x:rname(n) (x:name(n) when commutative). */
static int arith(lua_State *L, const char *name, const char *rname)
{
	int self = sdl_totensor(L, 1) ? 1 : 2;
	const char *method = self == 1 ? name : rname;
	luaL_getmetafield(L, self, "__index");
	lua_getupvalue(L, -1, 1);
	lua_getfield(L, -1, method);
	if (lua_isnil(L, -1)) return luaL_error(L, "tensor arithmetic: method '%s' is not available", method);
	lua_pushvalue(L, self);
	lua_pushvalue(L, 3 - self);
	lua_call(L, 2, 1);
	return 1;
}

static int mt_add(lua_State *L) { return arith(L, "add", "add"); }
static int mt_sub(lua_State *L) { return arith(L, "sub", "rsub"); }
static int mt_mul(lua_State *L) { return arith(L, "mul", "mul"); }
static int mt_div(lua_State *L) { return arith(L, "div", "rdiv"); }
static int mt_pow(lua_State *L) { return arith(L, "pow", "rpow"); }

static int mt_unm(lua_State *L)
{
	luaL_getmetafield(L, 1, "__index");
	lua_getupvalue(L, -1, 1);
	lua_getfield(L, -1, "neg");
	lua_pushvalue(L, 1);
	lua_call(L, 1, 1);
	return 1;
}

static const luaL_Reg methods[] = {
	{"size", m_size}, {"numel", m_numel}, {"is_contiguous", m_is_contiguous}, {"get", m_get},
	{"set", m_set}, {"item", m_item}, {"totable", m_totable}, {"view", m_view}, {"reshape", m_reshape},
	{"permute", m_permute}, {"transpose", m_transpose}, {"narrow", m_narrow}, {"select", m_select},
	{"squeeze", m_squeeze}, {"unsqueeze", m_unsqueeze}, {"expand", m_expand}, {"chunk", m_chunk},
	{"contiguous", m_contiguous}, {"clone", m_clone}, {"to", m_to}, {"copy_", m_copy_},
	{"fill_", m_fill_}, {"release", m_release}, {"drop_pages", m_drop_pages}, {"equal", m_equal}, {NULL, NULL}};

static const luaL_Reg functions[] = {
	{"empty", t_empty}, {"zeros", t_zeros}, {"ones", t_ones}, {"full", t_full}, {"from", t_from},
	{"is_tensor", t_is_tensor}, {"from_file", t_from_file}, {"map", t_map}, {NULL, NULL}};

static const luaL_Reg metamethods[] = {
	{"__gc", mt_gc}, {"__close", mt_gc}, {"__newindex", mt_newindex}, {"__len", mt_len},
	{"__eq", mt_eq}, {"__tostring", m_tostring}, {"__add", mt_add}, {"__sub", mt_sub},
	{"__mul", mt_mul}, {"__div", mt_div}, {"__pow", mt_pow}, {"__unm", mt_unm}, {NULL, NULL}};

void sdl_open_tensor(lua_State *L)
{
	luaL_newmetatable(L, SDL_TENSOR);
	luaL_setfuncs(L, metamethods, 0);
	lua_getfield(L, LUA_REGISTRYINDEX, "sd.Tensor.methods");
	lua_pushcclosure(L, mt_index, 1);
	lua_setfield(L, -2, "__index");
	lua_pushliteral(L, "sd.Tensor");
	lua_setfield(L, -2, "__name");
	lua_pop(L, 1);
	sdl_addmethods(L, methods);
	sdl_addfuncs(L, functions);
}
