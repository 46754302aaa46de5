/* libFuzzer harness for the CLIP tokenizer (lua/sd/tokenizer.lua, run in an embedded Lua 5.4):
 * any byte sequence must encode to 77 ids, chunk, parse emphasis and decode without a Lua error.
 * Needs the CLIP vocabulary of the reference folder (SDLUA_REFERENCE, default
 * ../shared/reference); run from the repository root (tests/fuzz/run does). */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static lua_State *L;

static const char *setup =
	"package.path = 'lua/?.lua;lua/?/init.lua;' .. package.path\n"
	"local Tokenizer = require 'sd.tokenizer'\n"
	"local ref = (os.getenv('SDLUA_REFERENCE') or '../shared/reference') .. '/tokenizer/'\n"
	"local tok = Tokenizer.load{vocab = ref .. 'vocab.json', merges = ref .. 'merges.txt'}\n"
	"function FUZZ(s)\n"
	"  local ids = tok:encode(s)\n"
	"  assert(#ids == 77, 'encode gave ' .. #ids .. ' ids')\n"
	"  for _, id in ipairs(ids) do assert(math.type(id) == 'integer' and id >= 0 and id <= 49407) end\n"
	"  for _, w in ipairs(tok:encode_chunks(s)) do assert(#w == 77) end\n"
	"  local windows, weights = tok:encode_weighted(s, {weighting = 'a1111', long_prompt = 'chunk'})\n"
	"  for i, w in ipairs(windows) do assert(#w == 77 and #weights[i] == 77) end\n"
	"  tok:decode(tok:tokenize(s))\n"
	"end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc; (void)argv;
	L = luaL_newstate();
	luaL_openlibs(L);
	if (luaL_dostring(L, setup) != LUA_OK) {
		fprintf(stderr, "fuzz_tokenizer: setup failed: %s\n", lua_tostring(L, -1));
		exit(1);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	lua_getglobal(L, "FUZZ");
	lua_pushlstring(L, (const char *)data, size);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
		fprintf(stderr, "fuzz_tokenizer: %s\n", lua_tostring(L, -1));
		abort();
	}
	lua_gc(L, LUA_GCSTEP, 0);
	return 0;
}
