/* sd.safetensors: load (mmap'd, zero-copy tensors in their stored dtype), header, save. */
#include <ctype.h>
#include <string.h>
#include "lsd.h"
#include "safetensors.h"
#include "sd_error.h"

/* Holds what C allocated until it has been handed to Lua, so that a Lua error on the way
 * (out of memory) leaks nothing: its __gc frees whatever is left. */
#define GUARD "sd.safetensors.guard"
typedef struct guard { sd_st_header h; sd_tensor *t; } guard;

static int guard_gc(lua_State *L)
{
	guard *g = luaL_checkudata(L, 1, GUARD);
	sd_st_tensors_free(g->t, g->h.ntensors); /* moved-out entries are empty */
	g->t = NULL;
	sd_st_header_free(&g->h);
	return 0;
}

static guard *newguard(lua_State *L)
{
	guard *g = lua_newuserdatauv(L, sizeof *g, 0);
	memset(g, 0, sizeof *g);
	luaL_setmetatable(L, GUARD);
	return g;
}

static void push_meta(lua_State *L, const sd_st_header *h)
{
	lua_createtable(L, 0, (int)h->nmeta);
	for (size_t i = 0; i < h->nmeta; i++) {
		lua_pushlstring(L, h->meta[i].key, h->meta[i].keylen);
		lua_pushlstring(L, h->meta[i].value, h->meta[i].valuelen);
		lua_rawset(L, -3);
	}
}

/* sd.safetensors.load(path) -> {name = tensor}, {metadata} */
static int l_load(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	guard *g = newguard(L);
	if (sd_st_load(path, &g->h, &g->t) != 0) return sdl_error(L, "safetensors.load");
	lua_createtable(L, 0, (int)g->h.ntensors);
	for (size_t i = 0; i < g->h.ntensors; i++) {
		lua_pushlstring(L, g->h.tensors[i].name, g->h.tensors[i].namelen);
		sd_tensor *t = sdl_newtensor(L);
		*t = g->t[i];
		memset(&g->t[i], 0, sizeof g->t[i]);
		lua_rawset(L, -3);
	}
	push_meta(L, &g->h);
	return 2;
}

static void push_dtype(lua_State *L, const sd_st_info *ti)
{
	if (ti->supported) {
		lua_pushstring(L, sd_dtype_name(ti->dtype));
		return;
	}
	char low[sizeof ti->file_dtype];
	size_t i;
	for (i = 0; ti->file_dtype[i] && i + 1 < sizeof low; i++) low[i] = (char)tolower((unsigned char)ti->file_dtype[i]);
	low[i] = 0;
	lua_pushstring(L, low);
}

/* sd.safetensors.header(path) -> {name = {dtype = "f16", shape = {...}, offsets = {b, e}}},
 * {metadata}: reads only the header. dtype is the runtime's name ("f32", "bf16", ...), or the
 * file's in lower case for those the runtime cannot load ("f64", "bool", ...). */
static int l_header(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	guard *g = newguard(L);
	if (sd_st_read_header(path, &g->h) != 0) return sdl_error(L, "safetensors.header");
	lua_createtable(L, 0, (int)g->h.ntensors);
	for (size_t i = 0; i < g->h.ntensors; i++) {
		const sd_st_info *ti = &g->h.tensors[i];
		lua_pushlstring(L, ti->name, ti->namelen);
		lua_createtable(L, 0, 4);
		push_dtype(L, ti);
		lua_setfield(L, -2, "dtype");
		lua_createtable(L, ti->ndim, 0);
		for (int d = 0; d < ti->ndim; d++) {
			lua_pushinteger(L, ti->shape[d]);
			lua_rawseti(L, -2, d + 1);
		}
		lua_setfield(L, -2, "shape");
		lua_createtable(L, 2, 0);
		lua_pushinteger(L, (lua_Integer)ti->begin);
		lua_rawseti(L, -2, 1);
		lua_pushinteger(L, (lua_Integer)ti->end);
		lua_rawseti(L, -2, 2);
		lua_setfield(L, -2, "offsets");
		lua_pushboolean(L, ti->supported);
		lua_setfield(L, -2, "supported");
		lua_rawset(L, -3);
	}
	push_meta(L, &g->h);
	return 2;
}

static size_t count_pairs(lua_State *L, int idx)
{
	size_t n = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		n++;
		lua_pop(L, 1);
	}
	return n;
}

/* sd.safetensors.save(path, {name = tensor}, [{key = "string value"}]) */
static int l_save(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	int has_meta = !lua_isnoneornil(L, 3);
	if (has_meta) luaL_checktype(L, 3, LUA_TTABLE);
	lua_settop(L, 3);

	size_t n = count_pairs(L, 2), nmeta = has_meta ? count_pairs(L, 3) : 0;
	/* scratch arrays as userdata: collected even if a check below raises */
	sd_st_entry *e = lua_newuserdatauv(L, (n ? n : 1) * sizeof *e, 0);
	sd_st_kv *kv = lua_newuserdatauv(L, (nmeta ? nmeta : 1) * sizeof *kv, 0);
	size_t i = 0;
	lua_pushnil(L);
	while (lua_next(L, 2)) {
		if (lua_type(L, -2) != LUA_TSTRING)
			return luaL_error(L, "safetensors.save: %s: tensor names must be strings, got a %s key", path,
			                  luaL_typename(L, -2));
		const char *name = lua_tolstring(L, -2, &e[i].namelen);
		sd_tensor *t = sdl_totensor(L, -1);
		if (!t) return luaL_error(L, "safetensors.save: %s: '%s' is not a tensor (got %s)", path, name, luaL_typename(L, -1));
		if (!t->storage) return luaL_error(L, "safetensors.save: %s: tensor '%s' has been released", path, name);
		e[i].name = name; /* the string stays alive as a key of the table at 2 */
		e[i].tensor = t;
		i++;
		lua_pop(L, 1);
	}
	i = 0;
	if (has_meta) {
		lua_pushnil(L);
		while (lua_next(L, 3)) {
			if (lua_type(L, -2) != LUA_TSTRING)
				return luaL_error(L, "safetensors.save: %s: metadata keys must be strings, got a %s key", path,
				                  luaL_typename(L, -2));
			const char *key = lua_tolstring(L, -2, &kv[i].keylen);
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "safetensors.save: %s: metadata value of '%s' must be a string, got %s", path, key,
				                  luaL_typename(L, -1));
			kv[i].key = key;
			kv[i].value = lua_tolstring(L, -1, &kv[i].valuelen);
			i++;
			lua_pop(L, 1);
		}
	}
	if (sd_st_save(path, e, n, kv, nmeta) != 0) return sdl_error(L, "safetensors.save");
	return 0;
}

void sdl_open_safetensors(lua_State *L)
{
	luaL_newmetatable(L, GUARD);
	lua_pushcfunction(L, guard_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);
	static const luaL_Reg fns[] = {{"load", l_load}, {"save", l_save}, {"header", l_header}, {NULL, NULL}};
	sdl_addcore(L, "safetensors", fns);
}
