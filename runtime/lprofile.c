/* The operation profiler of sd.core: time, calls, FLOPs and bytes per tensor operation, grouped
 * into kinds (conv, linear, attention, norm, elementwise, conversion, ...).
 *
 * Off by default, and then it costs nothing: no function is wrapped. SDLUA_PROFILE=1 in the
 * environment (read when sd.core opens) or profile(true) wraps every C function of the tensor
 * methods table and of sd.core.tensor in a closure that times the call and counts its FLOPs from
 * the shapes of its arguments and result:
 *   linear  2 · rows · in · out         matmul  2 · numel(result) · k
 *   conv2d  2 · numel(result) · (C/groups) · kh · kw
 *   attention 2 · B · H · N · M · (d + dv), half that when causal
 * and its bytes as the bytes of its tensor arguments plus those of its tensor results (each read
 * or written once: a lower bound for pointwise operations). x + y and the other arithmetic
 * metamethods go through the methods table, so they are counted as add, sub, ...
 * With SDLUA_PROFILE=1 the table (profile_report()) is printed to stderr at exit. */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtype.h"
#include "lsd.h"

enum { K_CONV, K_LINEAR, K_ATTENTION, K_NORM, K_ELEMENTWISE, K_CONVERSION, K_RESAMPLE, K_REDUCE,
       K_CONCAT, K_CREATE, K_VIEW, K_OTHER, NKINDS };
static const char *const kind_names[NKINDS] = {"conv", "linear", "attention", "norm", "elementwise",
	"conversion", "resample", "reduce", "concat", "create", "view", "other"};

enum { F_NONE, F_LINEAR, F_MATMUL, F_CONV, F_ATTENTION };

typedef struct {
	char name[32];
	int kind, flops_rule;
	long long calls;
	double seconds, flops, bytes;
} prof_op;

#define MAX_OPS 160
static prof_op ops[MAX_OPS];
static int nops;
static int enabled;      /* counting on */
static int print_at_exit;

static const struct { const char *name; int kind; } kinds[] = {
	{"conv2d", K_CONV},
	{"linear", K_LINEAR}, {"matmul", K_LINEAR},
	{"attention", K_ATTENTION},
	{"group_norm", K_NORM}, {"layer_norm", K_NORM}, {"softmax", K_NORM},
	{"add", K_ELEMENTWISE}, {"sub", K_ELEMENTWISE}, {"mul", K_ELEMENTWISE}, {"div", K_ELEMENTWISE},
	{"pow", K_ELEMENTWISE}, {"rsub", K_ELEMENTWISE}, {"rdiv", K_ELEMENTWISE}, {"rpow", K_ELEMENTWISE},
	{"add_", K_ELEMENTWISE}, {"sub_", K_ELEMENTWISE}, {"mul_", K_ELEMENTWISE}, {"div_", K_ELEMENTWISE},
	{"clamp", K_ELEMENTWISE}, {"neg", K_ELEMENTWISE}, {"exp", K_ELEMENTWISE}, {"log", K_ELEMENTWISE},
	{"sqrt", K_ELEMENTWISE}, {"rsqrt", K_ELEMENTWISE}, {"abs", K_ELEMENTWISE}, {"sin", K_ELEMENTWISE},
	{"cos", K_ELEMENTWISE}, {"tanh", K_ELEMENTWISE}, {"sigmoid", K_ELEMENTWISE}, {"silu", K_ELEMENTWISE},
	{"gelu", K_ELEMENTWISE}, {"gelu_tanh", K_ELEMENTWISE}, {"quick_gelu", K_ELEMENTWISE},
	{"geglu", K_ELEMENTWISE}, {"add_silu", K_ELEMENTWISE}, {"where", K_ELEMENTWISE}, {"fill_", K_ELEMENTWISE},
	{"to", K_CONVERSION}, {"contiguous", K_CONVERSION}, {"clone", K_CONVERSION}, {"copy_", K_CONVERSION},
	{"reshape", K_CONVERSION},
	{"upsample_nearest", K_RESAMPLE}, {"interpolate", K_RESAMPLE},
	{"sum", K_REDUCE}, {"mean", K_REDUCE}, {"var", K_REDUCE}, {"max", K_REDUCE}, {"min", K_REDUCE},
	{"argmax", K_REDUCE}, {"argmin", K_REDUCE}, {"cumprod", K_REDUCE},
	{"cat", K_CONCAT}, {"stack", K_CONCAT}, {"embedding", K_CONCAT},
	{"empty", K_CREATE}, {"zeros", K_CREATE}, {"ones", K_CREATE}, {"full", K_CREATE}, {"from", K_CREATE},
	{"randn", K_CREATE}, {"linspace", K_CREATE}, {"arange", K_CREATE}, {"from_file", K_CREATE},
	{"view", K_VIEW}, {"permute", K_VIEW}, {"transpose", K_VIEW}, {"narrow", K_VIEW}, {"select", K_VIEW},
	{"squeeze", K_VIEW}, {"unsqueeze", K_VIEW}, {"expand", K_VIEW}, {"chunk", K_VIEW},
};

/* accessors and bookkeeping that are not worth a clock read */
static const char *const skipped[] = {"release", "size", "numel", "is_contiguous", "is_tensor", "get", "set",
	"item", "totable", "equal", "map", NULL};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static prof_op *op_for(const char *name)
{
	for (int i = 0; i < nops; i++)
		if (strcmp(ops[i].name, name) == 0) return &ops[i];
	if (nops == MAX_OPS) return NULL;
	prof_op *o = &ops[nops++];
	memset(o, 0, sizeof *o);
	snprintf(o->name, sizeof o->name, "%s", name);
	o->kind = K_OTHER;
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
		if (strcmp(kinds[i].name, name) == 0) o->kind = kinds[i].kind;
	o->flops_rule = strcmp(name, "linear") == 0 ? F_LINEAR : strcmp(name, "matmul") == 0 ? F_MATMUL
	              : strcmp(name, "conv2d") == 0 ? F_CONV : strcmp(name, "attention") == 0 ? F_ATTENTION : F_NONE;
	return o;
}

static double numel(const sd_tensor *t) { return (double)sd_tensor_numel(t); }

static double tensor_bytes(const sd_tensor *t)
{
	return t->storage ? numel(t) * (double)sd_dtype_size(t->dtype) : 0;
}

/* FLOPs of a finished call: arguments at 1..nargs, results at nargs+1..top */
static double count_flops(lua_State *L, int rule, int nargs)
{
	sd_tensor *a = nargs >= 1 ? sdl_totensor(L, 1) : NULL, *b = nargs >= 2 ? sdl_totensor(L, 2) : NULL;
	sd_tensor *r = lua_gettop(L) > nargs ? sdl_totensor(L, nargs + 1) : NULL;
	switch (rule) {
	case F_LINEAR: /* x (..., in), w (out, in) */
		if (!a || !b || a->ndim < 1 || b->ndim != 2) return 0;
		return 2.0 * numel(a) * (double)b->shape[0];
	case F_MATMUL:
		if (!a || !r || a->ndim < 1) return 0;
		return 2.0 * numel(r) * (double)a->shape[a->ndim - 1];
	case F_CONV: /* w (O, C/groups, kh, kw) */
		if (!b || !r || b->ndim != 4) return 0;
		return 2.0 * numel(r) * (double)b->shape[1] * (double)b->shape[2] * (double)b->shape[3];
	case F_ATTENTION: {
		sd_tensor *v = nargs >= 3 ? sdl_totensor(L, 3) : NULL;
		if (!a || !b || !v || a->ndim != 4 || b->ndim != 4 || v->ndim != 4) return 0;
		double f = 2.0 * (double)a->shape[0] * (double)a->shape[1] * (double)a->shape[2] * (double)b->shape[2] *
		           (double)(a->shape[3] + v->shape[3]);
		if (nargs >= 4 && lua_istable(L, 4)) {
			lua_getfield(L, 4, "causal");
			if (lua_toboolean(L, -1)) f /= 2;
			lua_pop(L, 1);
		}
		return f;
	}
	default:
		return 0;
	}
}

static int prof_wrapper(lua_State *L)
{
	int nargs = lua_gettop(L);
	prof_op *o = lua_touserdata(L, lua_upvalueindex(2));
	lua_pushvalue(L, lua_upvalueindex(1));
	if (!enabled) { /* switched off after wrapping: a plain tail of the call */
		lua_insert(L, 1);
		lua_call(L, nargs, LUA_MULTRET);
		return lua_gettop(L);
	}
	for (int i = 1; i <= nargs; i++) lua_pushvalue(L, i);
	double t0 = now();
	lua_call(L, nargs, LUA_MULTRET);
	double dt = now() - t0;
	int top = lua_gettop(L);
	double bytes = 0;
	for (int i = 1; i <= top; i++) {
		sd_tensor *t = sdl_totensor(L, i);
		if (t) bytes += tensor_bytes(t);
	}
	o->calls++;
	o->seconds += dt;
	o->bytes += bytes;
	if (o->flops_rule != F_NONE) o->flops += count_flops(L, o->flops_rule, nargs);
	return top - nargs;
}

static int is_skipped(const char *name)
{
	for (int i = 0; skipped[i]; i++)
		if (strcmp(skipped[i], name) == 0) return 1;
	return 0;
}

/* Wraps every C function of the table on top of the stack (once). */
static void wrap_table(lua_State *L)
{
	int t = lua_gettop(L);
	lua_pushnil(L);
	while (lua_next(L, t)) {
		if (lua_type(L, -2) == LUA_TSTRING && lua_iscfunction(L, -1) && lua_tocfunction(L, -1) != prof_wrapper) {
			const char *name = lua_tostring(L, -2);
			prof_op *o = is_skipped(name) ? NULL : op_for(name);
			if (o) {
				lua_pushvalue(L, -2);          /* key */
				lua_pushvalue(L, -2);          /* original */
				lua_pushlightuserdata(L, o);
				lua_pushcclosure(L, prof_wrapper, 2);
				lua_rawset(L, t);              /* replacing an existing key during lua_next is allowed */
			}
		}
		lua_pop(L, 1);
	}
}

static void wrap_all(lua_State *L)
{
	lua_getfield(L, LUA_REGISTRYINDEX, "sd.Tensor.methods");
	if (lua_istable(L, -1)) wrap_table(L);
	lua_pop(L, 1);
	lua_getfield(L, LUA_REGISTRYINDEX, "sd.core");
	if (lua_istable(L, -1)) {
		lua_getfield(L, -1, "tensor");
		if (lua_istable(L, -1)) wrap_table(L);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

static void add_line(luaL_Buffer *b, const char *label, long long calls, double s, double total, double flops, double bytes)
{
	char line[200];
	char gf[24] = "", gfs[24] = "", gbs[24] = "";
	if (flops > 0) {
		snprintf(gf, sizeof gf, "%.1f", flops / 1e9);
		snprintf(gfs, sizeof gfs, "%.1f", s > 0 ? flops / 1e9 / s : 0);
	} else if (bytes > 0 && s > 0) {
		snprintf(gbs, sizeof gbs, "%.1f", bytes / 1e9 / s);
	}
	snprintf(line, sizeof line, "%-22s %9lld %10.3f %6.1f %10s %9s %8s\n", label, calls, s,
	         total > 0 ? 100.0 * s / total : 0, gf, gfs, gbs);
	luaL_addstring(b, line);
}

static int cmp_seconds(const void *x, const void *y)
{
	double a = (*(prof_op *const *)x)->seconds, b = (*(prof_op *const *)y)->seconds;
	return a < b ? 1 : a > b ? -1 : 0;
}

/* The counters summed per kind and over all operations. */
typedef struct prof_totals {
	double seconds[NKINDS], flops[NKINDS], bytes[NKINDS], total, tflops;
	long long calls[NKINDS], tcalls;
} prof_totals;

static prof_totals sum_kinds(void)
{
	prof_totals t = {0};
	for (int i = 0; i < nops; i++) {
		const prof_op *o = &ops[i];
		t.seconds[o->kind] += o->seconds; t.flops[o->kind] += o->flops;
		t.bytes[o->kind] += o->bytes; t.calls[o->kind] += o->calls;
		t.total += o->seconds; t.tflops += o->flops; t.tcalls += o->calls;
	}
	return t;
}

/* profile_report() -> the table as a string */
static int l_report(lua_State *L)
{
	prof_totals t = sum_kinds();
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	char head[200];
	snprintf(head, sizeof head, "sdlua profile: %.3f s in %lld calls of tensor operations, %.1f GFLOP\n", t.total,
	         t.tcalls, t.tflops / 1e9);
	luaL_addstring(&b, head);
	snprintf(head, sizeof head, "%-22s %9s %10s %6s %10s %9s %8s\n", "kind / operation", "calls", "seconds", "%",
	         "GFLOP", "GFLOP/s", "GB/s");
	luaL_addstring(&b, head);
	int order[NKINDS];
	for (int k = 0; k < NKINDS; k++) order[k] = k;
	for (int i = 1; i < NKINDS; i++) /* kinds by time, insertion sort */
		for (int j = i; j > 0 && t.seconds[order[j]] > t.seconds[order[j - 1]]; j--) {
			int swap = order[j]; order[j] = order[j - 1]; order[j - 1] = swap;
		}
	prof_op *sorted[MAX_OPS];
	for (int i = 0; i < nops; i++) sorted[i] = &ops[i];
	qsort(sorted, (size_t)nops, sizeof sorted[0], cmp_seconds);
	for (int ki = 0; ki < NKINDS; ki++) {
		int k = order[ki];
		if (t.calls[k] == 0) continue;
		add_line(&b, kind_names[k], t.calls[k], t.seconds[k], t.total, t.flops[k], t.bytes[k]);
		for (int i = 0; i < nops; i++) {
			prof_op *o = sorted[i];
			if (o->kind != k || o->calls == 0) continue;
			char label[40];
			snprintf(label, sizeof label, "  %s", o->name);
			add_line(&b, label, o->calls, o->seconds, t.total, o->flops, o->bytes);
		}
	}
	add_line(&b, "total", t.tcalls, t.total, t.total, t.tflops, 0);
	luaL_pushresult(&b);
	return 1;
}

static void push_counts(lua_State *L, long long calls, double s, double flops, double bytes)
{
	lua_createtable(L, 0, 4);
	lua_pushinteger(L, calls); lua_setfield(L, -2, "calls");
	lua_pushnumber(L, s); lua_setfield(L, -2, "seconds");
	lua_pushnumber(L, flops); lua_setfield(L, -2, "flops");
	lua_pushnumber(L, bytes); lua_setfield(L, -2, "bytes");
}

/* profile([on]) -> counters {enabled, seconds, flops, calls, kinds = {conv = {calls, seconds,
 * flops, bytes}, ...}, ops = {conv2d = {kind, calls, seconds, flops, bytes}, ...}}.
 * profile(true) starts counting (wrapping the operations on first use), profile(false) stops. */
static int l_profile(lua_State *L)
{
	if (!lua_isnoneornil(L, 1)) {
		luaL_checktype(L, 1, LUA_TBOOLEAN);
		if (lua_toboolean(L, 1)) {
			wrap_all(L);
			enabled = 1;
		} else {
			enabled = 0;
		}
	}
	prof_totals t = sum_kinds();
	lua_createtable(L, 0, 6);
	lua_createtable(L, 0, nops);
	for (int i = 0; i < nops; i++) {
		prof_op *o = &ops[i];
		push_counts(L, o->calls, o->seconds, o->flops, o->bytes);
		lua_pushstring(L, kind_names[o->kind]);
		lua_setfield(L, -2, "kind");
		lua_setfield(L, -2, o->name);
	}
	lua_setfield(L, -2, "ops");
	lua_createtable(L, 0, NKINDS);
	for (int k = 0; k < NKINDS; k++) {
		push_counts(L, t.calls[k], t.seconds[k], t.flops[k], t.bytes[k]);
		lua_setfield(L, -2, kind_names[k]);
	}
	lua_setfield(L, -2, "kinds");
	lua_pushboolean(L, enabled); lua_setfield(L, -2, "enabled");
	lua_pushnumber(L, t.total); lua_setfield(L, -2, "seconds");
	lua_pushnumber(L, t.tflops); lua_setfield(L, -2, "flops");
	lua_pushinteger(L, t.tcalls); lua_setfield(L, -2, "calls");
	return 1;
}

/* profile_reset(): zeroes every counter (counting stays on or off) */
static int l_reset(lua_State *L)
{
	(void)L;
	for (int i = 0; i < nops; i++) {
		ops[i].calls = 0;
		ops[i].seconds = ops[i].flops = ops[i].bytes = 0;
	}
	return 0;
}

static void print_report(void)
{
	if (!print_at_exit) return;
	long long calls = 0;
	for (int i = 0; i < nops; i++) calls += ops[i].calls;
	if (calls == 0) return;
	lua_State *L = luaL_newstate(); /* a state of our own: the program's may be closed */
	if (!L) return;
	lua_pushcfunction(L, l_report);
	if (lua_pcall(L, 0, 1, 0) == LUA_OK) fputs(lua_tostring(L, -1), stderr);
	lua_close(L);
}

void sdl_open_profile(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"profile", l_profile},
		{"profile_reset", l_reset},
		{"profile_report", l_report},
		{NULL, NULL},
	};
	sdl_addcore(L, NULL, fns);
	const char *env = getenv("SDLUA_PROFILE");
	if (env && *env && strcmp(env, "0") != 0) {
		wrap_all(L);
		enabled = 1;
		if (!print_at_exit) atexit(print_report);
		print_at_exit = 1;
	}
}
