-- Memory is planned, not left to the garbage collector: with the collector stopped, a forward
-- pass gives back every byte it took (only its output stays), and in a sampling loop the
-- tensor-heap peak (sd.memory().peak) is the same at every step.
local test = require "test"
local sd = require "sd"
local T = sd.tensor

local root = test.reference()

local pipe
local function tiny_pipe()
  pipe = pipe or sd.load(root .. "/tiny-sd1")
  return pipe
end

-- fn() with the collector stopped (restarted afterwards, even on error)
local function no_gc(fn)
  collectgarbage("collect")
  collectgarbage("stop")
  local ok, err = pcall(fn)
  collectgarbage("restart")
  if not ok then error(err, 0) end
end

test.case("memory: sd.memory() reports current, peak and pooled bytes", function()
  local m0 = sd.memory()
  test.truthy(math.type(m0.current) == "integer" and math.type(m0.peak) == "integer", "integer counters")
  test.truthy(m0.peak >= m0.current, "peak >= current")
  no_gc(function()
    sd.memory_reset_peak()
    local base = sd.memory().current
    local x = T.zeros{1024, 1024}
    test.eq(sd.memory().current - base, 4 * 1024 * 1024, "a 4 MiB tensor counts 4 MiB")
    x:release()
    test.eq(sd.memory().current, base, "released at once")
    test.truthy(sd.memory().peak >= base + 4 * 1024 * 1024, "the peak remembers it")
  end)
end)

-- The pool (runtime/storage.c): a freed block serves a later request of its size or up to half
-- of it; pooled bytes stay within the live high-water mark plus a bounded slack.
test.case("memory: the pool reuses blocks and stays within the live high-water mark", function()
  local MiB = 1024 * 1024
  no_gc(function()
    sd.memory_trim()
    local a = T.zeros{8 * MiB // 4}            -- 8 MiB
    a:release()
    test.eq(sd.memory().pooled, 8 * MiB, "a released block is pooled")
    local b = T.zeros{5 * MiB // 4}            -- 5 MiB fits in the 8 MiB block
    test.eq(sd.memory().pooled, 0, "a smaller request takes the pooled block")
    test.eq(sd.memory().current, 5 * MiB, "current counts the tensor's own bytes")
    b:release()
    local c = T.zeros{3 * MiB // 4}            -- under half the block: a new one
    test.eq(sd.memory().pooled, 8 * MiB, "a block more than twice the request is left pooled")
    c:release()
    -- many sizes, one at a time: the pool never holds more than the high-water mark
    -- (8 MiB) plus half of it
    for i = 1, 40 do
      local t = T.zeros{(i * 97 % 64 + 1) * MiB // 64}  -- 1/16 to 4 MiB
      t:release()
      test.truthy(sd.memory().pooled <= 12 * MiB, "pooled bytes bounded at step " .. i)
    end
    sd.memory_trim()
    test.eq(sd.memory().pooled, 0, "memory_trim empties the pool")
  end)
end)

test.case("memory: T.attention's result owns its buffer (released with it, no GC needed)", function()
  local g = sd.rng.torch(1)
  local q = T.randn({2, 3, 50, 8}, g)
  no_gc(function()
    local base = sd.memory().current
    local o = T.attention(q, q, q)
    test.eq(sd.memory().current - base, o:numel() * 4, "only the output is allocated")
    o:release()
    test.eq(sd.memory().current, base, "nothing left after releasing the output")
  end)
end)

if not test.reference("tiny-sd1/model_index.json") then
  test.skip("memory: U-Net forward returns the heap to its baseline", "no reference tiny-sd1 model")
  test.skip("memory: txt2img leaves nothing to the GC, heap peak the same at every step", "no reference tiny-sd1 model")
  test.skip("memory: latents kept by on_step stay valid", "no reference tiny-sd1 model")
  return
end

test.case("memory: U-Net, VAE and text encoder forwards return the heap to its baseline", function()
  local p = tiny_pipe()
  local g = sd.rng.torch(3)
  local x = T.randn({2, 4, 16, 16}, g)
  local ctx = T.randn({2, 77, p.text_encoder.config.hidden_size}, g)
  no_gc(function()
    local base = sd.memory().current
    local out = p.unet:forward(x, 500, ctx)
    out:release()
    test.eq(sd.memory().current, base, "unet: heap back to its baseline")
    local img = p.vae:decode(x)
    img:release()
    test.eq(sd.memory().current, base, "vae decode: heap back to its baseline")
    local ids = T.from({49406, 320, 49407}, {1, 3})
    base = sd.memory().current
    local e = p.text_encoder:forward(ids)
    e:release()
    test.eq(sd.memory().current, base, "text encoder: heap back to its baseline")
  end)
end)

-- The tensor heap at each U-Net call of a txt2img run, with the collector stopped: lows[k] is
-- the heap's size when the k-th call starts, peaks[k] the highest it reached from there until
-- the next call starts. No on_step: latents handed to it are the caller's (see the next case).
local function loop_memory(scheduler, options, steps)
  local p = tiny_pipe()
  local lows, peaks = {}, {}
  no_gc(function()
    local forward = p.unet.forward
    p.unet.forward = function(...)
      local m = sd.memory()
      if #lows > 0 then peaks[#lows] = m.peak end
      lows[#lows + 1] = m.current
      sd.memory_reset_peak()
      return forward(...)
    end
    local ok, err = pcall(function()
      local img = p:txt2img{prompt = "a red fox", steps = steps, guidance = 7.5, seed = 2, scheduler = scheduler,
        scheduler_options = options}
      img:release()
    end)
    p.unet.forward = nil -- back to the class's method
    if not ok then error(err, 0) end
  end)
  return lows, peaks
end

-- With the collector stopped, a temporary left to it is never freed: the heap at a model call's
-- start would grow by its size at every step. A scheduler's kept state (its history, a stored
-- sample) grows too, but only until it is full, by the 6th model call for all of them: PLMS
-- (pndm) keeps 4 past outputs, complete after its 5th call (its 2nd adds none); LMS keeps 4
-- derivatives, complete after the 4th; the 2nd-order multistep solvers 2. A 2nd-order
-- scheduler (heun, dpm2: order 2) alternates predictor and corrector calls, so its state
-- repeats every 2 calls. Hence, exactly: from the 7th call on, the heap at a call's start
-- equals that of `order` calls before (what is left to the GC per step: 0), and so does the
-- peak above it (the U-Net's, the same at every step). 8 steps give at least 9 calls.
local FULL, STEPS = 6, 8
for _, case in ipairs{{"euler"}, {"euler_a"}, {"dpmpp_2m", {use_karras_sigmas = true}}, {"ddim"}, {"pndm"},
    {"lms"}, {"heun"}, {"unipc"}, {"dpmpp_2m_sde"}, {"lcm"}, {"ddpm"}, {"dpm2"}} do
  local name, options = case[1], case[2]
  local label = name .. (options and " karras" or "")
  test.case("memory: txt2img " .. label .. " leaves nothing to the GC, heap peak the same at every step", function()
    local period = sd.scheduler(name, options).order
    local lows, peaks = loop_memory(name, options, STEPS)
    test.truthy(#lows > FULL + period, #lows .. " model calls")
    local above = {}
    for k = 1, #peaks do above[k] = peaks[k] - lows[k] end
    io.write(string.format("  %s: heap peak above the call's start: %s bytes; left to the GC per step: %d\n",
      label, table.concat(above, ", "), lows[#lows] - lows[#lows - period]))
    for k = FULL + 1, #lows do
      test.eq(lows[k] - lows[k - period], 0, string.format("heap at call %d's start minus call %d's", k, k - period))
    end
    for k = FULL + 1, #peaks do
      test.eq(above[k], above[k - period], string.format("call %d's peak above its start equals call %d's", k, k - period))
    end
  end)
end

-- The latents handed to on_step are the caller's from then on: the loop does not release them.
test.case("memory: latents kept by on_step stay valid", function()
  local kept = {}
  local img = tiny_pipe():txt2img{prompt = "a red fox", steps = 3, seed = 2, scheduler = "euler",
    on_step = function(i, _, latents) kept[i] = latents end}
  img:release()
  for i = 1, 3 do
    local v = kept[i]:abs():max():item()
    test.truthy(v == v and v > 0, "step " .. i .. "'s latents readable after the run")
  end
end)
