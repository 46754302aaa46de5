-- sd.precision: the bf16 dot-product kernels (kernels/gemm_bf16.h) and their fidelity cost on
-- the goldens. bf16 rounds both operands of every linear/conv product to 8 significant bits, so
-- it cannot meet the goldens' float32 tolerances; the cases below print the errors beside those
-- tolerances and assert only a loose bound (docs/performance.md, "bf16 dot products").
local test = require "test"
local sd = require "sd"
local T = sd.tensor
local cjson = require "cjson"
local goldens = require "pipeline_goldens"

local maxdiff = goldens.maxdiff

-- whether this CPU runs the bf16 kernels (AVX512_BF16, not capped by SDLUA_CPU)
local has_bf16
do
  local before = sd.precision()
  has_bf16 = select(2, sd.precision("bf16"))
  sd.precision(before)
end

test.case("sd.precision: default f32, set, query, restore, bad names", function()
  test.eq(sd.precision(), os.getenv("SDLUA_PRECISION") == "bf16" and "bf16" or "f32", "default")
  local before = sd.precision()
  local name, active = sd.precision("bf16")
  test.eq(name, "bf16", "after setting bf16")
  test.eq(type(active), "boolean", "second result")
  test.eq(select(2, sd.precision("f32")), false, "f32 never uses the bf16 kernels")
  test.raises(function() sd.precision("f16") end, 'expected "f32" or "bf16"')
  sd.precision(before)
end)

local function rel(a, b)
  return maxdiff(a, b) / math.max(b:abs():max():item(), 1e-30)
end

test.case("linear, conv2d and matmul under bf16: within bf16 rounding of f32", function()
  local g = sd.rng.torch(3)
  local x, w, b = g:randn{2, 37, 70}, g:randn{45, 70}, g:randn{45}
  local img, cw, cb = g:randn{1, 6, 12, 12}, g:randn{8, 6, 3, 3}, g:randn{8}
  local before = sd.precision()
  sd.precision("f32")
  local y32, c32, m32 = x:linear(w, b), img:conv2d(cw, cb, {padding = 1}), x:matmul(w:transpose(1, 2))
  sd.precision("bf16")
  local y16, c16, m16 = x:linear(w, b), img:conv2d(cw, cb, {padding = 1}), x:matmul(w:transpose(1, 2))
  local yw = x:linear(w:to("bf16"), b)
  sd.precision(before)
  for what, pair in pairs{linear = {y16, y32}, conv2d = {c16, c32}, matmul = {m16, m32}, ["linear bf16 w"] = {yw, y32}} do
    local e = rel(pair[1], pair[2])
    io.write(string.format("  %-14s bf16 vs f32: max error %.3g of max |y|\n", what, e))
    test.truthy(e < 2e-2, what .. " within 2e-2")
    if has_bf16 then test.truthy(e > 0, what .. " actually ran in bf16") end
  end
end)

-- The tiny reference pipelines with precision = "bf16": the errors beside the goldens' tolerance.
-- Loose bound for bf16: 8e-2 of the image range ([0, 1]) on the final image. Measured on this
-- machine with attention in bf16 too (docs/performance.md): 0.007-0.023 on tiny-sd1,
-- 0.017-0.058 on tiny-sd2, against golden tolerances of 3e-5-9e-4; at most 15 of 255 in the
-- 8-bit image. (The random-weight tiny models amplify differences over the steps; the U-Net
-- output alone is within 0.9 % of its range.)
local IMAGE_BOUND = 8e-2

local pipes = {}
for _, model in ipairs{"tiny-sd1", "tiny-sd2"} do
  for _, case in ipairs(goldens.cases) do
    local rel_path = "goldens/" .. model .. "/pipeline/" .. case .. ".safetensors"
    test.golden(string.format("precision bf16: pipeline %s %s", model, case), rel_path, function(path)
      local root = path:match("^(.*)/goldens/")
      local g, config, tol = goldens.load(path)
      pipes[model] = pipes[model] or sd.load(root .. "/" .. model)
      local pipe = pipes[model]
      local before = sd.precision()
      local img, info = goldens.run(pipe, g, config, {precision = "bf16"})
      test.eq(sd.precision(), before, "sd.precision restored after the call")
      test.eq(info.precision, has_bf16 and "bf16" or "f32", "info.precision")
      local e_lat, e_img = maxdiff(info.latents, g.latents_final), maxdiff(img, g.image)
      local off, worst = goldens.u8_diff(img, g)
      io.write(string.format("  latents_final err %.3g  image err %.3g  (golden tol %.3g: %s)  u8 max %d, %d values off\n",
        e_lat, e_img, tol, e_img <= tol and e_lat <= tol and "within" or "exceeded", worst, off))
      test.within(e_img, IMAGE_BOUND, "image within the bf16 bound")
    end)
  end
end

test.golden("precision bf16: tiny-sd1 unet vs golden", "goldens/tiny-sd1/unet.safetensors", function(path)
  local UNet = require "sd.models.unet"
  local root = path:match("^(.*)/goldens/")
  local dir = root .. "/tiny-sd1/unet"
  local f = assert(io.open(dir .. "/config.json"))
  local config = cjson.decode(f:read("a"))
  f:close()
  local unet = UNet.new(config, sd.safetensors.load(dir .. "/diffusion_pytorch_model.safetensors"))
  local g, meta = sd.safetensors.load(path)
  local tol = tonumber(meta.suggested_abs_tolerance)
  local before = sd.precision()
  sd.precision("bf16")
  local ok, out = pcall(unet.forward, unet, g.sample, g.timesteps, g.encoder_hidden_states)
  sd.precision(before)
  assert(ok, out)
  local e, scale = maxdiff(out, g.out), g.out:abs():max():item()
  io.write(string.format("  unet out err %.3g (golden tol %.3g, max |out| %.3g, relative %.3g)\n", e, tol, scale, e / scale))
  test.within(e / scale, 2e-2, "unet out relative to its range")
end)

test.golden("pipeline precision argument: checked, set for the call only, restored on error",
  "tiny-sd1/model_index.json", function(path)
  local pipe = sd.load(path:match("^(.*)/model_index.json$"))
  local before = sd.precision()
  test.raises(function() pipe:txt2img{prompt = "x", width = 32, height = 32, steps = 1, precision = "f16"} end,
    'precision must be "f32" or "bf16"')
  test.raises(function()
    pipe:txt2img{prompt = "x", width = 32, height = 32, steps = 2, precision = "bf16",
      on_step = function() error("stop here", 0) end}
  end, "stop here")
  test.eq(sd.precision(), before, "restored after an error inside the call")
  local _, info = pipe:txt2img{prompt = "x", width = 32, height = 32, steps = 1, precision = "f32"}
  test.eq(info.precision, "f32", "info.precision")
  test.eq(sd.precision(), before, "restored")
end)
