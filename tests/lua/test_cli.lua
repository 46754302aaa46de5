-- The sdlua program (runtime/lsdlua.c), run as a child process: scripts and the arg table,
-- options, exit codes, error messages, the REPL fed through a pipe, Ctrl-C.
local test = require "test"

local q, has = test.quote, test.has

local function slurp(path) return test.read_file(path) or "" end

local function spit(path, s)
  local f = assert(io.open(path, "wb")); f:write(s); f:close()
end

local SDLUA = test.sdlua()
local tmpdir = test.tmpdir()

-- Runs a shell command line with `$SDLUA` set; stdin from the string `input` when given.
-- Returns exit code, stdout, stderr.
local function sh(cmd, input)
  local out, err, inp = tmpdir .. "/out", tmpdir .. "/err", tmpdir .. "/in"
  spit(inp, input or "")
  local full = string.format("SDLUA=%s; export SDLUA; ( %s ) <%s >%s 2>%s", q(SDLUA), cmd, q(inp),
    q(out), q(err))
  local ok, how, code = os.execute(full)
  if how == "signal" then code = 128 + code end
  return code, slurp(out), slurp(err)
end

-- sdlua with the given argument string (already shell-quoted where needed)
local function run(args, input) return sh('"$SDLUA" ' .. args, input) end

local function script(name, text)
  local path = tmpdir .. "/" .. name
  spit(path, text)
  return path
end

test.case("cli: script arguments and the arg table", function()
  local s = script("args.lua", [[
local n = select("#", ...)
print(arg[-1] ~= nil, arg[0], #arg, n, ...)
print(arg[1] == select(1, ...), arg[3])
]])
  local rc, out, err = run(q(s) .. " one 'two words' 3")
  test.eq(rc, 0, "exit code (" .. err .. ")")
  test.eq(out, "true\t" .. s .. "\t3\t3\tone\ttwo words\t3\ntrue\t3\n", "stdout")
  -- options before the script get negative indices; arg[-1] is the last of them
  rc, out = run("-e 'x=1' " .. q(s) .. " a")
  test.eq(rc, 0, "exit code with -e")
  has(out, "\t1\t1\ta\n", "stdout with -e")
  rc, out = run("-e 'print(arg[-3] == os.getenv(\"SDLUA\"), arg[-2], arg[-1], arg[0])' " .. q(s))
  has(out, "true\t-e\tprint(", "negative arg indices")
end)

test.case("cli: -e runs in order; arg without a script", function()
  local rc, out, err = run("-e 'x = 20' -e 'x = x + 1' -e 'print(x, arg[0] == os.getenv(\"SDLUA\"), #arg)'")
  test.eq(rc, 0, "exit code (" .. err .. ")")
  test.eq(out, "21\ttrue\t6\n", "stdout (as lua5.4: the options are arg[1..])")
  rc, out = run("-e'print(\"joined\")'")
  test.eq(out, "joined\n", "-eCODE without a space")
end)

test.case("cli: the global sd and the module path", function()
  local rc, out, err = run("-e 'print(type(sd), type(require(\"sd.core\").threads))'")
  test.eq(rc, 0, "exit code (" .. err .. ")")
  test.eq(out, "table\tfunction\n", "sd preloaded")
  test.eq(err, "", "nothing on stderr")
  local first = "print((package.path:match(\"^[^;]+\")))"
  local _, here = run("-e " .. q(first))
  local lua_dir = io.popen("cd lua && pwd -P"):read("l")
  test.eq(here, lua_dir .. "/?.lua\n", "package.path starts with the tree's lua/")
  -- the same from another folder, and through a symbolic link to the binary
  local _, there = sh("cd / && \"$SDLUA\" -e " .. q(first))
  test.eq(there, here, "from another folder")
  assert(os.execute("ln -sf " .. q(SDLUA) .. " " .. q(tmpdir .. "/linked")))
  local _, linked = sh("cd / && " .. q(tmpdir .. "/linked") .. " -e " .. q(first))
  test.eq(linked, here, "through a symbolic link")
end)

test.case("cli: a script finds modules beside it", function()
  script("helper_mod.lua", "return {answer = 42}")
  local s = script("uses_helper.lua", "print(require('helper_mod').answer)")
  local rc, out, err = sh("cd / && \"$SDLUA\" " .. q(s))
  test.eq(rc, 0, "exit code (" .. err .. ")")
  test.eq(out, "42\n", "stdout")
end)

test.case("cli: exit codes and error messages", function()
  local rc, out, err = run("-e 'os.exit(3)'")
  test.eq(rc, 3, "os.exit(3)")
  rc, out, err = run("-e 'os.exit(true)'")
  test.eq(rc, 0, "os.exit(true)")
  rc, out, err = run("-e 'error(\"boom\")'")
  test.eq(rc, 1, "runtime error")
  has(err, "sdlua: (command line):1: boom", "stderr")
  has(err, "stack traceback:", "stderr")
  local s = script("fails.lua", "local function f() error('deep') end\nf()\n")
  rc, out, err = run(q(s))
  test.eq(rc, 1, "error in a script")
  has(err, "sdlua: " .. s .. ":1: deep", "stderr")
  has(err, "in local 'f'", "traceback names the function")
  s = script("syntax.lua", "x = = 1\n")
  rc, out, err = run(q(s))
  test.eq(rc, 1, "syntax error")
  has(err, "sdlua: " .. s .. ":1: unexpected symbol", "stderr")
  rc, out, err = run("-e 'error(setmetatable({}, {__tostring = function() return \"custom\" end}))'")
  test.eq(rc, 1, "error object")
  has(err, "sdlua: custom", "__tostring of the error object")
  rc, out, err = run("-e 'error({})'")
  has(err, "sdlua: (error object is a table value)", "plain table error")
  rc, out, err = run(q(tmpdir .. "/missing.lua"))
  test.eq(rc, 1, "missing script")
  has(err, "cannot open", "stderr")
  rc, out, err = run("-e 'print(1)' -e 'error(\"second\")' -e 'print(3)'")
  test.eq(rc, 1, "failing -e")
  test.eq(out, "1\n", "later -e not run")
end)

test.case("cli: usage errors", function()
  local rc, _, err = run("-x")
  test.eq(rc, 1, "unknown option")
  has(err, "unrecognized option '-x'", "stderr")
  has(err, "usage:", "stderr")
  rc, _, err = run("-e")
  test.eq(rc, 1, "-e without code")
  has(err, "'-e' needs an argument", "stderr")
  rc, _, err = run("-t 0 -e 'print(1)'")
  test.eq(rc, 1, "-t 0")
  has(err, "-t wants a thread count", "stderr")
  rc, _, err = run("-t lots")
  test.eq(rc, 1, "-t lots")
  local out
  rc, out, err = run("-h")
  test.eq(rc, 0, "-h")
  has(out, "usage: sdlua", "-h prints the usage on stdout")
  test.eq(err, "", "-h stderr")
  rc, out = run("--help")
  test.eq(rc, 0, "--help")
end)

test.case("cli: -l, -v, -i, -, --", function()
  local rc, out, err = run("-l string -l S=string -e 'print(string.rep(\"a\", 2), S.rep(\"b\", 2))'")
  test.eq(rc, 0, "exit code (" .. err .. ")")
  test.eq(out, "aa\tbb\n", "-l")
  rc, out, err = run("-l no_such_module_x")
  test.eq(rc, 1, "-l of a missing module")
  has(err, "module 'no_such_module_x' not found", "stderr")
  rc, out = run("-v")
  test.eq(rc, 0, "-v exit code")
  has(out, "sdlua ", "-v")
  has(out, "Lua 5.4", "-v")
  rc, out, err = run("- a b", "print('from stdin', ...)\n")
  test.eq(rc, 0, "exit code (" .. err .. ")")
  test.eq(out, "from stdin\ta\tb\n", "- runs stdin as a script")
  local s = script("dash.lua", "print('dash', ...)")
  rc, out = run("-- " .. q(s) .. " -e")
  test.eq(out, "dash\t-e\n", "-- ends the options")
  rc, out, err = run("-i -e 'y = 6'", "y * 7\n")
  test.eq(rc, 0, "-i exit code (" .. err .. ")")
  test.eq(out, "42\n", "-i enters the REPL after -e")
  rc, out = run("-i " .. q(s) .. " z", "'then'\n")
  test.eq(out, "dash\tz\nthen\n", "-i after a script")
end)

test.case("cli: threads from -t and SDLUA_THREADS", function()
  local get = "-e 'print(require(\"sd.core\").threads())'"
  local _, out = run("-t 1 " .. get)
  test.eq(out, "1\n", "-t 1")
  _, out = run("-t1 " .. get)
  test.eq(out, "1\n", "-t1")
  _, out = sh("SDLUA_THREADS=1 \"$SDLUA\" " .. get)
  test.eq(out, "1\n", "SDLUA_THREADS=1")
  _, out = sh("SDLUA_THREADS=1 \"$SDLUA\" -t 2 " .. get)
  test.eq(out, "2\n", "-t wins over SDLUA_THREADS")
  local rc, err
  rc, out, err = sh("SDLUA_THREADS=many \"$SDLUA\" " .. get)
  test.eq(rc, 0, "a bad SDLUA_THREADS is not fatal")
  has(err, "SDLUA_THREADS", "it is reported")
end)

test.case("cli: REPL fed through a pipe", function()
  local input = table.concat({
    "x = 20",
    "x + 1",
    "function f(a)",
    "  return a * 2,",
    "    'two'",
    "end",
    "f(x)",
    "",
    "'s', nil, true, 1.5",
    "error('oops')",
    "print('still running')",
    "local t = {",
    "  1, 2, 3}",
    "=x",
    "setmetatable({}, {__tostring = function() return 'pretty' end})",
    "{2, 3}, {1, 'a\\nb', {k = true, ['end'] = 2, [10] = 0.5}}",
    "t = {}; t.self = t",
    "t",
    "for i = 1, 2 do",
    "  print(i)",
    "end",
    "x = = 2",
    "print('done')",
  }, "\n") .. "\n"
  local rc, out, err = run("", input)
  test.eq(rc, 0, "exit code (" .. err .. ")")
  test.eq(out, "21\n40\ttwo\ns\tnil\ttrue\t1.5\nstill running\n20\npretty\n" ..
    '{2, 3}\t{1, "a\\nb", {[10] = 0.5, ["end"] = 2, k = true}}\n{self = <cycle>}\n1\n2\ndone\n', "stdout")
  has(err, "sdlua: stdin:1: oops", "runtime error reported")
  has(err, "sdlua: stdin:1: unexpected symbol near '='", "syntax error reported")
  -- a chunk left open at the end of input
  rc, out, err = run("", "for i = 1, 2 do\n")
  test.eq(rc, 0, "exit code at an incomplete chunk")
  has(err, "'end' expected near <eof>", "incomplete chunk reported")
  -- errors while printing a value
  rc, out, err = run("", "setmetatable({}, {__tostring = function() return {} end})\nprint('after')\n")
  has(err, "error printing the result", "bad __tostring")
  test.eq(out, "after\n", "the REPL goes on")
end)

test.case("cli: Ctrl-C interrupts running code", function()
  if not os.execute("command -v timeout >/dev/null 2>&1") then return end
  local rc, out, err = sh("timeout --preserve-status -s INT 1 \"$SDLUA\" -e 'while true do end'")
  test.eq(rc, 1, "exit code after SIGINT (stderr " .. err .. ")")
  has(err, "sdlua: ", "stderr")
  has(err, "interrupted!", "stderr")
  -- pcall catches the interruption like any error
  rc, out = sh("timeout --preserve-status -s INT 1 \"$SDLUA\" -e " ..
    q("local ok, e = pcall(function() while true do end end) print(ok, e:match('interrupted!'))"))
  test.eq(rc, 0, "caught interruption")
  test.eq(out, "false\tinterrupted!\n", "pcall result")
  -- in the REPL the session survives and reads on
  rc, out, err = sh("( echo 'while true do end'; sleep 2; echo 'print(\"alive\")'; echo '6 * 7' ) | " ..
    "timeout --preserve-status -s INT 1 \"$SDLUA\"")
  test.eq(rc, 0, "REPL exit code (stderr " .. err .. ")")
  has(err, "interrupted!", "stderr")
  test.eq(out, "alive\n42\n", "REPL output after the interruption")
end)

-- The terminal prompt (libedit) through a pseudo-terminal made by util-linux `script`: keys are
-- written with pauses, Ctrl-C is the byte 3 that the terminal turns into SIGINT. `exec`, because
-- script runs the command through $SHELL, and a dash left waiting would die of that SIGINT.
if not os.execute("command -v script >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1") then
  test.skip("cli: the terminal prompt", "needs the script and timeout commands")
else
  test.case("cli: the terminal prompt", function()
    local hist = tmpdir .. "/history"
    local keys = {
      {0.8, "1+1\r"},
      {0.5, "abc\003"},                -- Ctrl-C at the prompt clears the line
      {0.5, "x = 2^\r"}, {0.3, "10\r"}, -- a chunk on two lines
      {0.3, "x\r"},
      {0.3, "while true do end\r"},
      {0.8, "\003"},                   -- Ctrl-C stops the loop
      {0.5, "sd.thr\t()\r"},            -- Tab completes sd.threads
      {0.5, "\004"},                   -- Ctrl-D leaves
    }
    local feed = {}
    for _, k in ipairs(keys) do
      feed[#feed + 1] = string.format("sleep %.1f; printf %s", k[1], q(k[2]))
    end
    local rc, out, err = sh("( " .. table.concat(feed, "; ") .. "; sleep 1 ) | " ..
      "SDLUA_HISTORY=" .. q(hist) .. " timeout 30 script -qfec " .. q("exec " .. q(SDLUA)) .. " /dev/null")
    test.eq(rc, 0, "exit code (stdout " .. out .. ", stderr " .. err .. ")")
    has(out, "1+1\r\n2\r\n", "an expression's value")
    has(out, "1024.0\r\n", "the two-line chunk ran")
    has(out, "interrupted!", "Ctrl-C stopped the loop")
    local h = slurp(hist)
    has(h, "\n1+1\n", "history file")
    has(h, "\nsd.threads()\n", "the completed line in the history")
    has(h, "\nx\\040=\\0402^\\01210\n", "a two-line chunk is one entry, escaped as libedit's")
    test.eq(h:match("^[^\n]*"), "_HiStOrY_V2_", "the header of libedit's history files")
    test.truthy(not h:find("abc", 1, true), "a cancelled line is not in the history")
  end)
end

-- The same core as a C module of the stock interpreter (docs/cli-runtime.md).
local have_lua = os.execute("command -v lua5.4 >/dev/null 2>&1")
local have_so = io.open("lib/sd/core.so", "rb")
if have_so then have_so:close() end
if not (have_lua and have_so) then
  test.skip("cli: sd from plain lua5.4", "needs lua5.4 and lib/sd/core.so")
else
  test.case("cli: sd from plain lua5.4", function()
    local env = 'LUA_CPATH="$PWD/lib/?.so;;" LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;" '
    local rc, out, err = sh(env .. "SDLUA_THREADS=1 lua5.4 -e " ..
      q('local sd = require "sd"; print(sd.threads(), type(sd.memory().current), sd.crc32("a"))'))
    test.eq(rc, 0, "exit code (" .. err .. ")")
    test.eq(out, "1\tnumber\t3904355907\n", "stdout")
  end)
end

os.execute("rm -rf " .. q(tmpdir))
