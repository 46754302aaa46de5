/* sdlua: the Lua 5.4 interpreter with the sd core linked in.
 *
 *   sdlua [options] [script [args...]]
 *   sdlua txt2img|img2img|info|make-checkpoint [options]    (lua/sd/cli.lua, docs/cli.md)
 *
 * Runs a script with the global `arg` table laid out as the stock lua program lays it out, or
 * reads chunks interactively (libedit line editing and history on a terminal, plain lines from a
 * pipe). The Lua modules of the tree are found next to the executable (<bin>/../lua), the C core
 * is preloaded as "sd.core", and the global `sd` holds require "sd" before anything runs.
 * Ctrl-C stops the running chunk with the error "interrupted!"; at the prompt it clears the
 * line. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <editline/readline.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lsd.h"

#define SDLUA_VERSION "0.1.0"
#define PROMPT1 "> "
#define PROMPT2 ">> "
#define HISTORY_MAX 1000

static const char *progname = "sdlua";

static void usage(const char *bad, FILE *to)
{
	if (bad) fprintf(to, "%s: %s\n", progname, bad);
	fprintf(to,
	        "usage: %s [options] [script [args...]]\n"
	        "  -e code   run the string 'code'\n"
	        "  -l mod    require 'mod' into the global 'mod' (-l g=mod: into the global 'g')\n"
	        "  -i        interactive mode after running the script\n"
	        "  -v        print version information\n"
	        "  -t n      use n threads (default: SDLUA_THREADS, else every core)\n"
	        "  -E        ignore LUA_PATH and LUA_CPATH\n"
	        "  -W        turn warnings on\n"
	        "  --        stop handling options\n"
	        "  -         run standard input as a script and stop handling options\n"
	        "  -h        this help\n"
	        "Subcommands (each has --help): %s txt2img|img2img|info|make-checkpoint ...\n"
	        "With no script and no -e or -v: interactive mode. Environment: SDLUA_THREADS,\n"
	        "SDLUA_HISTORY, LUA_PATH, LUA_CPATH. See docs/cli-runtime.md and docs/cli.md.\n",
	        progname, progname);
	fflush(to);
}

static void message(const char *msg)
{
	fprintf(stderr, "%s: %s\n", progname, msg);
	fflush(stderr);
}

/* Prints the error on top of the stack and pops it. */
static int report(lua_State *L, int status)
{
	if (status != LUA_OK) {
		const char *msg = lua_tostring(L, -1);
		message(msg ? msg : "(error object is not a string)");
		lua_pop(L, 1);
	}
	return status;
}

/* Message handler: the error as text with a traceback appended. */
static int msghandler(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	if (msg == NULL) {
		if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
			return 1; /* an object that describes itself */
		msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
	}
	luaL_traceback(L, L, msg, 1);
	return 1;
}

/* ---- Ctrl-C -------------------------------------------------------------------------------
 * While a chunk runs, SIGINT sets a count hook that raises "interrupted!" at the next Lua
 * instruction, call or return (a C kernel finishes its call first), and raises the flag C loops
 * may poll. A third Ctrl-C during the same run restores the default action and kills the
 * process, for code stuck in C. At a terminal prompt SIGINT only marks the line as cancelled. */
static lua_State *globalL;
static volatile sig_atomic_t sigint_count;
static volatile sig_atomic_t prompt_sigint;

/* While code runs, system calls restart after the handler (C code need not expect EINTR; the
 * hook stops the chunk when the call returns). At the prompt they do not, so that a blocking
 * read returns and the line can be cancelled. */
static void set_handler(void (*fn)(int), int restart)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = fn;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = restart ? SA_RESTART : 0;
	sigaction(SIGINT, &sa, NULL);
}

static void on_sigint_running(int sig)
{
	static const char warn[] = "\n(interrupt pending until the running C function returns; "
	                           "Ctrl-C again kills sdlua)\n";
	static struct timespec last;
	struct timespec now;
	int n;
	/* signals within 0.2 s count once: `timeout -s INT` signals the child and then its group */
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (sigint_count == 0 ||
	    (now.tv_sec - last.tv_sec) * 1000000000L + (now.tv_nsec - last.tv_nsec) > 200000000L)
		sigint_count++;
	last = now;
	n = sigint_count;
	sdl_interrupt_lua(globalL);
	if (n == 2) {
		ssize_t w = write(STDERR_FILENO, warn, sizeof warn - 1);
		(void)w;
	} else if (n >= 3) {
		signal(sig, SIG_DFL);
		raise(sig);
	}
}

static void on_sigint_prompt(int sig)
{
	(void)sig;
	prompt_sigint = 1;
}

static int interactive_stdin; /* stdin is a terminal: Ctrl-C at the prompt cancels the line */

static void idle_handler(void)
{
	set_handler(interactive_stdin ? on_sigint_prompt : SIG_DFL, 0);
}

/* Calls the function below narg arguments in protected mode with a traceback, interruptible. */
static int docall(lua_State *L, int narg, int nres)
{
	int status, base = lua_gettop(L) - narg;
	lua_pushcfunction(L, msghandler);
	lua_insert(L, base);
	sigint_count = 0;
	sdl_set_interrupted(0);
	set_handler(on_sigint_running, 1);
	status = lua_pcall(L, narg, nres, base);
	idle_handler();
	sdl_interrupt_clear(L); /* a late Ctrl-C */
	lua_remove(L, base);
	return status;
}

static void print_version(void)
{
	printf("sdlua %s (%s)\n", SDLUA_VERSION, LUA_RELEASE);
	fflush(stdout);
}

/* ---- setup -------------------------------------------------------------------------------- */
static int is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The folder of the Lua modules: <dir of the real executable>/../lua, or two levels up (a build
 * under build-asan/bin), or ../share/sdlua/lua (an installed layout). NULL if unknown. */
static const char *find_lua_root(const char *argv0, char *out, size_t outsz)
{
	static const char *const rel[] = {"/../lua", "/../../lua", "/../share/sdlua/lua"};
	char exe[PATH_MAX], cand[PATH_MAX + 32], real[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	char *slash;
	size_t i;
	if (n > 0) {
		exe[n] = '\0';
	} else if (argv0 && strchr(argv0, '/') && realpath(argv0, exe)) {
		/* resolved */
	} else {
		return NULL;
	}
	slash = strrchr(exe, '/');
	if (!slash) return NULL;
	*slash = '\0';
	for (i = 0; i < sizeof rel / sizeof rel[0]; i++) {
		char sd[PATH_MAX + 40];
		snprintf(cand, sizeof cand, "%s%s", exe, rel[i]);
		snprintf(sd, sizeof sd, "%s/sd", cand);
		if (is_dir(sd) && realpath(cand, real)) {
			snprintf(out, outsz, "%s", real);
			return out;
		}
	}
	if (snprintf(out, outsz, "%s%s", exe, rel[0]) >= (int)outsz) return NULL;
	return out;
}

static void setup_paths(lua_State *L, const char *argv0)
{
	char root[PATH_MAX];
	lua_getglobal(L, "package");
	if (find_lua_root(argv0, root, sizeof root)) {
		lua_getfield(L, -1, "path");
		lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", root, root,
		                lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
		lua_setfield(L, -3, "path");
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
	lua_pushcfunction(L, luaopen_sd_core);
	lua_setfield(L, -2, "sd.core");
	lua_pop(L, 1);
}

static int dorequire(lua_State *L, const char *name)
{
	lua_getglobal(L, "require");
	lua_pushstring(L, name);
	return docall(L, 1, 1);
}

/* require "sd.core", set the thread count of -t, then the global sd = require "sd" (or the core
 * while lua/sd/init.lua does not exist). */
static int load_sd(lua_State *L, int threads)
{
	if (report(L, dorequire(L, "sd.core")) != LUA_OK) return 0;
	if (threads > 0) {
		lua_getfield(L, -1, "threads");
		lua_pushinteger(L, threads);
		if (report(L, docall(L, 1, 0)) != LUA_OK) return 0;
	}
	if (dorequire(L, "sd") == LUA_OK) {
		lua_remove(L, -2);
	} else {
		const char *msg = lua_tostring(L, -1);
		if (!msg || !strstr(msg, "module 'sd' not found")) {
			fprintf(stderr, "%s: warning: require \"sd\" failed, the global sd is sd.core:\n",
			        progname);
			report(L, LUA_ERRRUN);
		} else {
			lua_pop(L, 1);
		}
	}
	lua_setglobal(L, "sd");
	return 1;
}

/* arg[0] is the script, negative indices the interpreter and its options, positive ones the
 * script's arguments. Without a script, arg[0] is the interpreter. */
static void create_arg_table(lua_State *L, char **argv, int argc, int script)
{
	int i;
	if (script >= argc) script = 0;
	lua_createtable(L, argc - script - 1 > 0 ? argc - script - 1 : 0, script + 1);
	for (i = 0; i < argc; i++) {
		lua_pushstring(L, argv[i]);
		lua_rawseti(L, -2, i - script);
	}
	lua_setglobal(L, "arg");
}

/* ---- options ------------------------------------------------------------------------------ */
typedef struct options {
	int script;  /* index of the script in argv, argc if none */
	int has_e, has_i, has_v, has_E, help;
	int threads; /* -t, 0 if absent */
} options;

static int parse_count(const char *s)
{
	char *end;
	long n;
	if (*s < '0' || *s > '9') return -1;
	errno = 0;
	n = strtol(s, &end, 10);
	if (errno || *end || n < 1 || n > 1024) return -1;
	return (int)n;
}

/* Returns 0 on a usage error (already reported). */
static int collect_args(int argc, char **argv, options *o)
{
	int i;
	memset(o, 0, sizeof *o);
	o->script = argc;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		char bad[256];
		if (a[0] != '-' || a[1] == '\0') { /* a script name, or "-" for stdin */
			o->script = i;
			return 1;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			o->help = 1;
			return 1;
		}
		switch (a[1]) {
		case '-':
			if (a[2] != '\0') break;
			o->script = i + 1 < argc ? i + 1 : argc;
			return 1;
		case 'i':
		case 'v':
		case 'E':
		case 'W':
			if (a[2] != '\0') break;
			if (a[1] == 'i') o->has_i = 1;
			if (a[1] == 'v') o->has_v = 1;
			if (a[1] == 'E') o->has_E = 1;
			continue;
		case 'e':
		case 'l':
		case 't':
			if (a[2] == '\0') {
				if (++i >= argc || argv[i][0] == '-') {
					snprintf(bad, sizeof bad, "'%s' needs an argument", a);
					usage(bad, stderr);
					return 0;
				}
			}
			if (a[1] == 'e') o->has_e = 1;
			if (a[1] == 't') {
				const char *v = a[2] ? a + 2 : argv[i];
				o->threads = parse_count(v);
				if (o->threads < 0) {
					snprintf(bad, sizeof bad, "-t wants a thread count from 1 to 1024, not '%.100s'",
					         v);
					usage(bad, stderr);
					return 0;
				}
			}
			continue;
		default:
			break;
		}
		snprintf(bad, sizeof bad, "unrecognized option '%.100s'", a);
		usage(bad, stderr);
		return 0;
	}
	return 1;
}

/* -l name or -l global=name: require the module into a global. */
static int dolibrary(lua_State *L, const char *spec)
{
	const char *eq = strchr(spec, '=');
	int status;
	if (eq) {
		lua_pushlstring(L, spec, (size_t)(eq - spec));
		status = dorequire(L, eq + 1);
	} else {
		lua_pushstring(L, spec);
		status = dorequire(L, spec);
	}
	if (status == LUA_OK) {
		lua_setglobal(L, lua_tostring(L, -2));
		lua_pop(L, 1);
	} else {
		lua_remove(L, -2);
	}
	return report(L, status);
}

/* Runs -e, -l and -W in order. Returns 0 when one of them failed. */
static int run_args(lua_State *L, char **argv, int script)
{
	int i;
	for (i = 1; i < script; i++) {
		const char *a = argv[i];
		int opt;
		if (a[0] != '-') continue;
		opt = a[1];
		if (opt == 'W' && a[2] == '\0') {
			lua_warning(L, "@on", 0);
		} else if (opt == 'e' || opt == 'l' || opt == 't') {
			const char *v = a[2] ? a + 2 : argv[++i];
			int status = LUA_OK;
			if (opt == 'e') {
				status = luaL_loadbuffer(L, v, strlen(v), "=(command line)");
				if (status == LUA_OK) status = docall(L, 0, 0);
				status = report(L, status);
			} else if (opt == 'l') {
				status = dolibrary(L, v);
			}
			if (status != LUA_OK) return 0;
		}
	}
	return 1;
}

/* Appends the script's folder to package.path, so that a script finds the modules beside it
 * (tests/lua/test_x.lua requires "test"); appended, it never hides a module found before. */
static void add_script_dir(lua_State *L, const char *fname)
{
	char real[PATH_MAX], *slash;
	if (!realpath(fname, real)) return;
	slash = strrchr(real, '/');
	if (!slash) return;
	slash[slash == real ? 1 : 0] = '\0';
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "path");
	lua_pushfstring(L, "%s;%s/?.lua;%s/?/init.lua", lua_isstring(L, -1) ? lua_tostring(L, -1) : "",
	                real, real);
	lua_setfield(L, -3, "path");
	lua_pop(L, 2);
}

static int run_script(lua_State *L, char **argv, int script)
{
	const char *fname = argv[script];
	int status, n, i;
	if (strcmp(fname, "-") == 0 && strcmp(argv[script - 1], "--") != 0) fname = NULL;
	if (fname) add_script_dir(L, fname);
	status = luaL_loadfile(L, fname);
	if (status == LUA_OK) {
		lua_getglobal(L, "arg");
		if (lua_type(L, -1) != LUA_TTABLE) luaL_error(L, "'arg' is not a table");
		n = (int)luaL_len(L, -1);
		luaL_checkstack(L, n + 3, "too many arguments to script");
		for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
		lua_remove(L, -i);
		status = docall(L, n, 0);
	}
	return report(L, status) == LUA_OK;
}

/* ---- interactive mode --------------------------------------------------------------------- */
static int use_editline;   /* stdin and stdout are terminals */
static char history_file[PATH_MAX];

/* ---- Tab completion of Lua names -----------------------------------------------------------
 * "sd.tensor.ze<Tab>" completes through globals, table fields and the __index tables of
 * metatables (so "x:res<Tab>" finds tensor methods). Only raw accesses: completing never runs
 * Lua code (sd's lazy loader, __index functions). A word with a '/' in it, or one that names no
 * Lua value, completes as a file name (the word breaks leave out '/', '-' and '.'). */
#define COMPLETE_DEPTH 6

static const char *const lua_keywords[] = {
	"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
	"local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while", NULL};

/* Replaces the value on top with the __index table of its metatable; 0 (and pops) if none.
 * An __index function stands for the first table among its upvalues (the tensor methods held
 * by the C __index closure, the lazy-module list of sd), _ENV excepted. */
static int index_table(lua_State *L)
{
	if (!lua_getmetatable(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	lua_pushliteral(L, "__index");
	lua_rawget(L, -2);
	lua_remove(L, -2);
	lua_remove(L, -2);
	if (lua_type(L, -1) == LUA_TFUNCTION) {
		int i;
		for (i = 1; i <= 8; i++) {
			const char *name = lua_getupvalue(L, -1, i);
			if (!name) break;
			if (lua_type(L, -1) == LUA_TTABLE && strcmp(name, "_ENV") != 0) {
				lua_remove(L, -2);
				return 1;
			}
			lua_pop(L, 1);
		}
	}
	if (lua_type(L, -1) != LUA_TTABLE) {
		lua_pop(L, 1);
		return 0;
	}
	return 1;
}

/* Replaces the value on top with its field key (raw, following __index tables); 0 if absent. */
static int lookup_field(lua_State *L, const char *key, size_t klen)
{
	int depth;
	for (depth = 0; depth < COMPLETE_DEPTH; depth++) {
		if (lua_type(L, -1) == LUA_TTABLE) {
			lua_pushlstring(L, key, klen);
			lua_rawget(L, -2);
			if (!lua_isnil(L, -1)) {
				lua_remove(L, -2);
				return 1;
			}
			lua_pop(L, 1);
		}
		if (!index_table(L)) return 0;
	}
	lua_pop(L, 1);
	return 0;
}

static int is_identifier(const char *s, size_t len)
{
	size_t i;
	if (len == 0 || (s[0] >= '0' && s[0] <= '9')) return 0;
	for (i = 0; i < len; i++) {
		char c = s[i];
		if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
			return 0;
	}
	return 1;
}

/* Run protected: word -> a sequence of completed words. */
static int complete_collect(lua_State *L)
{
	size_t wlen, plen;
	const char *head = luaL_checklstring(L, 1, &wlen), *word = head, *prefix, *p, *seg;
	int results, seen, n = 0, depth;
	for (p = head; *p; p++) /* "a-b.c": complete "b.c", keep "a-" (the word breaks omit '-') */
		if (*p == '-') word = p + 1;
	prefix = word;
	for (p = word; *p; p++)
		if (*p == '.' || *p == ':') prefix = p + 1;
	plen = strlen(prefix);
	lua_newtable(L);
	results = lua_gettop(L);
	lua_newtable(L);
	seen = lua_gettop(L);
	lua_pushglobaltable(L);
	for (seg = word; seg < prefix;) {
		const char *end = seg;
		while (*end != '.' && *end != ':') end++;
		if (!lookup_field(L, seg, (size_t)(end - seg))) {
			lua_settop(L, results);
			return 1;
		}
		seg = end + 1;
	}
	for (depth = 0; depth < COMPLETE_DEPTH; depth++) {
		if (lua_type(L, -1) == LUA_TTABLE) {
			lua_pushnil(L);
			while (lua_next(L, -2)) {
				size_t klen;
				const char *k;
				lua_pop(L, 1);
				if (lua_type(L, -1) != LUA_TSTRING) continue;
				k = lua_tolstring(L, -1, &klen);
				if (klen < plen || memcmp(k, prefix, plen) != 0 || !is_identifier(k, klen)) continue;
				lua_pushvalue(L, -1);
				if (lua_rawget(L, seen) != LUA_TNIL) {
					lua_pop(L, 1);
					continue;
				}
				lua_pop(L, 1);
				lua_pushvalue(L, -1);
				lua_pushboolean(L, 1);
				lua_rawset(L, seen);
				lua_pushlstring(L, head, (size_t)(prefix - head));
				lua_pushvalue(L, -2);
				lua_concat(L, 2);
				lua_rawseti(L, results, ++n);
			}
		}
		if (!index_table(L)) break;
	}
	if (prefix == word) {
		const char *const *kw;
		for (kw = lua_keywords; *kw; kw++)
			if (strncmp(*kw, prefix, plen) == 0) {
				lua_pushlstring(L, head, (size_t)(prefix - head));
				lua_pushstring(L, *kw);
				lua_concat(L, 2);
				lua_rawseti(L, results, ++n);
			}
	}
	lua_settop(L, results);
	return 1;
}

static char **completions;
static size_t ncompletions;

static void completions_free(void)
{
	size_t i;
	for (i = 0; i < ncompletions; i++) free(completions[i]);
	free(completions);
	completions = NULL;
	ncompletions = 0;
}

static char *completion_next(const char *text, int state)
{
	static size_t next;
	(void)text;
	if (state == 0) next = 0;
	if (next < ncompletions) {
		char *c = completions[next];
		completions[next++] = NULL; /* readline frees it */
		return c;
	}
	return NULL;
}

static char **complete(const char *text, int start, int end)
{
	lua_State *L = globalL;
	int top = lua_gettop(L);
	(void)start;
	(void)end;
	completions_free();
	rl_completion_append_character = '\0';
	rl_attempted_completion_over = 0; /* no Lua name: libedit completes a file name */
	if (strchr(text, '/')) return NULL;
	lua_pushcfunction(L, complete_collect);
	lua_pushstring(L, text);
	if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TTABLE) {
		size_t i, n = (size_t)lua_rawlen(L, -1);
		completions = n ? calloc(n, sizeof *completions) : NULL;
		for (i = 0; completions && i < n; i++) {
			lua_rawgeti(L, -1, (lua_Integer)i + 1);
			completions[i] = strdup(lua_tostring(L, -1));
			lua_pop(L, 1);
			if (!completions[i]) break;
			ncompletions = i + 1;
		}
	}
	lua_settop(L, top);
	if (ncompletions == 0) return NULL;
	rl_attempted_completion_over = 1;
	return rl_completion_matches(text, completion_next);
}

static void history_setup(void)
{
	const char *env = getenv("SDLUA_HISTORY"), *xdg = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	history_file[0] = '\0';
	if (env) {
		if (*env) snprintf(history_file, sizeof history_file, "%s", env);
	} else if (xdg && *xdg == '/') {
		char dir[PATH_MAX];
		snprintf(dir, sizeof dir, "%s/sdlua", xdg);
		if ((is_dir(dir) || mkdir(dir, 0700) == 0) &&
		    snprintf(history_file, sizeof history_file, "%s/history", dir) >= (int)sizeof history_file)
			history_file[0] = '\0';
	} else if (home && *home) {
		snprintf(history_file, sizeof history_file, "%s/.sdlua_history", home);
	}
	using_history();
	stifle_history(HISTORY_MAX);
	if (history_file[0]) {
		history_truncate_file(history_file, HISTORY_MAX);
		read_history(history_file);
	}
}

/* Each chunk is appended to the file at once, so that sessions running side by side all keep
 * theirs and a killed session loses nothing. The file is libedit's: a header line, then one
 * entry a line with blanks, newlines, backslashes and other bytes as \ooo octal escapes (what
 * read_history decodes). Written here because append_history's count differs between libedit
 * versions. */
static void history_add(const char *chunk)
{
	const unsigned char *p;
	FILE *f;
	int fd;
	add_history(chunk);
	if (!history_file[0]) return;
	fd = open(history_file, O_WRONLY | O_APPEND | O_CREAT, 0600);
	if (fd < 0) return;
	f = fdopen(fd, "a");
	if (!f) {
		close(fd);
		return;
	}
	if (lseek(fd, 0, SEEK_END) == 0) fputs("_HiStOrY_V2_\n", f);
	for (p = (const unsigned char *)chunk; *p; p++) {
		if (*p > ' ' && *p < 127 && *p != '\\')
			fputc(*p, f);
		else
			fprintf(f, "\\%03o", *p);
	}
	fputc('\n', f);
	fclose(f);
}

/* The prompt: the global _PROMPT (_PROMPT2 for a continuation line) or the default. */
static void get_prompt(lua_State *L, int first, char *buf, size_t size)
{
	const char *p;
	lua_getglobal(L, first ? "_PROMPT" : "_PROMPT2");
	p = lua_tostring(L, -1);
	snprintf(buf, size, "%s", p ? p : first ? PROMPT1 : PROMPT2);
	lua_pop(L, 1);
}

enum { LINE_OK, LINE_EOF, LINE_CANCEL };

/* Reads one line (without its newline) into a malloc'd string. */
static int read_line(lua_State *L, int first, char **out)
{
	char prompt[128];
	get_prompt(L, first, prompt, sizeof prompt);
	*out = NULL;
	prompt_sigint = 0;
	if (use_editline) {
		char *line = readline(prompt);
		if (prompt_sigint) {
			free(line);
			prompt_sigint = 0;
			fputs("\n", stdout);
			fflush(stdout);
			return LINE_CANCEL;
		}
		if (!line) return LINE_EOF;
		*out = line;
		return LINE_OK;
	} else {
		size_t cap = 0;
		ssize_t n;
		char *line = NULL;
		if (interactive_stdin) {
			fputs(prompt, stdout);
			fflush(stdout);
		}
		errno = 0;
		n = getline(&line, &cap, stdin);
		if (n < 0) {
			free(line);
			if (prompt_sigint || errno == EINTR) {
				clearerr(stdin);
				prompt_sigint = 0;
				fputs("\n", stdout);
				fflush(stdout);
				return LINE_CANCEL;
			}
			return LINE_EOF;
		}
		if (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
		if (n > 0 && line[n - 1] == '\r') line[--n] = '\0';
		*out = line;
		return LINE_OK;
	}
}

/* A syntax error that only says the chunk stopped early: read more lines. */
static int incomplete(lua_State *L, int status)
{
	static const char mark[] = "<eof>";
	size_t len;
	const char *msg;
	if (status != LUA_ERRSYNTAX) return 0;
	msg = lua_tolstring(L, -1, &len);
	return msg && len >= sizeof mark - 1 && strcmp(msg + len - (sizeof mark - 1), mark) == 0;
}

/* Compiles `return <code>` when that is valid (so expressions print their values), else the
 * code itself. Leaves the function or the error message on the stack. */
static int compile(lua_State *L, const char *code, size_t len)
{
	int status;
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	luaL_addstring(&b, "return ");
	luaL_addlstring(&b, code, len);
	luaL_pushresult(&b);
	{
		size_t rlen;
		const char *ret = lua_tolstring(L, -1, &rlen);
		status = luaL_loadbuffer(L, ret, rlen, "=stdin");
	}
	lua_remove(L, -2);
	if (status == LUA_OK) return status;
	lua_pop(L, 1);
	return luaL_loadbuffer(L, code, len, "=stdin");
}

static int blank(const char *s)
{
	for (; *s; s++)
		if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return 0;
	return 1;
}

enum { CHUNK_OK, CHUNK_ERR, CHUNK_EOF, CHUNK_SKIP };

/* "?expr" (or "?" alone) shows the documentation of expr: the chunk
 * require("sd.help").query("expr") (lua/sd/help.lua), the text passed as a string literal with
 * every byte but letters and digits escaped. Takes ownership of line. */
static int help_chunk(lua_State *L, char *line)
{
	const unsigned char *p;
	luaL_Buffer b;
	int status;
	if (use_editline) history_add(line);
	luaL_buffinit(L, &b);
	luaL_addstring(&b, "return require('sd.help').query(\"");
	for (p = (const unsigned char *)line + 1; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
		    *p == '.' || *p == ':' || *p == ' ') {
			luaL_addchar(&b, (char)*p);
		} else {
			char esc[8];
			snprintf(esc, sizeof esc, "\\%03u", (unsigned)*p);
			luaL_addstring(&b, esc);
		}
	}
	luaL_addstring(&b, "\")");
	luaL_pushresult(&b);
	free(line);
	{
		size_t len;
		const char *code = lua_tolstring(L, -1, &len);
		status = luaL_loadbuffer(L, code, len, "=stdin");
	}
	lua_remove(L, -2);
	return status == LUA_OK ? CHUNK_OK : CHUNK_ERR;
}

/* Reads lines until they form a chunk (or a syntax error that is not about the end). */
static int read_chunk(lua_State *L)
{
	char *line, *code;
	size_t len;
	int r = read_line(L, 1, &line), status;
	if (r == LINE_EOF) return CHUNK_EOF;
	if (r == LINE_CANCEL) return CHUNK_SKIP;
	if (blank(line)) {
		free(line);
		return CHUNK_SKIP;
	}
	if (line[0] == '?') return help_chunk(L, line);
	lua_pushstring(L, line[0] == '=' ? line + 1 : line); /* "=expr" as in Lua 5.1 */
	free(line);
	for (;;) {
		code = (char *)lua_tolstring(L, -1, &len);
		status = compile(L, code, len);
		if (!incomplete(L, status)) break;
		r = read_line(L, 0, &line);
		if (r == LINE_CANCEL) {
			lua_pop(L, 2);
			return CHUNK_SKIP;
		}
		if (r == LINE_EOF) break; /* report the syntax error */
		lua_pop(L, 1);
		lua_pushfstring(L, "\n%s", line);
		free(line);
		lua_concat(L, 2);
	}
	if (use_editline) history_add(lua_tostring(L, -2));
	lua_remove(L, -2);
	return status == LUA_OK ? CHUNK_OK : CHUNK_ERR;
}

/* How the prompt shows a plain table (no __tostring or __name): its contents on one line,
 * {2, 3} or {a = 1, b = "x"}, a few levels deep and a few dozen items long. */
static const char show_source[] =
	"local getmetatable, rawget, rawlen, next, ipairs, type, tostring = getmetatable, rawget,\n"
	"  rawlen, next, ipairs, type, tostring\n"
	"local format, concat, sort, mtype = string.format, table.concat, table.sort, math.type\n"
	"local MAX_ITEMS, MAX_DEPTH = 40, 3\n"
	"local keyword = {}\n"
	"for w in ('and break do else elseif end false for function goto if in local nil not or '\n"
	"  .. 'repeat return then true until while'):gmatch('%a+') do keyword[w] = true end\n"
	"local function before(a, b)\n"
	"  local ta, tb = type(a), type(b)\n"
	"  if ta ~= tb then return ta < tb end\n"
	"  if ta == 'number' or ta == 'string' then return a < b end\n"
	"  return tostring(a) < tostring(b)\n"
	"end\n"
	"local show\n"
	"function show(v, depth, seen)\n"
	"  if type(v) == 'string' then return (format('%q', v):gsub('\\\\\\n', '\\\\n')) end\n"
	"  if type(v) ~= 'table' then return tostring(v) end\n"
	"  local mt = getmetatable(v)\n"
	"  if mt ~= nil and (type(mt) ~= 'table' or rawget(mt, '__tostring')\n"
	"                   or rawget(mt, '__name')) then\n"
	"    return tostring(v)\n"
	"  end\n"
	"  if seen[v] then return '<cycle>' end\n"
	"  if depth > MAX_DEPTH then return '{...}' end\n"
	"  seen[v] = true\n"
	"  local parts, n = {}, rawlen(v)\n"
	"  for i = 1, n do\n"
	"    if #parts == MAX_ITEMS then parts[#parts + 1] = '...'; break end\n"
	"    parts[#parts + 1] = show(rawget(v, i), depth + 1, seen)\n"
	"  end\n"
	"  if #parts <= MAX_ITEMS then\n"
	"    local keys = {}\n"
	"    for k in next, v do\n"
	"      if not (mtype(k) == 'integer' and k >= 1 and k <= n) then keys[#keys + 1] = k end\n"
	"    end\n"
	"    sort(keys, before)\n"
	"    for _, k in ipairs(keys) do\n"
	"      if #parts == MAX_ITEMS then parts[#parts + 1] = '...'; break end\n"
	"      local name = type(k) == 'string' and k:match('^[%a_][%w_]*$') and not keyword[k] and k\n"
	"        or '[' .. show(k, depth + 1, seen) .. ']'\n"
	"      parts[#parts + 1] = name .. ' = ' .. show(rawget(v, k), depth + 1, seen)\n"
	"    end\n"
	"  end\n"
	"  seen[v] = nil\n"
	"  return '{' .. concat(parts, ', ') .. '}'\n"
	"end\n"
	"return function(v) return show(v, 1, {}) end\n";

#define SHOW_KEY "sdlua.show"

static void load_show(lua_State *L)
{
	if (luaL_loadbuffer(L, show_source, sizeof show_source - 1, "=(sdlua show)") == LUA_OK &&
	    lua_pcall(L, 0, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TFUNCTION) {
		lua_setfield(L, LUA_REGISTRYINDEX, SHOW_KEY);
	} else {
		lua_pop(L, 1); /* the error: tables print through tostring */
	}
}

/* Prints the values on the stack tab separated: plain tables through the shower above, the
 * rest with tostring (strings as they are). */
static int print_values(lua_State *L)
{
	int i, n = lua_gettop(L);
	for (i = 1; i <= n; i++) {
		size_t len;
		const char *s;
		if (lua_type(L, i) == LUA_TTABLE && !luaL_getmetafield(L, i, "__tostring") &&
		    !luaL_getmetafield(L, i, "__name") &&
		    lua_getfield(L, LUA_REGISTRYINDEX, SHOW_KEY) == LUA_TFUNCTION) {
			lua_pushvalue(L, i);
			lua_call(L, 1, 1);
			s = lua_tolstring(L, -1, &len);
			if (!s) {
				s = "?";
				len = 1;
			}
		} else {
			lua_settop(L, n);
			s = luaL_tolstring(L, i, &len);
		}
		if (i > 1) fputc('\t', stdout);
		fwrite(s, 1, len, stdout);
		lua_settop(L, n);
	}
	fputc('\n', stdout);
	fflush(stdout);
	return 0;
}

static void repl(lua_State *L)
{
	interactive_stdin = isatty(STDIN_FILENO);
	use_editline = interactive_stdin && isatty(STDOUT_FILENO);
	if (use_editline) {
		setlocale(LC_CTYPE, ""); /* libedit reads multibyte (UTF-8) input by the locale */
		rl_readline_name = "sdlua";
		rl_basic_word_break_characters = " \t\n\"'`<>=;|&{}()[],+*%^#~";
		rl_attempted_completion_function = complete;
		history_setup();
	}
	if (interactive_stdin) {
		printf("sdlua %s (%s)  Ctrl-C interrupts, Ctrl-D exits\n", SDLUA_VERSION, LUA_RELEASE);
		fflush(stdout);
	}
	load_show(L);
	/* the global help(obj) of lua/sd/help.lua (quietly absent if the module cannot load) */
	lua_getglobal(L, "help");
	if (lua_isnil(L, -1)) {
		lua_getglobal(L, "require");
		lua_pushliteral(L, "sd.help");
		if (lua_pcall(L, 1, 1, 0) == LUA_OK) lua_setglobal(L, "help");
		else lua_pop(L, 1);
	}
	lua_pop(L, 1);
	idle_handler();
	for (;;) {
		int base = lua_gettop(L), r = read_chunk(L), status;
		if (r == CHUNK_EOF) break;
		if (r == CHUNK_SKIP) continue;
		if (r == CHUNK_ERR) {
			report(L, LUA_ERRSYNTAX);
			continue;
		}
		status = docall(L, 0, LUA_MULTRET);
		if (status != LUA_OK && sigint_count > 0 && interactive_stdin) {
			fflush(stdout);
			fputc('\n', stderr); /* past the ^C the terminal echoed */
		}
		if (status == LUA_OK && lua_gettop(L) > base) {
			int n = lua_gettop(L) - base;
			lua_pushcfunction(L, print_values);
			lua_insert(L, base + 1);
			status = lua_pcall(L, n, 0, 0);
			if (status != LUA_OK) {
				lua_pushfstring(L, "error printing the result (%s)", lua_tostring(L, -1));
				lua_remove(L, -2);
			}
		}
		report(L, status);
		lua_settop(L, base);
	}
	if (interactive_stdin) {
		fputs("\n", stdout);
		fflush(stdout);
	}
	set_handler(SIG_DFL, 0);
}

/* ---- subcommands -------------------------------------------------------------------------- */
/* `sdlua <subcommand> ...` runs require("sd.cli").main({subcommand, ...}) and exits with the
 * number it returns (0 done, 1 error, 2 usage, 130 interrupted). A script with one of these
 * names runs as ./name. */
static const char *const subcommands[] = {"txt2img", "img2img", "info", "make-checkpoint", NULL};
static int subcommand_status = -1; /* the exit status of a subcommand, -1 when none ran */

static int is_subcommand(const char *a)
{
	int i;
	for (i = 0; subcommands[i]; i++)
		if (strcmp(a, subcommands[i]) == 0) return 1;
	return 0;
}

static int run_subcommand(lua_State *L, int argc, char **argv)
{
	int i, status;
	luaL_checkversion(L);
	luaL_openlibs(L);
	create_arg_table(L, argv, argc, 0);
	lua_gc(L, LUA_GCRESTART);
	setup_paths(L, argv[0]);
	subcommand_status = EXIT_FAILURE;
	if (!load_sd(L, 0)) return 0;
	if (report(L, dorequire(L, "sd.cli")) != LUA_OK) return 0;
	lua_getfield(L, -1, "main");
	lua_createtable(L, argc - 1, 0);
	for (i = 1; i < argc; i++) {
		lua_pushstring(L, argv[i]);
		lua_rawseti(L, -2, i);
	}
	status = docall(L, 1, 1);
	if (status != LUA_OK) {
		const char *msg = lua_tostring(L, -1);
		int interrupted = msg && strstr(msg, "interrupted!") != NULL;
		report(L, status);
		subcommand_status = interrupted ? 130 : EXIT_FAILURE;
		return 1;
	}
	subcommand_status = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : EXIT_SUCCESS;
	if (subcommand_status < 0 || subcommand_status > 255) subcommand_status = EXIT_FAILURE;
	lua_pushboolean(L, 1);
	return 1;
}

/* ---- main --------------------------------------------------------------------------------- */
static int pmain(lua_State *L)
{
	int argc = (int)lua_tointeger(L, 1);
	char **argv = (char **)lua_touserdata(L, 2);
	options o;
	if (argc >= 2 && is_subcommand(argv[1])) return run_subcommand(L, argc, argv);
	if (!collect_args(argc, argv, &o)) return 0;
	if (o.help) {
		usage(NULL, stdout);
		lua_pushboolean(L, 1);
		return 1;
	}
	luaL_checkversion(L);
	if (o.has_E) {
		lua_pushboolean(L, 1);
		lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
	}
	luaL_openlibs(L);
	create_arg_table(L, argv, argc, o.script);
	lua_gc(L, LUA_GCRESTART);
	setup_paths(L, argv[0]);
	if (!load_sd(L, o.threads)) return 0;
	if (o.has_v) print_version();
	if (!run_args(L, argv, o.script)) return 0;
	if (o.script < argc && !run_script(L, argv, o.script)) return 0;
	if (o.has_i || (o.script == argc && !o.has_e && !o.has_v)) repl(L);
	lua_pushboolean(L, 1);
	return 1;
}

/* OpenMP threads that spin while waiting for work steal the CPU from the thread that has the
 * work whenever anything else runs on the machine (a 2-core machine with a build going is 20x
 * slower). libgomp reads its wait policy before main, so set it and start again. */
static void prefer_passive_openmp(char **argv)
{
	if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
	setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
	execv("/proc/self/exe", argv); /* returns only on failure: then run as we are */
}

int main(int argc, char **argv)
{
	prefer_passive_openmp(argv);
	int status, ok;
	lua_State *L = luaL_newstate();
	if (!L) {
		message("cannot create the Lua state: not enough memory");
		return 1;
	}
	globalL = L;
	lua_gc(L, LUA_GCSTOP);
	lua_pushcfunction(L, pmain);
	lua_pushinteger(L, argc);
	lua_pushlightuserdata(L, argv);
	status = lua_pcall(L, 2, 1, 0);
	ok = lua_toboolean(L, -1);
	report(L, status);
	lua_close(L);
	if (subcommand_status >= 0 && status == LUA_OK) return subcommand_status;
	return status == LUA_OK && ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
