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
  test.skip("memory: txt2img heap peak is the same at every step", "no reference tiny-sd1 model")
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

-- What the sampling loop itself allocates at its high-water mark (the U-Net forward) is the same
-- at every step: the step's peak above the heap at the step's start. (The schedulers' and the
-- guidance's few latent-sized temporaries are left to the collector, so with the collector
-- stopped the baseline creeps up by those bytes; the step's own peak above it does not move.)
test.case("memory: txt2img heap peak is the same at every step", function()
  local p = tiny_pipe()
  local peaks, lows = {}, {}
  no_gc(function()
    local first = true
    local forward = p.unet.forward
    p.unet.forward = function(...)
      if first then
        first = false
        lows[0] = sd.memory().current
        sd.memory_reset_peak()
      end
      return forward(...)
    end
    local ok, err = pcall(function()
      local img = p:txt2img{prompt = "a red fox", steps = 5, guidance = 7.5, seed = 2, scheduler = "euler",
        on_step = function(i)
          local m = sd.memory()
          peaks[i], lows[i] = m.peak, m.current
          sd.memory_reset_peak()
        end}
      img:release()
    end)
    p.unet.forward = nil -- back to the class's method
    if not ok then error(err, 0) end
  end)
  test.eq(#peaks, 5, "on_step ran 5 times")
  local above = {}
  for i = 1, #peaks do above[i] = peaks[i] - lows[i - 1] end
  io.write(string.format("  heap peak above the step's start: %s bytes; left to the GC per step: %s\n",
    table.concat(above, ", "), lows[2] - lows[1]))
  -- (step 1 is measured from inside the U-Net call, after the step's input was made)
  test.truthy(above[1] <= above[2], "step 1 measured from a later start")
  for i = 3, #peaks do
    test.eq(above[i], above[2], string.format("step %d's peak above its start equals step 2's", i))
  end
end)
