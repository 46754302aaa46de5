/* sd.rng: torch-compatible generators as userdata (metatable "sd.Generator"), and T.randn /
 * T.rand of sd.tensor. */
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include "lsd.h"
#include "rng.h"
#include "sd_error.h"

#define SDL_RNG "sd.Generator"
#define DEFAULT_KEY "sd.Generator.default"

static sd_rng *checkgen(lua_State *L, int idx) { return luaL_checkudata(L, idx, SDL_RNG); }

/* Any Lua integer (or float with an integral value) is a seed; as in torch, a negative one
 * stands for its two's complement and only the low 32 bits seed the engine. */
static uint64_t checkseed(lua_State *L, int idx, const char *op)
{
	int ok = 0;
	lua_Integer v = lua_tointegerx(L, idx, &ok);
	if (!ok || lua_type(L, idx) != LUA_TNUMBER) {
		if (lua_type(L, idx) == LUA_TNUMBER)
			luaL_error(L, "%s: seed must be an integer, got %s", op, luaL_tolstring(L, idx, NULL));
		luaL_error(L, "%s: seed must be an integer, got %s", op, luaL_typename(L, idx));
	}
	return (uint64_t)v;
}

static sd_rng *newgen(lua_State *L)
{
	sd_rng *g = lua_newuserdatauv(L, sizeof(sd_rng), 0);
	luaL_setmetatable(L, SDL_RNG);
	return g;
}

/* sd.rng.torch([seed]) */
static int l_torch(lua_State *L)
{
	uint64_t seed = lua_isnoneornil(L, 1) ? SD_RNG_DEFAULT_SEED : checkseed(L, 1, "sd.rng.torch");
	sd_rng *g = newgen(L);
	sd_rng_seed(g, seed);
	return 1;
}

static sd_rng *default_gen(lua_State *L)
{
	if (lua_getfield(L, LUA_REGISTRYINDEX, DEFAULT_KEY) != LUA_TUSERDATA) {
		lua_pop(L, 1);
		sd_rng *g = newgen(L);
		sd_rng_seed(g, SD_RNG_DEFAULT_SEED);
		lua_pushvalue(L, -1);
		lua_setfield(L, LUA_REGISTRYINDEX, DEFAULT_KEY);
	}
	sd_rng *g = lua_touserdata(L, -1);
	lua_pop(L, 1); /* the registry keeps it alive */
	return g;
}

/* sd.rng.default(): the generator T.randn / T.rand use when given none (torch's default seed) */
static int l_default(lua_State *L)
{
	default_gen(L);
	lua_getfield(L, LUA_REGISTRYINDEX, DEFAULT_KEY);
	return 1;
}

typedef void (*fill_fn)(sd_rng *, float *, int64_t);

/* Pushes a new f32 tensor of the shape at shape_idx (table or integers), filled by fill. */
static int fill_new(lua_State *L, sd_rng *g, int shape_idx, fill_fn fill, const char *op)
{
	int64_t shape[SD_MAX_DIMS];
	int ndim = sdl_checkshape(L, shape_idx, shape);
	sd_tensor *t = sdl_newtensor(L);
	if (sd_tensor_new(t, SD_F32, ndim, shape) != 0) return sdl_error(L, op);
	fill(g, sd_tensor_data(t), sd_tensor_numel(t));
	return 1;
}

/* g:randn(shape) / g:rand(shape): shape a table {1, 4, 64, 64} or integers */
static int g_randn(lua_State *L) { return fill_new(L, checkgen(L, 1), 2, sd_rng_randn_f32, "randn"); }
static int g_rand(lua_State *L) { return fill_new(L, checkgen(L, 1), 2, sd_rng_rand_f32, "rand"); }

/* T.randn(shape [, gen]) / T.rand(shape [, gen]); shape a table, or integers followed by gen */
static int t_fill(lua_State *L, fill_fn fill, const char *op)
{
	int gi = 2;
	if (!lua_istable(L, 1)) {
		int top = lua_gettop(L);
		gi = 1;
		while (gi <= top && lua_isinteger(L, gi)) gi++;
	}
	sd_rng *g;
	if (lua_isnoneornil(L, gi)) {
		g = default_gen(L);
	} else {
		g = luaL_testudata(L, gi, SDL_RNG);
		if (!g) luaL_error(L, "%s: generator expected (sd.rng.torch(seed)) as argument #%d, got %s", op, gi, luaL_typename(L, gi));
	}
	if (!lua_istable(L, 1)) lua_settop(L, gi - 1); /* leave only the sizes */
	if (lua_gettop(L) == 0) luaL_error(L, "%s: shape expected (a table of sizes)", op);
	return fill_new(L, g, 1, fill, op);
}
static int t_randn(lua_State *L) { return t_fill(L, sd_rng_randn_f32, "randn"); }
static int t_rand(lua_State *L) { return t_fill(L, sd_rng_rand_f32, "rand"); }

/* g:manual_seed(n) -> g */
static int g_manual_seed(lua_State *L)
{
	sd_rng *g = checkgen(L, 1);
	sd_rng_seed(g, checkseed(L, 2, "manual_seed"));
	lua_settop(L, 1);
	return 1;
}

/* g:seed(): reseeds from the system's entropy (like torch's Generator.seed) and returns the new
 * seed, kept below 2^53 so that it survives being stored as a number anywhere. */
static int g_seed(lua_State *L)
{
	sd_rng *g = checkgen(L, 1);
	uint64_t s = 0;
	if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		s = (uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec;
	}
	s &= (1ULL << 53) - 1;
	sd_rng_seed(g, s);
	lua_pushinteger(L, (lua_Integer)s);
	return 1;
}

static int g_initial_seed(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)checkgen(L, 1)->seed);
	return 1;
}

/* g:clone(): an independent generator in the same state */
static int g_clone(lua_State *L)
{
	sd_rng *g = checkgen(L, 1);
	sd_rng *c = newgen(L);
	memcpy(c, g, sizeof *c);
	return 1;
}

/* g:get_state() -> string ; g:set_state(string) -> g (also accepts another generator) */
static int g_get_state(lua_State *L)
{
	unsigned char buf[SD_RNG_STATE_BYTES];
	sd_rng_get_state(checkgen(L, 1), buf);
	lua_pushlstring(L, (const char *)buf, sizeof buf);
	return 1;
}

static int g_set_state(lua_State *L)
{
	sd_rng *g = checkgen(L, 1);
	sd_rng *other = luaL_testudata(L, 2, SDL_RNG);
	if (other) {
		memmove(g, other, sizeof *g);
	} else {
		size_t n;
		const char *s = luaL_checklstring(L, 2, &n);
		if (sd_rng_set_state(g, (const unsigned char *)s, n) != 0) return sdl_error(L, "set_state");
	}
	lua_settop(L, 1);
	return 1;
}

static int g_tostring(lua_State *L)
{
	sd_rng *g = checkgen(L, 1);
	lua_pushfstring(L, "sd.rng.torch(%I)", (lua_Integer)g->seed);
	return 1;
}

void sdl_open_rng(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"randn", g_randn}, {"rand", g_rand}, {"manual_seed", g_manual_seed}, {"seed", g_seed},
		{"initial_seed", g_initial_seed}, {"clone", g_clone}, {"get_state", g_get_state},
		{"set_state", g_set_state}, {NULL, NULL}};
	luaL_newmetatable(L, SDL_RNG);
	luaL_newlib(L, methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, g_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);

	static const luaL_Reg core[] = {{"torch", l_torch}, {"default", l_default}, {NULL, NULL}};
	sdl_addcore(L, "rng", core);
	static const luaL_Reg funcs[] = {{"randn", t_randn}, {"rand", t_rand}, {NULL, NULL}};
	sdl_addfuncs(L, funcs);
}
