/* sd.core.zmq: ZeroMQ sockets (libzmq) for the Jupyter kernel (lua/sd/jupyter/kernel.lua) and its
 * tests. A small, checked subset of the libzmq API:
 *
 *   local zmq = require("sd.core").zmq
 *   local ctx = zmq.context()
 *   local s = ctx:socket("ROUTER")          -- ROUTER DEALER PUB SUB REP REQ PAIR PUSH PULL
 *   s:setopt("linger", 0)                   -- linger rcvtimeo sndtimeo subscribe unsubscribe identity
 *                                              sndhwm rcvhwm
 *   s:bind("tcp://127.0.0.1:*") ; s:endpoint()   -- the endpoint actually bound (port chosen)
 *   s:connect(endpoint)
 *   s:send(parts_or_string)                 -- a list of frames is one multipart message
 *   s:recv([nowait]) -> list of frames | nil, "again"   (rcvtimeo expiry also gives "again")
 *   zmq.poll({s1, s2, ...}, timeout_ms)     -- -> {true/false per socket}, count; -1 waits forever
 *   s:close() ; ctx:term()                  -- both also happen at garbage collection
 *   zmq.echo(s)                             -- moves s to a background thread that echoes every
 *                                              message back (the Jupyter heartbeat)
 *   zmq.trap_sigint() ; zmq.interruptible(on)   -- kernel-mode Ctrl-C, see below
 *   zmq.version()                           -- libzmq's "major.minor.patch"
 *
 * Errors (bad endpoint, wrong socket state, closed socket) are Lua errors naming the call. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "lsd.h"

#define ZCTX "sd.zmq.Context"
#define ZSOCK "sd.zmq.Socket"
#define MAX_POLL 64
#define MAX_ECHO_PARTS 16

typedef struct { void *ctx; int nsock; } zctx;       /* nsock: sockets open from Lua */
typedef struct { void *sock; int type; zctx *owner; } zsock;

static int zerror(lua_State *L, const char *op)
{
	return luaL_error(L, "zmq.%s: %s", op, zmq_strerror(zmq_errno()));
}

/* ---- context ----------------------------------------------------------------------------- */
static zctx *check_ctx(lua_State *L, int idx)
{
	zctx *c = luaL_checkudata(L, idx, ZCTX);
	if (!c->ctx) luaL_argerror(L, idx, "zmq context has been terminated");
	return c;
}

static int l_context(lua_State *L)
{
	zctx *c = lua_newuserdatauv(L, sizeof *c, 0);
	c->ctx = NULL;
	c->nsock = 0;
	luaL_setmetatable(L, ZCTX);
	c->ctx = zmq_ctx_new();
	if (!c->ctx) return zerror(L, "context");
	return 1;
}

/* Terminating waits for every socket of the context to be closed (with linger 0 they close at
 * once); the sockets closed by their own __gc first, as they were created after the context. */
static int l_ctx_term(lua_State *L)
{
	zctx *c = luaL_checkudata(L, 1, ZCTX);
	if (c->ctx) {
		void *ctx = c->ctx;
		if (c->nsock > 0)
			return luaL_error(L, "zmq.term: %d socket(s) of this context still open (close them first)", c->nsock);
		c->ctx = NULL;
		while (zmq_ctx_term(ctx) != 0 && zmq_errno() == EINTR) {
		}
	}
	return 0;
}

static const struct { const char *name; int type; } socket_types[] = {
	{"ROUTER", ZMQ_ROUTER}, {"DEALER", ZMQ_DEALER}, {"PUB", ZMQ_PUB},   {"SUB", ZMQ_SUB},
	{"REP", ZMQ_REP},       {"REQ", ZMQ_REQ},       {"PAIR", ZMQ_PAIR}, {"PUSH", ZMQ_PUSH},
	{"PULL", ZMQ_PULL},     {NULL, 0}};

static int l_ctx_socket(lua_State *L)
{
	zctx *c = check_ctx(L, 1);
	const char *name = luaL_checkstring(L, 2);
	int i, type = -1;
	for (i = 0; socket_types[i].name; i++)
		if (strcmp(name, socket_types[i].name) == 0) type = socket_types[i].type;
	if (type < 0) return luaL_argerror(L, 2, lua_pushfstring(L, "unknown socket type '%s'", name));
	zsock *s = lua_newuserdatauv(L, sizeof *s, 1);
	s->sock = NULL;
	s->type = type;
	luaL_setmetatable(L, ZSOCK);
	lua_pushvalue(L, 1); /* the socket keeps its context alive */
	lua_setiuservalue(L, -2, 1);
	s->owner = c;
	s->sock = zmq_socket(c->ctx, type);
	if (!s->sock) return zerror(L, "socket");
	c->nsock++;
	return 1;
}

/* ---- sockets ----------------------------------------------------------------------------- */
static zsock *check_sock(lua_State *L, int idx)
{
	zsock *s = luaL_checkudata(L, idx, ZSOCK);
	if (!s->sock) luaL_argerror(L, idx, "zmq socket has been closed");
	return s;
}

static int l_close(lua_State *L)
{
	zsock *s = luaL_checkudata(L, 1, ZSOCK);
	if (s->sock) {
		int linger = 0;
		zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
		zmq_close(s->sock);
		s->sock = NULL;
		s->owner->nsock--;
	}
	return 0;
}

static int l_bind(lua_State *L)
{
	zsock *s = check_sock(L, 1);
	const char *ep = luaL_checkstring(L, 2);
	if (zmq_bind(s->sock, ep) != 0) return luaL_error(L, "zmq.bind %s: %s", ep, zmq_strerror(zmq_errno()));
	lua_settop(L, 1);
	return 1;
}

static int l_connect(lua_State *L)
{
	zsock *s = check_sock(L, 1);
	const char *ep = luaL_checkstring(L, 2);
	if (zmq_connect(s->sock, ep) != 0) return luaL_error(L, "zmq.connect %s: %s", ep, zmq_strerror(zmq_errno()));
	lua_settop(L, 1);
	return 1;
}

static int l_endpoint(lua_State *L)
{
	zsock *s = check_sock(L, 1);
	char buf[1024];
	size_t n = sizeof buf;
	if (zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, buf, &n) != 0) return zerror(L, "endpoint");
	lua_pushstring(L, buf);
	return 1;
}

static int l_setopt(lua_State *L)
{
	zsock *s = check_sock(L, 1);
	static const char *const names[] = {"linger", "rcvtimeo", "sndtimeo", "subscribe", "unsubscribe",
	                                    "identity", "sndhwm", "rcvhwm", NULL};
	static const int opts[] = {ZMQ_LINGER, ZMQ_RCVTIMEO, ZMQ_SNDTIMEO, ZMQ_SUBSCRIBE, ZMQ_UNSUBSCRIBE,
	                           ZMQ_ROUTING_ID, ZMQ_SNDHWM, ZMQ_RCVHWM};
	int which = luaL_checkoption(L, 2, NULL, names);
	int r;
	if (opts[which] == ZMQ_SUBSCRIBE || opts[which] == ZMQ_UNSUBSCRIBE || opts[which] == ZMQ_ROUTING_ID) {
		size_t n;
		const char *v = luaL_checklstring(L, 3, &n);
		r = zmq_setsockopt(s->sock, opts[which], v, n);
	} else {
		lua_Integer v = luaL_checkinteger(L, 3);
		if (v < -1 || v > 0x7fffffff) return luaL_argerror(L, 3, "value out of range");
		int iv = (int)v;
		r = zmq_setsockopt(s->sock, opts[which], &iv, sizeof iv);
	}
	if (r != 0) return luaL_error(L, "zmq.setopt %s: %s", names[which], zmq_strerror(zmq_errno()));
	lua_settop(L, 1);
	return 1;
}

/* send(frames [, nowait]): frames is a string or a non-empty list of strings (one multipart
 * message). Returns true, or nil, "again" when nowait and the message cannot be queued. */
static int l_send(lua_State *L)
{
	zsock *s = check_sock(L, 1);
	int nowait = lua_toboolean(L, 3);
	lua_Integer n, i;
	if (lua_type(L, 2) == LUA_TSTRING) {
		n = 1;
	} else {
		luaL_checktype(L, 2, LUA_TTABLE);
		n = luaL_len(L, 2);
		if (n < 1) return luaL_argerror(L, 2, "empty message (no frames)");
		for (i = 1; i <= n; i++) {
			if (lua_geti(L, 2, i) != LUA_TSTRING)
				return luaL_argerror(L, 2, lua_pushfstring(L, "frame %d is a %s, not a string", (int)i,
				                                           luaL_typename(L, -1)));
			lua_pop(L, 1);
		}
	}
	for (i = 1; i <= n; i++) {
		size_t len;
		const char *p;
		int flags = (i < n ? ZMQ_SNDMORE : 0) | (nowait ? ZMQ_DONTWAIT : 0);
		if (lua_type(L, 2) == LUA_TSTRING) {
			p = lua_tolstring(L, 2, &len);
		} else {
			lua_geti(L, 2, i);
			p = lua_tolstring(L, -1, &len);
			lua_pop(L, 1); /* the string stays alive in the table */
		}
		for (;;) {
			if (zmq_send(s->sock, p, len, flags) >= 0) break;
			if (zmq_errno() == EINTR) continue;
			if (zmq_errno() == EAGAIN && i == 1) {
				lua_pushnil(L);
				lua_pushliteral(L, "again");
				return 2;
			}
			return zerror(L, "send");
		}
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* recv([nowait]) -> list of frames (one whole multipart message), or nil, "again". */
static int l_recv(lua_State *L)
{
	zsock *s = check_sock(L, 1);
	int nowait = lua_toboolean(L, 2);
	int more = 1, n = 0;
	lua_newtable(L);
	while (more) {
		zmq_msg_t msg;
		zmq_msg_init(&msg);
		int r = zmq_msg_recv(&msg, s->sock, (nowait && n == 0) ? ZMQ_DONTWAIT : 0);
		if (r < 0) {
			int e = zmq_errno();
			zmq_msg_close(&msg);
			if (e == EINTR) continue;
			if (e == EAGAIN && n == 0) {
				lua_pushnil(L);
				lua_pushliteral(L, "again");
				return 2;
			}
			errno = e;
			return luaL_error(L, "zmq.recv: %s", zmq_strerror(e));
		}
		lua_pushlstring(L, zmq_msg_data(&msg), zmq_msg_size(&msg));
		lua_rawseti(L, -2, ++n);
		more = zmq_msg_more(&msg);
		zmq_msg_close(&msg);
	}
	return 1;
}

static int l_sock_tostring(lua_State *L)
{
	zsock *s = luaL_checkudata(L, 1, ZSOCK);
	const char *tn = "?";
	int i;
	for (i = 0; socket_types[i].name; i++)
		if (socket_types[i].type == s->type) tn = socket_types[i].name;
	lua_pushfstring(L, "zmq socket %s%s", tn, s->sock ? "" : " (closed)");
	return 1;
}

/* ---- poll -------------------------------------------------------------------------------- */
/* poll(sockets, timeout_ms): waits until one of the sockets has a message to read or the time
 * is up (-1: no limit). A signal (Ctrl-C) ends the wait early with no socket ready. Returns a
 * list of booleans (readable or not, in the order of `sockets`) and the number readable. */
static int l_poll(lua_State *L)
{
	zmq_pollitem_t items[MAX_POLL];
	lua_Integer i, n;
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_Number tmo = luaL_optnumber(L, 2, -1);
	n = luaL_len(L, 1);
	if (n < 1 || n > MAX_POLL) return luaL_argerror(L, 1, "poll: 1 to 64 sockets");
	for (i = 0; i < n; i++) {
		lua_geti(L, 1, i + 1);
		zsock *s = luaL_testudata(L, -1, ZSOCK);
		if (!s || !s->sock) return luaL_argerror(L, 1, lua_pushfstring(L, "item %d is not an open zmq socket", (int)(i + 1)));
		lua_pop(L, 1);
		items[i].socket = s->sock;
		items[i].fd = 0;
		items[i].events = ZMQ_POLLIN;
		items[i].revents = 0;
	}
	if (tmo != tmo) return luaL_argerror(L, 2, "timeout is NaN");
	if (tmo > 2e9) tmo = 2e9; /* about 23 days: as good as forever, and fits a long */
	long timeout = tmo < 0 ? -1 : (long)tmo;
	int r = zmq_poll(items, (int)n, timeout);
	if (r < 0) {
		if (zmq_errno() != EINTR) return zerror(L, "poll");
		r = 0;
		for (i = 0; i < n; i++) items[i].revents = 0;
	}
	lua_createtable(L, (int)n, 0);
	for (i = 0; i < n; i++) {
		lua_pushboolean(L, (items[i].revents & ZMQ_POLLIN) != 0);
		lua_rawseti(L, -2, i + 1);
	}
	lua_pushinteger(L, r);
	return 2;
}

/* ---- echo thread (heartbeat) ------------------------------------------------------------- */
static void *echo_main(void *arg)
{
	void *sock = arg;
	for (;;) {
		zmq_msg_t parts[MAX_ECHO_PARTS];
		int n = 0, more = 1, failed = 0, i;
		while (more) {
			zmq_msg_t m;
			zmq_msg_init(&m);
			if (zmq_msg_recv(&m, sock, 0) < 0) {
				int e = zmq_errno();
				zmq_msg_close(&m);
				if (e == EINTR) continue;
				failed = 1;
				break;
			}
			more = zmq_msg_more(&m);
			if (n < MAX_ECHO_PARTS) {
				parts[n++] = m;
			} else {
				zmq_msg_close(&m); /* longer messages are cut: a heartbeat is one frame */
			}
		}
		if (failed) {
			for (i = 0; i < n; i++) zmq_msg_close(&parts[i]);
			break; /* ETERM: the context is being terminated */
		}
		for (i = 0; i < n; i++) {
			if (zmq_msg_send(&parts[i], sock, i + 1 < n ? ZMQ_SNDMORE : 0) < 0) zmq_msg_close(&parts[i]);
		}
	}
	int linger = 0;
	zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
	zmq_close(sock);
	return NULL;
}

/* echo(socket): hands the (bound) socket to a detached thread that sends every message it
 * receives straight back, so the heartbeat answers while Lua code is busy. The socket object
 * becomes closed for Lua; the thread ends when the context is terminated. */
static int l_echo(lua_State *L)
{
	zsock *s = check_sock(L, 1);
	pthread_t th;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old); /* the thread inherits a mask blocking every signal */
	int r = pthread_create(&th, NULL, echo_main, s->sock);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) return luaL_error(L, "zmq.echo: cannot start thread: %s", strerror(r));
	pthread_detach(th);
	s->sock = NULL;
	s->owner->nsock--;
	return 0;
}

/* ---- Ctrl-C in kernel mode ------------------------------------------------------------------
 * The sdlua program's own SIGINT handler counts Ctrl-Cs per chunk and kills the process at the
 * third: right for a REPL, wrong for a kernel that lives through many interrupts. trap_sigint()
 * replaces it: while interruptible(true) is in force (user code running), SIGINT raises the
 * error "interrupted!" at the next Lua instruction of the main thread (and raises the flag C
 * loops poll); otherwise it is ignored (it only ends a zmq.poll wait early). */
static lua_State *main_L;
static volatile sig_atomic_t armed;
static volatile sig_atomic_t pending;

static void on_sigint(int sig)
{
	(void)sig;
	if (armed && main_L) {
		sdl_interrupt_lua(main_L);
	} else {
		pending = 1;
	}
}

static int l_trap_sigint(lua_State *L)
{
	struct sigaction sa;
	lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
	main_L = lua_tothread(L, -1);
	lua_pop(L, 1);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sigint;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGINT, &sa, NULL) != 0) return luaL_error(L, "zmq.trap_sigint: %s", strerror(errno));
	return 0;
}

/* interruptible(on): arms or disarms the handler above. Disarming removes a stop still pending
 * and clears the C flag. Returns whether a SIGINT arrived while disarmed since the last call. */
static int l_interruptible(lua_State *L)
{
	int on = lua_toboolean(L, 1);
	armed = on;
	if (!on) {
		sdl_interrupt_clear(main_L ? main_L : L);
	}
	lua_pushboolean(L, pending != 0);
	pending = 0;
	return 1;
}

static int l_version(lua_State *L)
{
	int a, b, c;
	zmq_version(&a, &b, &c);
	lua_pushfstring(L, "%d.%d.%d", a, b, c);
	return 1;
}

void sdl_open_zmq(lua_State *L)
{
	static const luaL_Reg ctx_methods[] = {{"socket", l_ctx_socket}, {"term", l_ctx_term}, {NULL, NULL}};
	static const luaL_Reg sock_methods[] = {{"bind", l_bind},     {"connect", l_connect}, {"endpoint", l_endpoint},
	                                        {"setopt", l_setopt}, {"send", l_send},       {"recv", l_recv},
	                                        {"close", l_close},   {NULL, NULL}};
	static const luaL_Reg fns[] = {{"context", l_context},         {"poll", l_poll},
	                               {"echo", l_echo},               {"trap_sigint", l_trap_sigint},
	                               {"interruptible", l_interruptible}, {"version", l_version},
	                               {NULL, NULL}};
	if (luaL_newmetatable(L, ZCTX)) {
		luaL_newlib(L, ctx_methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, l_ctx_term);
		lua_setfield(L, -2, "__gc");
		lua_pushliteral(L, "zmq context");
		lua_setfield(L, -2, "__name");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, ZSOCK)) {
		luaL_newlib(L, sock_methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, l_close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, l_close);
		lua_setfield(L, -2, "__close");
		lua_pushcfunction(L, l_sock_tostring);
		lua_setfield(L, -2, "__tostring");
	}
	lua_pop(L, 1);
	sdl_addcore(L, "zmq", fns);
}
