-- The test harness: every test file under tests/lua/ is a chunk that requires this module and
-- declares cases. Output lines: "ok - name", "not ok - name: why", "skip - name: why".
local test = {passed = 0, failed = 0, skipped = 0}

local function report(status, name, why)
  io.write(status, " - ", name, why and (": " .. why) or "", "\n")
  io.stdout:flush()
end

-- Runs fn(); an error (or a failed check) fails the case. Returns true when it passed.
function test.case(name, fn)
  local ok, err = xpcall(fn, debug.traceback)
  if ok then
    test.passed = test.passed + 1
    report("ok", name)
  else
    test.failed = test.failed + 1
    report("not ok", name, tostring(err))
  end
  return ok
end

function test.skip(name, why)
  test.skipped = test.skipped + 1
  report("skip", name, why)
end

-- The reference folder (SDLUA_REFERENCE, default ../shared/reference from the repository root)
-- or nil. With SDLUA_REQUIRE_REFERENCE=1 (CI) a missing folder is an error instead.
function test.reference(rel)
  local root = os.getenv("SDLUA_REFERENCE") or "../shared/reference"
  local path = rel and (root .. "/" .. rel) or root
  local f = io.open(rel and path or (root .. "/README.md"), "rb")
  if f then f:close(); return path end
  if os.getenv("SDLUA_REQUIRE_REFERENCE") == "1" then
    error("reference file missing: " .. path .. " (SDLUA_REFERENCE)", 2)
  end
  return nil
end

-- A case that needs reference files: skipped by name when they are absent.
function test.golden(name, rel, fn)
  local root = os.getenv("SDLUA_REFERENCE") or "../shared/reference"
  local f = io.open(root .. "/" .. rel, "rb")
  if not f then
    if os.getenv("SDLUA_REQUIRE_REFERENCE") == "1" then
      return test.case(name, function() error("reference file missing: " .. root .. "/" .. rel) end)
    end
    return test.skip(name, "no reference at " .. root .. "/" .. rel)
  end
  f:close()
  return test.case(name, function() return fn(root .. "/" .. rel) end)
end

function test.eq(got, want, what)
  if got ~= want then
    error(string.format("%s: expected %s, got %s", what or "value", tostring(want), tostring(got)), 2)
  end
end

function test.truthy(v, what)
  if not v then error((what or "condition") .. " is false", 2) end
end

-- |got - want| <= tol for numbers.
function test.near(got, want, tol, what)
  if not (math.abs(got - want) <= tol) then
    error(string.format("%s: expected %.9g +- %g, got %.9g", what or "value", want, tol, got), 2)
  end
end

-- fn() must raise an error whose message contains `pattern` (plain text). Returns the message.
function test.raises(fn, pattern, what)
  local ok, err = pcall(fn)
  if ok then error((what or "call") .. " did not raise an error", 2) end
  err = tostring(err)
  if pattern and not err:find(pattern, 1, true) then
    error(string.format("%s: error %q does not mention %q", what or "call", err, pattern), 2)
  end
  return err
end

-- The elements of a tensor as one flat Lua list (row-major).
function test.flat(x)
  local out = {}
  local function walk(v)
    if type(v) == "table" then for _, e in ipairs(v) do walk(e) end else out[#out + 1] = v end
  end
  walk(x:totable())
  return out
end

-- A fresh temporary path ending in `suffix` (nothing is left at it).
function test.tmpname(suffix)
  local n = os.tmpname()
  os.remove(n)
  return n .. (suffix or "")
end

-- The bytes of a file, or nil when it cannot be opened.
function test.read_file(path)
  return require("sd.loader").read_file(path)
end

-- For tests that run the program as a child process ------------------------------------------

-- A string quoted for the shell.
function test.quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- The absolute path of the sdlua binary under test: $SDLUA, else the interpreter running this
-- file (bin/sdlua, or build-asan/bin/sdlua in the sanitizer run).
function test.sdlua()
  local path = os.getenv("SDLUA") or arg[-1] or "bin/sdlua"
  if path:sub(1, 1) ~= "/" then path = io.popen("pwd"):read("l") .. "/" .. path end
  return path
end

-- A new empty directory.
function test.tmpdir()
  local dir = test.tmpname()
  assert(os.execute("mkdir -p " .. test.quote(dir)))
  return dir
end

-- s must contain sub (plain text).
function test.has(s, sub, what)
  if not s:find(sub, 1, true) then
    error(string.format("%s: %q does not contain %q", what or "output", s, sub), 2)
  end
end

-- Prints a measured error against its tolerance and fails past it (golden tests).
function test.within(err, tol, what)
  io.write(string.format("  %-48s max abs err %.3g  (tol %.3g)\n", what, err, tol))
  if not (err <= tol) then
    error(string.format("%s: max abs err %.6g exceeds tolerance %.6g", what, err, tol), 2)
  end
end

return test
