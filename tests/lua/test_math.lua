-- The math ops from Lua (runtime/lmath.c): arithmetic with broadcasting and numbers, in place
-- ops, activations, reductions, norms, softmax, resampling, cat/stack/where/embedding, ranges,
-- and the errors each misuse raises.
local test = require "test"
local sd = require "sd"
local T = sd.tensor

local function close(got, want, tol, what)
  test.near(got, want, tol or 1e-6 * (1 + math.abs(want)), what)
end

-- flat list of a tensor's values
local function flat(x)
  local c = x:contiguous():view{-1}
  local out = {}
  for i = 1, c:numel() do out[i] = c:get(i) end
  return out
end

local function all_close(x, want, tol, what)
  local got = flat(x)
  test.eq(#got, #want, (what or "values") .. " count")
  for i = 1, #want do close(got[i], want[i], tol, (what or "value") .. " " .. i) end
end

test.case("arithmetic broadcasts and takes numbers on either side", function()
  local x = T.from({1, 2, 3, 4, 5, 6}, {2, 3})
  local b = T.from({10, 20, 30}, {3})
  all_close(x + b, {11, 22, 33, 14, 25, 36})
  all_close(x - b, {-9, -18, -27, -6, -15, -24})
  all_close(x * b, {10, 40, 90, 40, 100, 180})
  all_close(b / x, {10, 10, 10, 2.5, 4, 5})
  all_close(x + 1, {2, 3, 4, 5, 6, 7})
  all_close(1 - x, {0, -1, -2, -3, -4, -5})
  all_close(2 * x, {2, 4, 6, 8, 10, 12})
  all_close(6 / x, {6, 3, 2, 1.5, 1.2, 1})
  all_close(x ^ 2, {1, 4, 9, 16, 25, 36})
  all_close(2 ^ x, {2, 4, 8, 16, 32, 64})
  all_close(-x, {-1, -2, -3, -4, -5, -6})
  all_close(x:rsub(10), {9, 8, 7, 6, 5, 4})
  all_close(x:rdiv(12), {12, 6, 4, 3, 2.4, 2})
  all_close(x:pow(b:view{1, 3} * 0 + 0.5), {1, math.sqrt(2), math.sqrt(3), 2, math.sqrt(5), math.sqrt(6)})
  local col = T.from({1, 2}, {2, 1})
  local outer = col * b
  test.eq(outer.shape[1], 2); test.eq(outer.shape[2], 3)
  all_close(outer, {10, 20, 30, 20, 40, 60})
  -- a transposed (non-contiguous) operand
  all_close(x:transpose(1, 2) + T.from({100, 200}, {2}), {101, 204, 102, 205, 103, 206})
end)

test.case("in place ops return self and check shapes", function()
  local x = T.from({1, 2, 3, 4}, {2, 2})
  local r = x:add_(1)
  test.truthy(r == x, "add_ returns self")
  all_close(x, {2, 3, 4, 5})
  x:mul_(T.from({10, 100}, {2}))
  all_close(x, {20, 300, 40, 500})
  x:sub_(x)
  all_close(x, {0, 0, 0, 0})
  x:div_(2)
  local e = test.raises(function() x:add_(T.zeros{3, 2, 2}) end, "add_")
  test.truthy(e:find("(3, 2, 2)", 1, true), "message names the result shape: " .. e)
  -- in place on a view writes through to the base
  local base = T.zeros{2, 3}
  base:select(1, 2):add_(7)
  all_close(base, {0, 0, 0, 7, 7, 7})
end)

test.case("arithmetic errors name the op, the shapes and the dtype", function()
  local x = T.zeros{2, 3}
  local e = test.raises(function() return x + T.zeros{4} end, "add: shapes (2, 3) and (4,) do not broadcast")
  test.raises(function() return x:mul(T.zeros({2, 3}, "f16")) end, "mul")
  test.raises(function() return x:mul(T.zeros({2, 3}, "f16")) end, "f16")
  test.raises(function() return T.zeros({2}, "i64"):exp() end, "exp: expected an f32 tensor, got i64")
  test.raises(function() return x:add("a") end, "add: the operand must be a tensor or a number")
  test.raises(function() return x:sub({}) end, "sub")
  assert(e)
end)

test.case("activations match their definitions", function()
  local vals = {-6, -2.5, -1, -0.1, 0, 0.3, 1, 2, 7.5}
  local x = T.from(vals, {#vals})
  local function erf(v) -- Abramowitz-Stegun is not exact enough; use the series / continued fraction
    local s, t, n = v, v, 0
    repeat
      n = n + 1
      t = -t * v * v / n
      s = s + t / (2 * n + 1)
    until math.abs(t) < 1e-17 or n > 200
    return 2 / math.sqrt(math.pi) * s
  end
  local function sig(v) return 1 / (1 + math.exp(-v)) end
  local ref = {
    neg = function(v) return -v end, exp = math.exp, abs = math.abs, sin = math.sin, cos = math.cos,
    tanh = function(v) local a, b = math.exp(v), math.exp(-v); return (a - b) / (a + b) end,
    sigmoid = sig, silu = function(v) return v * sig(v) end,
    gelu = function(v) return 0.5 * v * (1 + erf(v / math.sqrt(2))) end,
    gelu_tanh = function(v)
      local u = math.sqrt(2 / math.pi) * (v + 0.044715 * v ^ 3)
      return v * sig(2 * u)
    end,
    quick_gelu = function(v) return v * sig(1.702 * v) end,
  }
  for name, f in pairs(ref) do
    local got = flat(x[name](x))
    for i, v in ipairs(vals) do
      local w = f(v)
      close(got[i], w, 2e-6 * (1 + math.abs(w)), name .. "(" .. v .. ")")
    end
  end
  local p = T.from({0.25, 1, 4, 100}, {4})
  all_close(p:sqrt(), {0.5, 1, 2, 10})
  all_close(p:rsqrt(), {2, 1, 0.5, 0.1})
  all_close(p:log(), {math.log(0.25), 0, math.log(4), math.log(100)})
  all_close(T.from({-3, 0.5, 9}, {3}):clamp(-1, 2), {-1, 0.5, 2})
  all_close(T.from({-3, 0.5, 9}, {3}):clamp(nil, 0), {-3, 0, 0})
  all_close(T.from({-3, 0.5, 9}, {3}):clamp(0), {0, 0.5, 9})
end)

test.case("geglu splits the last dim; add_silu fuses", function()
  local x = T.from({1, 2, 0.5, -1, 3, 4, 2, 0}, {2, 4})
  local g = x:geglu()
  test.eq(g.shape[1], 2); test.eq(g.shape[2], 2)
  local want = {1 * 0.5 * 0.5 * (1 + 0.38292492254802624), 2 * flat(T.from({-1}, {1}):gelu())[1],
                3 * flat(T.from({2}, {1}):gelu())[1], 0}
  all_close(g, want, 1e-6)
  test.raises(function() return T.zeros{2, 3}:geglu() end, "geglu")
  local a, b = T.from({1, -2}, {2}), T.from({0.5, 1}, {2})
  all_close(a:add_silu(b), flat((a + b):silu()))
  all_close(T.zeros{2, 2}:add_silu(T.from({1, 2}, {2})), flat(T.from({1, 2, 1, 2}, {2, 2}):silu()))
end)

test.case("reductions over a dim, keepdim, and over everything", function()
  local x = T.from({1, 2, 3, 4, 5, 6}, {2, 3})
  all_close(x:sum(1), {5, 7, 9})
  all_close(x:sum(2), {6, 15})
  all_close(x:sum(-1), {6, 15})
  local k = x:sum(2, true)
  test.eq(k.ndim, 2); test.eq(k.shape[2], 1)
  test.eq(x:sum():item(), 21)
  test.eq(x:sum().ndim, 0)
  close(x:mean():item(), 3.5)
  all_close(x:mean(1), {2.5, 3.5, 4.5})
  all_close(x:var(2), {1, 1})
  all_close(x:var(2, false, false), {2 / 3, 2 / 3})
  close(x:var():item(), 3.5)
  all_close(x:max(1), {4, 5, 6})
  all_close(x:min(2), {1, 4})
  test.eq(x:max():item(), 6)
  local a = x:argmax(2)
  test.eq(a.dtype, "i64")
  all_close(a, {3, 3}) -- 1-based
  all_close(T.from({3, 9, 9, 1}, {4}):argmax(1), {2})
  test.eq(T.from({3, 9, 9, 1}, {4}):argmin():item(), 4)
  test.raises(function() return x:sum(3) end, "out of range")
  test.raises(function() return x:mean(0) end, "out of range")
  test.raises(function() return T.zeros({2}, "i32"):sum() end, "sum: expected an f32 tensor, got i32")
end)

test.case("cumprod is float32 sequential; linspace and arange as torch", function()
  local betas = T.from({0.9, 0.8, 0.5, 0.25}, {4})
  local c = betas:cumprod(1)
  local acc, want = 1, {}
  for i, v in ipairs(flat(betas)) do
    acc = string.unpack("f", string.pack("f", acc * v)); want[i] = acc
  end
  all_close(c, want, 0)
  all_close(T.cumprod(T.from({1, 2, 3, 4}, {2, 2}), 1), {1, 2, 3, 8})
  all_close(T.from({1, 2, 3, 4}, {2, 2}):cumprod(-1), {1, 2, 3, 12})
  local l = T.linspace(0, 999, 4)
  all_close(l, {0, 333, 666, 999}, 0)
  test.eq(T.linspace(2, 3, 1):item(), 2)
  test.eq(T.linspace(0, 1, 0):numel(), 0)
  all_close(T.arange(5), {0, 1, 2, 3, 4})
  all_close(T.arange(2, 8, 2), {2, 4, 6})
  all_close(T.arange(1, 0, -0.25), {1, 0.75, 0.5, 0.25})
  local ai = T.arange(0, 1000, 100, "i64")
  test.eq(ai.dtype, "i64"); test.eq(ai:numel(), 10); test.eq(ai:get(10), 900)
  test.raises(function() return T.arange(0, 5, 0) end, "arange")
  test.raises(function() return T.arange(0, 5, -1) end, "arange")
  test.raises(function() return T.linspace(0, 1, -2) end, "linspace")
end)

test.case("softmax, group_norm and layer_norm", function()
  local x = T.from({1, 2, 3, 1000, 1001, 1002}, {2, 3})
  local s = x:softmax()
  local e1, e2 = math.exp(-2), math.exp(-1)
  local d = 1 + e1 + e2
  local w = {e1 / d, e2 / d, 1 / d}
  all_close(s, {w[1], w[2], w[3], w[1], w[2], w[3]}, 1e-6)
  all_close(x:softmax(1), {0, 0, 0, 1, 1, 1}, 1e-6)
  all_close(T.from({-math.huge, 0}, {2}):softmax(), {0, 1})
  -- group norm: two groups of two channels, 2 values each
  local g = T.from({1, 2, 3, 4, 10, 10, 10, 14}, {1, 4, 2})
  local y = g:group_norm(2, nil, nil, 0)
  local sd1 = math.sqrt(1.25)
  all_close(y, {-1.5 / sd1, -0.5 / sd1, 0.5 / sd1, 1.5 / sd1, -1 / math.sqrt(3), -1 / math.sqrt(3),
                -1 / math.sqrt(3), 3 / math.sqrt(3)}, 1e-5)
  local wt, bs = T.from({1, 2, 3, 4}, {4}), T.from({0, 0, 1, 1}, {4})
  local ya = g:group_norm(2, wt, bs, 0)
  close(ya:get(1, 2, 1), 2 * 0.5 / sd1, 1e-5)
  close(ya:get(1, 4, 2), 4 * 3 / math.sqrt(3) + 1, 1e-5)
  local ys = g:group_norm(2, wt, bs, 1e-5, true)
  all_close(ys, flat(g:group_norm(2, wt, bs, 1e-5):silu()), 1e-6)
  test.raises(function() return g:group_norm(3) end, "group_norm: 3 groups do not divide the 4 channels")
  test.raises(function() return g:group_norm(2, T.ones{3}) end, "group_norm")
  test.raises(function() return g:group_norm(2, "w") end, "weight must be a tensor or nil")
  local l = T.from({1, 2, 3, 4, 6, 8}, {2, 3})
  local ln = l:layer_norm(nil, nil, 0)
  local r = math.sqrt(2 / 3)
  all_close(ln, {-1 / r, 0, 1 / r, -1 / r, 0, 1 / r}, 1e-5)
  all_close(l:layer_norm(T.from({1, 1, 2}, {3}), T.from({0, 1, 0}, {3})), {-1 / r, 1, 2 / r, -1 / r, 1, 2 / r}, 1e-4)
  test.raises(function() return l:layer_norm(T.ones{4}) end, "layer_norm")
end)

test.case("upsample_nearest and interpolate (NCHW)", function()
  local x = T.from({1, 2, 3, 4}, {1, 1, 2, 2})
  local u = x:upsample_nearest(2)
  test.eq(u.shape[3], 4); test.eq(u.shape[4], 4)
  all_close(u, {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}, 0)
  local b = x:interpolate{size = {4, 4}, mode = "bilinear"}
  all_close(b, {1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4}, 1e-6)
  local b2 = x:interpolate{scale = 2, mode = "bilinear"}
  all_close(b2, flat(b), 0)
  local n = T.from({1, 2, 3, 4, 5}, {1, 1, 1, 5}):interpolate{size = {1, 3}}
  all_close(n, {1, 2, 4}, 0)
  test.raises(function() return x:interpolate{} end, "interpolate: give exactly one of size= and scale=")
  test.raises(function() return x:interpolate{size = {2, 2}, mode = "cubic"} end, "unknown mode 'cubic'")
  test.raises(function() return T.zeros{2, 2}:upsample_nearest(2) end, "upsample_nearest")
end)

test.case("cat, stack, where, embedding", function()
  local a, b = T.from({1, 2, 3, 4}, {2, 2}), T.from({5, 6}, {1, 2})
  local c = T.cat({a, b}, 1)
  test.eq(c.shape[1], 3)
  all_close(c, {1, 2, 3, 4, 5, 6})
  all_close(T.cat({a, a}, -1), {1, 2, 1, 2, 3, 4, 3, 4})
  local s = T.stack({a, a * 10}, 1)
  test.eq(s.shape[1], 2); test.eq(s.shape[3], 2)
  all_close(s, {1, 2, 3, 4, 10, 20, 30, 40})
  test.eq(T.stack({a, a}, -1).shape[3], 2)
  test.raises(function() return T.cat({a, T.zeros{2, 3}}, 1) end, "cat")
  test.raises(function() return T.cat({a, 5}, 1) end, "cat: list entry 2")
  test.raises(function() return T.cat({}, 1) end, "cat: the list of tensors is empty")
  test.raises(function() return T.stack({a, b}) end, "stack")
  local cond = T.from({1, 0, 0, 1}, {2, 2})
  all_close(T.where(cond, a, 0), {1, 0, 0, 4})
  all_close(T.where(cond, -1, T.from({7, 8}, {2})), {-1, 8, 7, -1})
  all_close(T.where(T.from({1, 0}, {2}, "u8"), 1, 2), {1, 2})
  local wt = T.from({0, 0, 1, 1, 2, 2, 3, 3}, {4, 2})
  local e = T.embedding(wt, T.from({3, 0, 1}, {1, 3}, "i64"))
  test.eq(e.ndim, 3); test.eq(e.shape[3], 2)
  all_close(e, {3, 3, 0, 0, 1, 1})
  all_close(T.embedding(wt:to("f16"), T.from({2}, {1})), {2, 2})
  test.raises(function() return T.embedding(wt, T.from({1, 4}, {2}, "i32")) end, "embedding: id 4 at position 2")
  test.raises(function() return T.embedding(wt, T.from({-1}, {1})) end, "id -1")
end)

test.case("interpolate nearest is the same on every run with several threads (row sharing race)", function()
  local T = require("sd").tensor
  local g = require("sd").rng.torch(1)
  local x = T.stack({g:randn{77, 32}, g:randn{77, 32}, g:randn{77, 32}}, 1):unsqueeze(1)
  local want = x:interpolate{scale = 4, mode = "nearest"}
  for i = 1, 3 do
    for r = 1, 77 * 4, 37 do
      test.eq(want:get(1, i, r, 5), x:get(1, i, (r - 1) // 4 + 1, 2), "row " .. r)
    end
  end
  for _ = 1, 20 do
    test.truthy(x:interpolate{scale = 4, mode = "nearest"}:equal(want), "identical result")
  end
end)
