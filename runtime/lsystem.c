/* System-level functions of sd.core: thread count, memory statistics, CPU description, a
 * monotonic clock, zlib helpers (gunzip, raw inflate for zip entries, crc32), and the
 * interrupt flag that the sdlua program raises on Ctrl-C. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <omp.h>
#include <zlib.h>

#include "cpu.h"
#include "gemm.h"
#include "lsd.h"
#include "storage.h"

/* ---- interrupt ---------------------------------------------------------------------------
 * Set from a SIGINT handler (the REPL's in lsdlua.c, the Jupyter kernel's in lzmq.c), read by
 * long-running C loops that want to stop early, cleared before each chunk is run. */
static volatile sig_atomic_t interrupt_flag;

void sdl_set_interrupted(int on) { interrupt_flag = on ? 1 : 0; }
int sdl_interrupted(void) { return interrupt_flag != 0; }

static void stop_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	lua_sethook(L, NULL, 0, 0);
	luaL_error(L, "interrupted!");
}

void sdl_interrupt_lua(lua_State *L)
{
	sdl_set_interrupted(1);
	lua_sethook(L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

void sdl_interrupt_clear(lua_State *L)
{
	if (lua_gethook(L) == stop_hook) lua_sethook(L, NULL, 0, 0);
	sdl_set_interrupted(0);
}

/* ---- threads ----------------------------------------------------------------------------- */
#define MAX_THREADS 1024

static int thread_count; /* 0 until first set */

static void set_threads(int n)
{
	omp_set_num_threads(n);
	openblas_set_num_threads(n);
	thread_count = n;
}

static int default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1) n = 1;
	if (n > MAX_THREADS) n = MAX_THREADS;
	return (int)n;
}

/* Parses a positive thread count; -1 if s is not one. */
static int parse_threads(const char *s)
{
	char *end;
	long n;
	while (isspace((unsigned char)*s)) s++;
	if (!isdigit((unsigned char)*s)) return -1;
	errno = 0;
	n = strtol(s, &end, 10);
	while (isspace((unsigned char)*end)) end++;
	if (errno || *end || n < 1 || n > MAX_THREADS) return -1;
	return (int)n;
}

/* Once per process: SDLUA_THREADS if set and valid, else the number of online cores. */
static void init_threads(void)
{
	const char *env;
	int n;
	if (thread_count) return;
	n = default_threads();
	env = getenv("SDLUA_THREADS");
	if (env && *env) {
		int v = parse_threads(env);
		if (v > 0)
			n = v;
		else
			fprintf(stderr, "sdlua: SDLUA_THREADS=\"%s\" is not a thread count from 1 to %d; using %d\n",
			        env, MAX_THREADS, n);
	}
	set_threads(n);
}

/* threads([n]) -> the thread count in force (after setting it to n when given). */
static int l_threads(lua_State *L)
{
	if (!lua_isnoneornil(L, 1)) {
		lua_Integer n;
		if (!lua_isinteger(L, 1)) {
			if (lua_type(L, 1) == LUA_TNUMBER)
				return luaL_error(L, "threads: the count must be an integer, got %f",
				                  (LUAI_UACNUMBER)lua_tonumber(L, 1));
			return luaL_typeerror(L, 1, "integer");
		}
		n = lua_tointeger(L, 1);
		if (n < 1 || n > MAX_THREADS)
			return luaL_error(L, "threads: count %I out of range 1..%d", (LUAI_UACINT)n, MAX_THREADS);
		set_threads((int)n);
	}
	lua_pushinteger(L, thread_count ? thread_count : omp_get_max_threads());
	return 1;
}

/* ---- memory ------------------------------------------------------------------------------ */
/* A "Vm...:   1234 kB" line of /proc/self/status in bytes, or -1. */
static long long proc_status_kb(const char *key)
{
	char line[256];
	size_t klen = strlen(key);
	long long v = -1;
	FILE *f = fopen("/proc/self/status", "r");
	if (!f) return -1;
	while (fgets(line, sizeof line, f)) {
		if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
			v = strtoll(line + klen + 1, NULL, 10) * 1024;
			break;
		}
	}
	fclose(f);
	return v;
}

static void setfield_int(lua_State *L, const char *k, long long v)
{
	lua_pushinteger(L, (lua_Integer)v);
	lua_setfield(L, -2, k);
}

/* memory() -> {current, peak, pooled, rss, peak_rss} in bytes (rss fields absent without /proc) */
static int l_memory(lua_State *L)
{
	sd_memory_stats s = sd_memory();
	long long rss = proc_status_kb("VmRSS"), hwm = proc_status_kb("VmHWM");
	lua_createtable(L, 0, 5);
	setfield_int(L, "current", (long long)s.current);
	setfield_int(L, "peak", (long long)s.peak);
	setfield_int(L, "pooled", (long long)s.pooled);
	if (rss >= 0) setfield_int(L, "rss", rss);
	if (hwm >= 0) setfield_int(L, "peak_rss", hwm);
	return 1;
}

/* memory_reset_peak(): the tensor-heap peak, and the kernel's peak RSS where it allows that. */
static int l_memory_reset_peak(lua_State *L)
{
	FILE *f;
	(void)L;
	sd_memory_reset_peak();
	f = fopen("/proc/self/clear_refs", "w");
	if (f) {
		fputs("5", f); /* resets VmHWM to VmRSS (Linux >= 4.0) */
		fclose(f);
	}
	return 0;
}

static int l_memory_trim(lua_State *L)
{
	(void)L;
	sd_memory_trim();
	sd_workspace_release_all();
	return 0;
}

/* ---- cpu, clock -------------------------------------------------------------------------- */
static int l_cpu(lua_State *L)
{
	const char *feat = sd_cpu_describe();
	const char *core = openblas_get_corename();
	const char *mode;
	switch (openblas_get_parallel()) {
	case 0: mode = "sequential"; break;
	case 1: mode = "pthreads"; break;
	case 2: mode = "OpenMP"; break;
	default: mode = "unknown"; break;
	}
	lua_pushfstring(L, "%s; OpenBLAS %s (%s)", feat && *feat ? feat : "no SIMD extensions",
	                core ? core : "?", mode);
	return 1;
}

static int l_clock(lua_State *L)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
	return 1;
}

/* ---- zlib -------------------------------------------------------------------------------- */
#define GUNZIP_MAX ((lua_Integer)1 << 30)     /* default output cap of gunzip: 1 GiB */
#define INFLATE_MAX ((lua_Integer)1 << 34)    /* largest expected_size inflate_raw accepts */
#define ZCHUNK ((size_t)1 << 30)              /* zlib counts in uInt: feed at most this at once */

/* The z_stream lives in a userdata so that a Lua error (out of memory while the output grows)
 * still releases zlib's state through __gc. */
typedef struct zbox {
	z_stream z;
	int active;
} zbox;

static int zbox_gc(lua_State *L)
{
	zbox *b = lua_touserdata(L, 1);
	if (b->active) {
		inflateEnd(&b->z);
		b->active = 0;
	}
	return 0;
}

static zbox *zbox_new(lua_State *L, int window_bits, const char *op)
{
	zbox *b = lua_newuserdatauv(L, sizeof *b, 0);
	int rc;
	memset(b, 0, sizeof *b);
	if (luaL_newmetatable(L, "sd.zstream")) {
		lua_pushcfunction(L, zbox_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	rc = inflateInit2(&b->z, window_bits);
	if (rc != Z_OK) {
		if (rc == Z_MEM_ERROR) luaL_error(L, "%s: not enough memory", op);
		luaL_error(L, "%s: zlib initialisation failed (%d)", op, rc);
	}
	b->active = 1;
	return b;
}

static void zbox_end(zbox *b)
{
	if (b->active) {
		inflateEnd(&b->z);
		b->active = 0;
	}
}

static const char *zmsg(const zbox *b, int rc)
{
	if (b->z.msg) return b->z.msg;
	switch (rc) {
	case Z_DATA_ERROR: return "invalid compressed data";
	case Z_MEM_ERROR: return "not enough memory";
	case Z_BUF_ERROR: return "unexpected end of data";
	default: return "zlib error";
	}
}

/* Inflates in[0..inlen) into the buffer until the stream ends. gzip mode accepts several
 * concatenated members. Output beyond cap is an error. Returns the bytes written. */
static size_t inflate_all(lua_State *L, zbox *zb, luaL_Buffer *buf, const unsigned char *in,
                          size_t inlen, size_t cap, int gzip, const char *op)
{
	size_t pos = 0, total = 0;
	for (;;) {
		int rc;
		size_t room;
		unsigned char *out;
		if (zb->z.avail_in == 0 && pos < inlen) {
			size_t n = inlen - pos < ZCHUNK ? inlen - pos : ZCHUNK;
			zb->z.next_in = (Bytef *)(in + pos);
			zb->z.avail_in = (uInt)n;
			pos += n;
		}
		/* room for at least one byte past the cap, so that going over is noticed */
		room = cap - total + 1;
		if (room > ((size_t)1 << 20)) room = (size_t)1 << 20;
		if (room > (size_t)UINT_MAX) room = UINT_MAX;
		out = (unsigned char *)luaL_prepbuffsize(buf, room);
		zb->z.next_out = out;
		zb->z.avail_out = (uInt)room;
		rc = inflate(&zb->z, Z_NO_FLUSH);
		{
			size_t got = room - zb->z.avail_out;
			luaL_addsize(buf, got);
			total += got;
		}
		if (total > cap)
			luaL_error(L, "%s: output exceeds the limit of %I bytes", op, (LUAI_UACINT)cap);
		if (rc == Z_STREAM_END) {
			size_t left = zb->z.avail_in + (inlen - pos);
			if (!gzip || left == 0) return total;
			/* another gzip member must follow; anything else is trailing garbage */
			if (zb->z.avail_in == 0) {
				size_t n = inlen - pos < ZCHUNK ? inlen - pos : ZCHUNK;
				zb->z.next_in = (Bytef *)(in + pos);
				zb->z.avail_in = (uInt)n;
				pos += n;
			}
			if (zb->z.avail_in < 2 || zb->z.next_in[0] != 0x1f || zb->z.next_in[1] != 0x8b)
				luaL_error(L, "%s: %I bytes of trailing data after the gzip stream", op,
				           (LUAI_UACINT)left);
			inflateReset(&zb->z);
			continue;
		}
		if (rc == Z_BUF_ERROR) {
			if (zb->z.avail_in == 0 && pos >= inlen)
				luaL_error(L, "%s: truncated data (the stream ends early)", op);
			if (zb->z.avail_in != 0 && room == zb->z.avail_out)
				luaL_error(L, "%s: corrupt data (no progress)", op);
		} else if (rc != Z_OK) {
			luaL_error(L, "%s: corrupt data (%s)", op, zmsg(zb, rc));
		}
	}
}

/* gunzip(data [, max_bytes]) -> the decompressed string */
static int l_gunzip(lua_State *L)
{
	size_t inlen;
	const unsigned char *in = (const unsigned char *)luaL_checklstring(L, 1, &inlen);
	lua_Integer cap = luaL_optinteger(L, 2, GUNZIP_MAX);
	size_t hint = 0;
	luaL_Buffer buf;
	zbox *zb;
	if (cap < 0)
		return luaL_error(L, "gunzip: the output limit must not be negative (got %I)",
		                  (LUAI_UACINT)cap);
	if (inlen < 18 || in[0] != 0x1f || in[1] != 0x8b)
		return luaL_error(L, "gunzip: not gzip data (%s)",
		                  inlen < 18 ? "too short" : "no gzip magic bytes");
	/* the trailer holds the size mod 2^32 of the last member: a good first guess */
	hint = (size_t)in[inlen - 4] | (size_t)in[inlen - 3] << 8 | (size_t)in[inlen - 2] << 16 |
	       (size_t)in[inlen - 1] << 24;
	if (hint > (size_t)cap) hint = (size_t)cap;
	if (hint / 1032 > inlen) hint = inlen * 1032; /* deflate never expands more than that */
	if (hint > ((size_t)1 << 28)) hint = (size_t)1 << 28;
	zb = zbox_new(L, 16 + MAX_WBITS, "gunzip");
	luaL_buffinitsize(L, &buf, hint + 1);
	inflate_all(L, zb, &buf, in, inlen, (size_t)cap, 1, "gunzip");
	zbox_end(zb);
	luaL_pushresult(&buf);
	return 1;
}

/* inflate_raw(data, expected_size) -> string: a raw deflate stream (zip method 8) that must
 * decompress to exactly expected_size bytes. */
static int l_inflate_raw(lua_State *L)
{
	size_t inlen, got;
	const unsigned char *in = (const unsigned char *)luaL_checklstring(L, 1, &inlen);
	lua_Integer want = luaL_checkinteger(L, 2);
	luaL_Buffer buf;
	zbox *zb;
	if (want < 0 || want > INFLATE_MAX)
		return luaL_error(L, "inflate_raw: expected size %I out of range 0..%I", (LUAI_UACINT)want,
		                  (LUAI_UACINT)INFLATE_MAX);
	if (inlen == 0) return luaL_error(L, "inflate_raw: empty input");
	if ((size_t)want / 1032 > inlen) /* deflate never expands more than about 1032:1 */
		return luaL_error(L, "inflate_raw: %I compressed bytes cannot hold %I bytes",
		                  (LUAI_UACINT)inlen, (LUAI_UACINT)want);
	zb = zbox_new(L, -MAX_WBITS, "inflate_raw");
	luaL_buffinitsize(L, &buf, (size_t)want + 1);
	got = inflate_all(L, zb, &buf, in, inlen, (size_t)want, 0, "inflate_raw");
	zbox_end(zb);
	if (got != (size_t)want)
		return luaL_error(L, "inflate_raw: got %I bytes, expected %I", (LUAI_UACINT)got,
		                  (LUAI_UACINT)want);
	luaL_pushresult(&buf);
	return 1;
}

/* crc32(data [, crc]) -> the CRC-32 (zip/gzip polynomial) as a non-negative integer; pass the
 * previous result as crc to continue a running checksum. */
static int l_crc32(lua_State *L)
{
	size_t len;
	const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
	lua_Integer start = luaL_optinteger(L, 2, 0);
	uLong crc;
	if (start < 0 || start > (lua_Integer)0xffffffff)
		return luaL_error(L, "crc32: the running crc must be in 0..0xffffffff (got %I)",
		                  (LUAI_UACINT)start);
	crc = (uLong)start;
	crc = crc32_z(crc, s, len);
	lua_pushinteger(L, (lua_Integer)(crc & 0xffffffffu));
	return 1;
}

static const luaL_Reg system_fns[] = {
	{"threads", l_threads},
	{"memory", l_memory},
	{"memory_reset_peak", l_memory_reset_peak},
	{"memory_trim", l_memory_trim},
	{"cpu", l_cpu},
	{"clock", l_clock},
	{"gunzip", l_gunzip},
	{"inflate_raw", l_inflate_raw},
	{"crc32", l_crc32},
	{NULL, NULL},
};

void sdl_open_system(lua_State *L)
{
	init_threads();
	sdl_addcore(L, NULL, system_fns);
}
