-- The operation profiler (runtime/lprofile.c): sd.profile(true) counts calls, time, bytes and
-- FLOPs per operation from the shapes; SDLUA_PROFILE=1 prints the table at exit.
local test = require "test"
local sd = require "sd"
local T = sd.tensor

local g = sd.rng.torch(7)

-- The counters of one operation after running fn with counting on from zero.
local function counted(fn)
  sd.profile(true)
  sd.profile_reset()
  fn()
  local p = sd.profile()
  sd.profile(false)
  return p
end

test.case("profile: FLOPs of conv2d from the shapes (dense, grouped, strided)", function()
  local x = T.randn({2, 8, 16, 16}, g)
  local w = T.randn({4, 8, 3, 3}, g)
  local wg = T.randn({6, 4, 3, 3}, g)
  local p = counted(function()
    x:conv2d(w, nil, {padding = 1}):release()                    -- out (2,4,16,16)
    x:conv2d(wg, nil, {padding = 1, groups = 2}):release()       -- out (2,6,16,16), 4 in per group
    x:conv2d(w, nil, {stride = 2, padding = 1}):release()        -- out (2,4,8,8)
  end)
  local want = 2 * (2 * 4 * 16 * 16) * 8 * 9 + 2 * (2 * 6 * 16 * 16) * 4 * 9 + 2 * (2 * 4 * 8 * 8) * 8 * 9
  test.eq(p.ops.conv2d.flops, want, "conv2d flops")
  test.eq(p.ops.conv2d.calls, 3, "conv2d calls")
  test.eq(p.ops.conv2d.kind, "conv", "conv2d kind")
  test.eq(p.kinds.conv.flops, want, "conv kind flops")
  test.truthy(p.ops.conv2d.seconds > 0, "conv2d time counted")
end)

test.case("profile: FLOPs of linear, matmul and attention", function()
  local x = T.randn({3, 5, 7}, g)
  local w = T.randn({11, 7}, g)
  local b = T.randn({11}, g)
  local a, m = T.randn({2, 3, 4}, g), T.randn({4, 5}, g)
  local q, k, v = T.randn({1, 2, 10, 4}, g), T.randn({1, 2, 6, 4}, g), T.randn({1, 2, 6, 3}, g)
  local qc = T.randn({1, 2, 6, 4}, g)
  local p = counted(function()
    x:linear(w, b):release()
    a:matmul(m):release()
    T.attention(q, k, v):release()
    T.attention(qc, k, v, {causal = true}):release()
  end)
  test.eq(p.ops.linear.flops, 2 * 15 * 7 * 11, "linear flops")
  test.eq(p.ops.matmul.flops, 2 * (2 * 3 * 5) * 4, "matmul flops")
  test.eq(p.ops.attention.flops, 2 * 2 * 10 * 6 * (4 + 3) + 2 * 2 * 6 * 6 * (4 + 3) / 2, "attention flops")
  test.eq(p.kinds.linear.calls, 2, "linear kind: linear and matmul")
  test.eq(p.kinds.linear.flops, 2 * 15 * 7 * 11 + 2 * 30 * 4, "linear kind flops")
  test.eq(p.kinds.attention.calls, 2, "attention calls")
  test.eq(p.flops, p.kinds.linear.flops + p.kinds.attention.flops, "total flops")
end)

test.case("profile: pointwise kinds, operators, bytes; off means not counted", function()
  local x = T.randn({4, 8}, g)
  local wn, bn = T.ones{8}, T.zeros{8}
  local p = counted(function()
    local y = x + x                  -- the metamethod goes through the methods table: "add"
    y:silu():release()
    y:layer_norm(wn, bn):release()
    y:to("f16"):release()
    y:release()
  end)
  test.eq(p.ops.add.calls, 1, "x + x counted as add")
  test.eq(p.ops.add.kind, "elementwise", "add kind")
  test.eq(p.ops.add.bytes, 3 * 32 * 4, "add bytes: two operands read, one result written")
  test.eq(p.ops.silu.kind, "elementwise", "silu kind")
  test.eq(p.ops.layer_norm.kind, "norm", "layer_norm kind")
  test.eq(p.ops.to.kind, "conversion", "to kind")
  test.eq(p.ops.to.bytes, 32 * 4 + 32 * 2, "to bytes")
  test.eq(p.ops.add.flops, 0, "no FLOPs counted for pointwise operations")
  -- counting off: nothing changes
  local before = sd.profile().calls
  local y = x + x
  y:release()
  test.eq(sd.profile().calls, before, "no counting after profile(false)")
  test.eq(sd.profile().enabled, false, "enabled flag")
end)

test.case("profile: errors pass through the wrapped operations unchanged", function()
  sd.profile(true)
  local ok, err = pcall(function() return T.randn({2, 3}, g):matmul(T.randn({4, 5}, g)) end)
  sd.profile(false)
  test.eq(ok, false, "matmul of mismatched shapes fails")
  test.has(tostring(err), "cannot be multiplied", "the operation's own message")
end)

test.case("profile: the report names kinds and operations", function()
  local x = T.randn({1, 4, 8, 8}, g)
  local w = T.randn({4, 4, 1, 1}, g)
  counted(function() x:conv2d(w):release() end)
  local r = sd.profile_report()
  test.has(r, "GFLOP/s", "report header")
  test.has(r, "conv2d", "report names the operation")
  test.truthy(r:match("\nconv%s+1%s"), "report has the conv kind with 1 call")
end)

test.case("profile: SDLUA_PROFILE=1 prints the table at exit to stderr", function()
  local script = test.tmpname(".lua")
  local f = assert(io.open(script, "w"))
  f:write([[
local sd = require "sd"
local T = sd.tensor
local x = T.ones{2, 3, 8, 8}
local w = T.ones{5, 3, 3, 3}
local y = x:conv2d(w, nil, {padding = 1})
y = y:silu()
io.write(string.format("flops=%d\n", sd.profile().flops))
]])
  f:close()
  local err = test.tmpname(".txt")
  local p = io.popen("SDLUA_PROFILE=1 " .. test.quote(test.sdlua()) .. " " .. test.quote(script) .. " 2>" .. test.quote(err))
  local out = p:read("a")
  p:close()
  local stderr = test.read_file(err) or ""
  os.remove(script); os.remove(err)
  test.eq(out, string.format("flops=%d\n", 2 * (2 * 5 * 8 * 8) * 3 * 9), "flops counted in the child")
  test.has(stderr, "sdlua profile:", "table printed at exit")
  test.has(stderr, "conv2d", "conv2d row")
  test.has(stderr, "silu", "silu row")
  -- and nothing without the variable
  p = io.popen("SDLUA_PROFILE= " .. test.quote(test.sdlua()) .. " -e 'local sd = require \"sd\"; io.write(tostring(sd.profile().enabled))' 2>&1")
  out = p:read("a")
  p:close()
  test.eq(out, "false", "off by default, nothing printed")
end)
