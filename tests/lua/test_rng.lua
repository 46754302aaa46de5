-- sd.rng.torch against torch's own numbers (reference randn.safetensors), seeds, generator
-- state, and T.randn / T.rand.
local test = require "test"
local sd = require "sd"
local T = sd.tensor

local flat = test.flat

-- max |a - b| and the number of elements whose float32 bits differ (so -0 vs +0 counts)
local function compare(got, want)
  test.eq(table.concat(got.shape, "x"), table.concat(want.shape, "x"), "shape")
  test.eq(got.dtype, "f32", "dtype")
  local a, b = flat(got), flat(want)
  local m, ndiff = 0, 0
  for i = 1, #b do
    local d = math.abs(a[i] - b[i])
    if not (d <= m) then m = d end
    if string.pack("<f", a[i]) ~= string.pack("<f", b[i]) then ndiff = ndiff + 1 end
  end
  return m, ndiff, #b
end

-- torch's numbers bit for bit: prints the count of differing values, fails on any. Returns the
-- number of values compared.
local function exact(got, want, what)
  local err, ndiff, n = compare(got, want)
  io.write(string.format("  %-40s %d of %d values differ, max abs err %.3g\n", what, ndiff, n, err))
  if ndiff ~= 0 then
    error(string.format("%s: %d of %d values differ from torch (max abs err %.6g)", what, ndiff, n, err), 2)
  end
  return n
end

local function shape_of(s) -- "1x4x64x64" -> {1, 4, 64, 64}
  local t = {}
  for n in s:gmatch("%d+") do t[#t + 1] = tonumber(n) end
  return t
end

-- Both paths are bit for bit torch's: the serial double path (< 16 elements) and the 16-block
-- path, whose log / sin / cos are the approximations of torch's AVX2 kernel (run this file with
-- SDLUA_CPU=generic too: the portable version must give the same bits).
test.golden("rng: every seed*_ tensor of randn.safetensors, bit for bit", "randn.safetensors", function(path)
  local w = sd.safetensors.load(path)
  local names = {}
  for name in pairs(w) do if name:match("^seed%d+_") then names[#names + 1] = name end end
  table.sort(names)
  test.truthy(#names >= 24, "seed tensors present")
  local total = 0
  for _, name in ipairs(names) do
    local seed, dims = name:match("^seed(%d+)_(.*)$")
    local got = sd.rng.torch(math.tointeger(tonumber(seed))):randn(shape_of(dims))
    total = total + exact(got, w[name], name)
  end
  io.write(string.format("  all %d tensors: 0 of %d values differ\n", #names, total))
end)

test.golden("rng: generator state across calls (seq_*, seq2_*), bit for bit", "randn.safetensors", function(path)
  local w = sd.safetensors.load(path)
  local g = sd.rng.torch(7)
  exact(g:randn{1, 4, 8, 8}, w.seq_seed7_call0_1x4x8x8, "seq_seed7_call0_1x4x8x8")
  exact(g:randn{1, 4, 8, 8}, w.seq_seed7_call1_1x4x8x8, "seq_seed7_call1_1x4x8x8")
  g:manual_seed(7)
  exact(g:randn(3), w.seq2_seed7_call0_3, "seq2_seed7_call0_3")
  exact(g:randn(3), w.seq2_seed7_call1_3, "seq2_seed7_call1_3 (starts with the cached normal)")
  exact(g:randn(1, 4, 8, 8), w.seq2_seed7_call2_1x4x8x8, "seq2_seed7_call2_1x4x8x8")
end)

test.golden("rng: T.randn(shape, gen) is g:randn(shape)", "randn.safetensors", function(path)
  local w = sd.safetensors.load(path)
  exact(T.randn({1, 4, 8, 8}, sd.rng.torch(42)), w.seed42_1x4x8x8, "T.randn table shape")
  exact(T.randn(1, 4, 8, 8, sd.rng.torch(42)), w.seed42_1x4x8x8, "T.randn varargs shape")
  exact(T.randn({3, 5}, sd.rng.torch(1234567)), w.seed1234567_3x5, "T.randn serial path")
end)

test.case("rng: known torch values (rand, randn, seed aliasing)", function()
  local r = flat(sd.rng.torch(0):rand{3})
  test.near(r[1], 0.4962566, 1e-7, "rand[1]"); test.near(r[2], 0.7682218, 1e-7, "rand[2]")
  test.near(r[3], 0.0884774, 1e-7, "rand[3]")
  local n = flat(sd.rng.torch(0):randn(3))
  test.near(n[1], 1.5409961, 1e-6, "randn[1]"); test.near(n[3], -2.1787894, 1e-6, "randn[3]")
  test.eq(compare(sd.rng.torch(4294967301):randn{40}, sd.rng.torch(5):randn{40}), 0, "seed 2^32+5 == seed 5")
  test.eq(compare(sd.rng.torch(-1):randn{20}, sd.rng.torch(0xffffffff):randn{20}), 0, "seed -1 == 2^32-1")
  test.eq(compare(sd.rng.torch(42.0):randn{3}, sd.rng.torch(42):randn{3}), 0, "integral float seed")
  test.eq(compare(sd.rng.torch(2^62):randn{3}, sd.rng.torch(0):randn{3}), 0, "2^62 aliases 0")
  test.eq(compare(T.rand({5}, sd.rng.torch(3)), sd.rng.torch(3):rand(5)), 0, "T.rand")
  local u = flat(sd.rng.torch(9):rand{1000})
  for i = 1, #u do
    test.truthy(u[i] >= 0 and u[i] < 1 and u[i] * 2^24 == math.floor(u[i] * 2^24), "uniform on the 2^-24 grid")
  end
end)

test.case("rng: bad seeds and shapes are errors", function()
  test.raises(function() sd.rng.torch(1.5) end, "seed must be an integer")
  test.raises(function() sd.rng.torch("42") end, "seed must be an integer")
  test.raises(function() sd.rng.torch(2^70) end, "seed must be an integer")
  test.raises(function() sd.rng.torch(0):manual_seed({}) end, "seed must be an integer")
  test.raises(function() sd.rng.torch(0):randn{-1} end)
  test.raises(function() T.randn({2}, 5) end, "generator expected")
  test.raises(function() T.randn({2}, sd.tensor.zeros{1}) end, "generator expected")
  test.raises(function() sd.rng.torch(0).randn({}, {2}) end)
end)

test.case("rng: manual_seed, seed, clone, get_state / set_state", function()
  local g = sd.rng.torch(11)
  test.eq(g:initial_seed(), 11)
  local a = g:randn{20}
  test.truthy(g:manual_seed(11) == g, "manual_seed returns the generator")
  test.eq(compare(g:randn{20}, a), 0, "manual_seed restarts")
  g:randn(3) -- leaves a cached normal
  local c = g:clone()
  local s = g:get_state()
  local x1, x2 = g:randn(5), g:randn{33}
  test.eq(compare(c:randn(5), x1), 0, "clone continues identically (cache included)")
  test.eq(compare(c:randn{33}, x2), 0, "clone, 16-block path")
  local h = sd.rng.torch(0):set_state(s)
  test.eq(compare(h:randn(5), x1), 0, "set_state(string)")
  test.eq(h:initial_seed(), 11)
  local k = sd.rng.torch(0):set_state(c)
  test.eq(compare(k:rand{4}, c:clone():rand{4}), 0, "set_state(generator)")
  test.raises(function() h:set_state("short") end, "generator state must be")
  local s1 = g:seed()
  test.truthy(math.type(s1) == "integer" and s1 >= 0 and s1 < 2^53, "seed() returns a 53-bit integer")
  test.eq(g:initial_seed(), s1)
  test.eq(compare(g:randn{8}, sd.rng.torch(s1):randn{8}), 0, "seed() reseeds with what it returns")
  test.truthy(tostring(sd.rng.torch(5)):find("sd.rng.torch(5)", 1, true), "tostring")
end)

test.case("rng: T.randn without a generator uses the default one", function()
  local d = sd.rng.default()
  test.truthy(d == sd.rng.default(), "one default generator")
  local c = d:clone()
  test.eq(compare(T.randn{5}, c:randn{5}), 0, "T.randn{5} draws from sd.rng.default()")
  test.eq(compare(T.rand{17}, c:rand{17}), 0, "T.rand{17} draws from sd.rng.default()")
end)

test.case("rng: zero-size and 0-d shapes", function()
  local g = sd.rng.torch(1)
  test.eq(g:randn{0}:numel(), 0)
  test.eq(g:randn{2, 0, 3}.ndim, 3)
  local s = g:randn({})
  test.eq(s.ndim, 0)
  test.eq(compare(g:manual_seed(1):randn({}), sd.rng.torch(1):randn{1}:view({})), 0, "0-d draws one normal")
end)
