-- sd.bench (`make bench-sd`): the table it writes from its jobs' results, on made-up results
-- (the jobs themselves take minutes on the full-size stand-in; they are run by hand).
local test = require "test"
local bench = require "sd.bench"

local function run(steps, sgemm, unet_seconds)
  return {
    step_seconds = steps, load_seconds = 0.02, load_peak_rss = 0.09e9, encode_seconds = 0.2,
    decode_seconds = 15, peak_rss = 2.8e9, step_heap_peaks = {193e6, 193e6},
    sgemm_lo = 200, sgemm_hi = 210, sgemm_all = sgemm,
    unet = {flops = #steps * 2 * 803e9, calls = #steps, seconds = unet_seconds},
    unet_ratios = {0.85, 0.87}, vae = {flops = 2515e9, seconds = 15}, vae_ratios = {0.8},
  }
end

test.case("bench-sd table: the bf16 step over the f32 floor, by the issue's count and sdlua's", function()
  local res = {r512 = run({9.0, 9.0}, {200, 200, 200}, 18), r256 = run({2.2, 2.2}, {200, 200, 200}, 4.4),
    bf16 = run({4.61, 5.0}, {200, 200, 210}, 9.6)}
  local text = bench.table(res)
  -- step 1: 4.61 s at a 200 GFLOP/s sgemm: floor 2 * 922 / 200 = 9.22 s -> 0.50; by 803: 0.57
  -- step 2: 5.0 s at (200 + 210) / 2 = 205: floor 8.995 s -> 0.56; by 803: 0.64
  test.has(text, "seconds per step 4.61 / 5.00", "bf16 step times")
  test.has(text, "**step / f32 floor 0.50 / 0.56**", "ratios to the issue's floor")
  test.has(text, "by sdlua's own count of 803 GFLOP: 0.57 / 0.64", "ratios by sdlua's count")
  test.has(text, "| **U-Net / sgemm**, each call (target ≥ 0.8 at 512²) | **0.85 / 0.87** |", "U-Net row")
  res.bf16 = nil
  test.truthy(not bench.table(res):find("precision bf16", 1, true), "no bf16 line without its job")
end)
