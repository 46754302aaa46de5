/* sd.core: the C core as a Lua module, and the helpers shared by the binding files. */
#include <string.h>
#include "lsd.h"
#include "sd_error.h"

sd_tensor *sdl_totensor(lua_State *L, int idx)
{
	return luaL_testudata(L, idx, SDL_TENSOR);
}

sd_tensor *sdl_checktensor(lua_State *L, int idx)
{
	sd_tensor *t = luaL_testudata(L, idx, SDL_TENSOR);
	if (!t) {
		const char *got = luaL_typename(L, idx);
		luaL_argerror(L, idx, lua_pushfstring(L, "tensor expected, got %s", got));
	}
	if (!t->storage) luaL_argerror(L, idx, "tensor has been released");
	return t;
}

sd_tensor *sdl_checkf32(lua_State *L, int idx)
{
	sd_tensor *t = sdl_checktensor(L, idx);
	if (t->dtype != SD_F32)
		luaL_argerror(L, idx, lua_pushfstring(L, "f32 tensor expected, got %s %s", sd_dtype_name(t->dtype), SD_SHAPE_STR(t)));
	return t;
}

sd_tensor *sdl_newtensor(lua_State *L)
{
	sd_tensor *t = lua_newuserdatauv(L, sizeof(sd_tensor), 0);
	memset(t, 0, sizeof *t);
	luaL_setmetatable(L, SDL_TENSOR);
	return t;
}

int sdl_error(lua_State *L, const char *op)
{
	const char *msg = sd_geterr();
	size_t n = strlen(op);
	/* runtime messages often start with the op's name already */
	if (strncmp(msg, op, n) == 0 && msg[n] == ':') return luaL_error(L, "%s", msg);
	return luaL_error(L, "%s: %s", op, msg);
}

int sdl_checkdim(lua_State *L, int idx, int ndim)
{
	lua_Integer d = luaL_checkinteger(L, idx);
	if (d >= 1 && d <= ndim) return (int)(d - 1);
	if (d <= -1 && d >= -ndim) return (int)(ndim + d);
	return luaL_argerror(L, idx, lua_pushfstring(L, "dimension %d out of range for a tensor of %d dimensions "
	                                                "(1..%d, or -%d..-1 from the end)", (int)d, ndim, ndim, ndim));
}

int sdl_optdim(lua_State *L, int idx, int ndim, int def0)
{
	return lua_isnoneornil(L, idx) ? def0 : sdl_checkdim(L, idx, ndim);
}

static int64_t check_size(lua_State *L, int idx)
{
	int isnum;
	lua_Integer v = lua_tointegerx(L, -1, &isnum);
	if (!isnum) luaL_argerror(L, idx, lua_pushfstring(L, "shape entries must be integers, got %s", luaL_typename(L, -1)));
	if (v < -1) luaL_argerror(L, idx, lua_pushfstring(L, "invalid size %d in shape", (int)v));
	return (int64_t)v;
}

int sdl_checkshape(lua_State *L, int idx, int64_t shape[SD_MAX_DIMS])
{
	int n = 0;
	if (lua_istable(L, idx)) {
		lua_Integer len = luaL_len(L, idx);
		if (len > SD_MAX_DIMS) luaL_argerror(L, idx, lua_pushfstring(L, "shape has %d dimensions (at most %d)", (int)len, SD_MAX_DIMS));
		for (n = 0; n < len; n++) {
			lua_geti(L, idx, n + 1);
			shape[n] = check_size(L, idx);
			lua_pop(L, 1);
		}
		return n;
	}
	int top = lua_gettop(L);
	if (top - idx + 1 > SD_MAX_DIMS) luaL_argerror(L, idx, "shape has too many dimensions");
	for (int i = idx; i <= top; i++) {
		if (!lua_isinteger(L, i) && !(i > idx && lua_isnil(L, i))) {
			if (i == idx) luaL_argerror(L, idx, lua_pushfstring(L, "shape expected (a table of sizes), got %s", luaL_typename(L, idx)));
			break;
		}
		lua_pushvalue(L, i);
		shape[n++] = check_size(L, i);
		lua_pop(L, 1);
	}
	return n;
}

sd_dtype sdl_checkdtype(lua_State *L, int idx)
{
	const char *name = luaL_checkstring(L, idx);
	sd_dtype dt;
	if (sd_dtype_from_name(name, &dt) != 0)
		luaL_argerror(L, idx, lua_pushfstring(L, "unknown dtype '%s' (expected f32, f16, bf16, i32, i64 or u8)", name));
	return dt;
}

sd_dtype sdl_optdtype(lua_State *L, int idx, sd_dtype def)
{
	return lua_isnoneornil(L, idx) ? def : sdl_checkdtype(L, idx);
}

static int getfield(lua_State *L, int idx, const char *field)
{
	if (lua_isnoneornil(L, idx)) return 0;
	luaL_checktype(L, idx, LUA_TTABLE);
	if (lua_getfield(L, idx, field) == LUA_TNIL) {
		lua_pop(L, 1);
		return 0;
	}
	return 1;
}

lua_Integer sdl_optfield_int(lua_State *L, int idx, const char *field, lua_Integer def)
{
	if (!getfield(L, idx, field)) return def;
	int isnum;
	lua_Integer v = lua_tointegerx(L, -1, &isnum);
	if (!isnum) luaL_error(L, "option '%s' must be an integer, got %s", field, luaL_typename(L, -1));
	lua_pop(L, 1);
	return v;
}

lua_Number sdl_optfield_num(lua_State *L, int idx, const char *field, lua_Number def)
{
	if (!getfield(L, idx, field)) return def;
	int isnum;
	lua_Number v = lua_tonumberx(L, -1, &isnum);
	if (!isnum) luaL_error(L, "option '%s' must be a number, got %s", field, luaL_typename(L, -1));
	lua_pop(L, 1);
	return v;
}

int sdl_optfield_bool(lua_State *L, int idx, const char *field, int def)
{
	if (!getfield(L, idx, field)) return def;
	if (!lua_isboolean(L, -1)) luaL_error(L, "option '%s' must be a boolean, got %s", field, luaL_typename(L, -1));
	int v = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return v;
}

/* Registry keys of the tables being filled while sd.core opens. */
#define METHODS_KEY "sd.Tensor.methods"
#define MODULE_KEY "sd.core"

static void setfuncs_into(lua_State *L, const luaL_Reg *fns)
{
	luaL_setfuncs(L, fns, 0);
	lua_pop(L, 1);
}

void sdl_addmethods(lua_State *L, const luaL_Reg *fns)
{
	lua_getfield(L, LUA_REGISTRYINDEX, METHODS_KEY);
	setfuncs_into(L, fns);
}

void sdl_addcore(lua_State *L, const char *name, const luaL_Reg *fns)
{
	lua_getfield(L, LUA_REGISTRYINDEX, MODULE_KEY);
	if (name) {
		if (lua_getfield(L, -1, name) != LUA_TTABLE) {
			lua_pop(L, 1);
			lua_newtable(L);
			lua_pushvalue(L, -1);
			lua_setfield(L, -3, name);
		}
		lua_remove(L, -2);
	}
	setfuncs_into(L, fns);
}

void sdl_addfuncs(lua_State *L, const luaL_Reg *fns)
{
	sdl_addcore(L, "tensor", fns);
}

void sdl_open_profile(lua_State *L); /* lprofile.c: wraps the operations above when profiling */

int luaopen_sd_core(lua_State *L)
{
	lua_newtable(L);
	lua_pushvalue(L, -1);
	lua_setfield(L, LUA_REGISTRYINDEX, MODULE_KEY);
	lua_newtable(L);
	lua_setfield(L, LUA_REGISTRYINDEX, METHODS_KEY);
	sdl_open_tensor(L);
	sdl_open_math(L);
	sdl_open_nn(L);
	sdl_open_rng(L);
	sdl_open_safetensors(L);
	sdl_open_system(L);
	sdl_open_image(L);
	sdl_open_zmq(L);
	sdl_open_profile(L); /* last: it wraps what the others registered when SDLUA_PROFILE is set */
	return 1;
}
