-- Models: CLIP text encoder, U-Net and VAE against the component goldens of the reference folder
-- (tiny-sd1 / tiny-sd2 weights), plus layer-level checks that need no reference.
local test = require "test"
local sd = require "sd"
local T = sd.tensor
local nn = require "sd.nn"
local cjson = require "cjson"

local function maxerr(a, b)
  test.eq(table.concat(a.shape, ","), table.concat(b.shape, ","), "shape")
  local d = (a - b):abs()
  local m = d:max():item()
  d:release()
  return m
end

local function read_json(path)
  local s = assert(test.read_file(path), "cannot read " .. path)
  return cjson.decode(s)
end

-- The weights (from `file`) and config.json of a component folder of a reference model.
local function component(model, comp, file)
  local dir = test.reference() .. "/" .. model .. "/" .. comp
  return sd.safetensors.load(dir .. "/" .. file), read_json(dir .. "/config.json")
end

local function load_vae(model)
  local VAE = require "sd.models.vae"
  local weights, config = component(model, "vae", "diffusion_pytorch_model.safetensors")
  return VAE.new(config, weights)
end

-- A component golden: its tensors and the suggested_abs_tolerance it carries.
local function load_golden(path)
  local g, meta = sd.safetensors.load(path)
  local tol = assert(tonumber(meta.suggested_abs_tolerance), "golden has no suggested_abs_tolerance")
  return g, tol
end

-- ---------------------------------------------------------------------------------------------
-- layer-level checks (no reference files needed)

test.case("nn: timestep embedding matches the closed form", function()
  local e = nn.timestep_embedding({0, 10, 999}, 8, true, 0)
  test.eq(table.concat(e.shape, ","), "3,8", "shape")
  local t = e:totable()
  -- flip_sin_to_cos: [cos | sin]; t = 0 -> cos = 1, sin = 0
  for i = 1, 4 do test.near(t[1][i], 1, 0, "cos(0)"); test.near(t[1][4 + i], 0, 0, "sin(0)") end
  for i = 0, 3 do
    local f = math.exp(-math.log(10000) * i / 4)
    test.near(t[2][i + 1], math.cos(10 * f), 1e-6, "cos(10 f)")
    test.near(t[2][5 + i], math.sin(10 * f), 1e-6, "sin(10 f)")
  end
  local e2 = nn.timestep_embedding({10}, 8, false, 1):totable()
  local f1 = math.exp(-math.log(10000) * 1 / 3)
  test.near(e2[1][2], math.sin(10 * f1), 1e-6, "freq_shift=1, sin first")
end)

test.case("nn: weight store reports every missing and mis-shaped weight", function()
  local ws = nn.store({["a.weight"] = T.zeros{4, 3}, ["b.weight"] = T.zeros{2, 2}, extra = T.zeros{1}}, "m")
  nn.Linear.new(ws, "a", 3, 4, false)
  nn.Linear.new(ws, "b", 3, 2)
  nn.Linear.new(ws, "c", 1, 1)
  local err = test.raises(function() ws:finish() end, "missing weight")
  test.truthy(err:find("b.bias", 1, true) and err:find("c.weight", 1, true) and err:find("c.bias", 1, true),
    "all missing names listed: " .. err)
  test.truthy(err:find("b.weight: expected (2,3), got (2,2)", 1, true), "shape error listed: " .. err)
  local ws2 = nn.store({["a.weight"] = T.zeros{4, 3}, extra = T.zeros{1}}, "m")
  nn.Linear.new(ws2, "a", 3, 4, false)
  local unused = ws2:finish()
  test.eq(#unused, 1, "unused count")
  test.eq(unused[1], "extra", "unused name")
end)

test.case("nn: asymmetric pad and downsample shapes", function()
  local x = T.ones{1, 2, 4, 4}
  local p = nn.pad_right_bottom(x)
  test.eq(table.concat(p.shape, ","), "1,2,5,5", "padded shape")
  test.eq(p:sum():item(), 32, "padding adds zeros only")
  local t = p:totable()
  test.eq(t[1][1][5][5], 0, "bottom-right is zero")
  test.eq(t[1][1][1][1], 1, "top-left is data")
end)

test.case("nn: Attention equals a naive softmax(q k^T / sqrt(d)) v", function()
  local g = sd.rng.torch(3)
  local C, heads = 8, 2
  local w = {["to_q.weight"] = T.randn({C, C}, g), ["to_k.weight"] = T.randn({C, 6}, g),
    ["to_v.weight"] = T.randn({C, 6}, g), ["to_out.0.weight"] = T.randn({C, C}, g),
    ["to_out.0.bias"] = T.randn({C}, g)}
  local ws = nn.store(w, "attn")
  local attn = nn.Attention.new(ws, "", {query_dim = C, context_dim = 6, heads = heads})
  test.eq(#ws:finish(), 0, "all weights used")
  local x, ctx = T.randn({2, 5, C}, g), T.randn({2, 7, 6}, g)
  local got = attn:forward(x, ctx)
  local q, k, v = x:matmul(w["to_q.weight"]:transpose(1, 2)), ctx:matmul(w["to_k.weight"]:transpose(1, 2)),
    ctx:matmul(w["to_v.weight"]:transpose(1, 2))
  local outs = {}
  for h = 1, heads do
    local qh, kh, vh = q:narrow(3, (h - 1) * 4 + 1, 4), k:narrow(3, (h - 1) * 4 + 1, 4), v:narrow(3, (h - 1) * 4 + 1, 4)
    local s = qh:matmul(kh:transpose(2, 3)) / 2
    outs[h] = s:softmax(-1):matmul(vh)
  end
  local want = T.cat(outs, 3):matmul(w["to_out.0.weight"]:transpose(1, 2)) + w["to_out.0.bias"]
  test.within(maxerr(got, want), 1e-5, "attention vs naive")
end)

-- ---------------------------------------------------------------------------------------------
-- text encoder

for _, model in ipairs{"tiny-sd1", "tiny-sd2"} do
  test.golden(model .. ": text encoder vs golden", "goldens/" .. model .. "/text_encoder.safetensors", function(path)
    local CLIP = require "sd.models.clip"
    local weights, config = component(model, "text_encoder", "model.safetensors")
    local te = CLIP.new(config, weights)
    test.eq(#te.unused_weights, 0, "unused weights")
    local g, tol = load_golden(path)
    local out, hs = te:forward(g.input_ids, {hidden_states = true})
    test.within(maxerr(out, g.last_hidden_state), tol, "last_hidden_state")
    for k = 0, #te.layers do
      test.within(maxerr(hs[k], g["hidden_states." .. k]), tol, "hidden_states." .. k)
    end
    local skip = te:forward(g.input_ids, {clip_skip = 2})
    test.within(maxerr(skip, g.clip_skip1), tol, "clip_skip1 (clip_skip=2 in webui terms)")
    -- config.layer = "penultimate" (what the loader sets for OpenCLIP towers): clip_skip counts from there
    local c2 = {}
    for k, v in pairs(config) do c2[k] = v end
    c2.layer = "penultimate"
    local te2 = CLIP.new(c2, weights)
    test.within(maxerr(te2:forward(g.input_ids), g.clip_skip1), tol, "layer=penultimate")
    test.raises(function() te:forward(g.input_ids, {clip_skip = 4}) end, "clip_skip")
    -- plain forward equals the hidden-states forward
    test.within(maxerr(te:forward(g.input_ids), g.last_hidden_state), tol, "last_hidden_state (plain forward)")
  end)
end

-- ---------------------------------------------------------------------------------------------
-- U-Net

for _, model in ipairs{"tiny-sd1", "tiny-sd2"} do
  test.golden(model .. ": unet vs golden (out, intermediates, scalar and float t)",
    "goldens/" .. model .. "/unet.safetensors", function(path)
    local UNet = require "sd.models.unet"
    local weights, config = component(model, "unet", "diffusion_pytorch_model.safetensors")
    local unet = UNet.new(config, weights)
    test.eq(#unet.unused_weights, 0, "unused weights")
    local g, tol = load_golden(path)
    local rec = {}
    local out = unet:forward(g.sample, g.timesteps, g.encoder_hidden_states, {record = rec})
    local names = {}
    for k in pairs(g) do if k:match("^inter%.") then names[#names + 1] = k end end
    table.sort(names)
    local worst
    for _, k in ipairs(names) do
      local got = rec[k:sub(7)]
      test.truthy(got, "recorded " .. k)
      local e = maxerr(got, g[k])
      io.write(string.format("  %-48s max abs err %.3g  (tol %.3g)\n", k, e, tol))
      if e > tol and not worst then worst = k end
    end
    test.within(maxerr(out, g.out), tol, "out (timesteps [999, 10])")
    test.truthy(not worst, "first intermediate past tolerance: " .. tostring(worst))
    local out_s = unet:forward(g.sample, g.scalar_t:item(), g.encoder_hidden_states)
    test.within(maxerr(out_s, g.out_scalar_t), tol, "out_scalar_t (t = 500, a number)")
    local out_f = unet:forward(g.sample, g.float_t, g.encoder_hidden_states)
    test.within(maxerr(out_f, g.out_float_t), tol, "out_float_t (t = 637.25, a tensor)")
  end)
end

local function load_unet(model, convert)
  local UNet = require "sd.models.unet"
  local weights, config = component(model, "unet", "diffusion_pytorch_model.safetensors")
  if convert then
    local w2 = {}
    for k, v in pairs(weights) do w2[k] = convert(k, v) end
    weights = w2
  end
  return UNet.new(config, weights), weights
end

-- Building from a config alone (opts.init creates the weights) asks for exactly the names and
-- shapes that diffusers / transformers write.
for _, part in ipairs{{"unet", "unet/diffusion_pytorch_model.safetensors", "sd.models.unet"},
    {"vae", "vae/diffusion_pytorch_model.safetensors", "sd.models.vae"},
    {"text_encoder", "text_encoder/model.safetensors", "sd.models.clip"}} do
  for _, model in ipairs{"tiny-sd1", "tiny-sd2"} do
    local name, file, mod = part[1], part[2], part[3]
    test.golden(model .. ": " .. name .. " built from its config asks for the stored names and shapes",
      model .. "/" .. file, function(path)
      local real = sd.safetensors.load(path)
      local made = {}
      require(mod).new(read_json(test.reference(model .. "/" .. name .. "/config.json")), made,
        {init = function(_, shape) return T.zeros(shape) end})
      local diffs = {}
      for k, v in pairs(real) do
        if not made[k] then diffs[#diffs + 1] = "not built: " .. k
        elseif table.concat(made[k].shape, ",") ~= table.concat(v.shape, ",") then
          diffs[#diffs + 1] = "shape of " .. k
        end
      end
      for k in pairs(made) do if not real[k] then diffs[#diffs + 1] = "not stored: " .. k end end
      table.sort(diffs)
      test.eq(#diffs, 0, "differences (" .. table.concat(diffs, "; ", 1, math.min(#diffs, 5)) .. ")")
    end)
  end
end

-- Half-precision weights stay half in memory (linear/conv2d widen them tile by tile); the error
-- against the f32 golden is then dominated by the rounding of the weights themselves.
for _, dt in ipairs{"f16", "bf16"} do
  test.golden("tiny-sd1: unet with " .. dt .. " weights", "goldens/tiny-sd1/unet.safetensors", function(path)
    local unet = load_unet("tiny-sd1", function(_, v) return v:to(dt) end)
    test.eq(unet.conv_in.weight.dtype, dt, "big weights stay " .. dt)
    test.eq(unet.conv_in.bias.dtype, "f32", "biases widened to f32")
    local g = sd.safetensors.load(path)
    local out = unet:forward(g.sample, g.timesteps, g.encoder_hidden_states)
    -- weight rounding: f16 ~ 2^-11, bf16 ~ 2^-8 relative; |out| is about 5
    test.within(maxerr(out, g.out), dt == "f16" and 5e-3 or 5e-2, "out with " .. dt .. " weights")
  end)
end

test.golden("unet: missing weights are listed by name", "goldens/tiny-sd1/unet.safetensors", function()
  local err = test.raises(function()
    load_unet("tiny-sd1", function(k, v)
      if k == "mid_block.resnets.1.conv2.weight" or k == "up_blocks.2.attentions.0.proj_out.bias" then return nil end
      return v
    end)
  end, "missing weight")
  test.truthy(err:find("mid_block.resnets.1.conv2.weight", 1, true), "names the first: " .. err)
  test.truthy(err:find("up_blocks.2.attentions.0.proj_out.bias", 1, true), "names the second: " .. err)
  -- an extra weight is reported as unused, not an error
  local UNet = require "sd.models.unet"
  local w, config = component("tiny-sd1", "unet", "diffusion_pytorch_model.safetensors")
  w["extra.weight"] = T.zeros{1}
  local unet = UNet.new(config, w, {quiet = true})
  test.eq(#unet.unused_weights, 1, "unused count")
  test.eq(unet.unused_weights[1], "extra.weight", "unused name")
end)

-- A forward releases its intermediates itself: with the collector stopped, what is still
-- allocated afterwards is exactly the output.
test.golden("unet/vae/clip: forward frees its intermediates without the GC", "goldens/tiny-sd1/unet.safetensors",
  function(path)
  local unet = load_unet("tiny-sd1")
  local g = sd.safetensors.load(path)
  local vae = load_vae("tiny-sd1")
  local gv = sd.safetensors.load(test.reference("goldens/tiny-sd1/vae.safetensors"))
  local CLIP = require "sd.models.clip"
  local te = CLIP.new(read_json(test.reference("tiny-sd1/text_encoder/config.json")),
    sd.safetensors.load(test.reference("tiny-sd1/text_encoder/model.safetensors")))
  local gt = sd.safetensors.load(test.reference("goldens/tiny-sd1/text_encoder.safetensors"))
  local function left_after(what, f)
    collectgarbage("collect")
    collectgarbage("stop")
    local m0 = sd.memory().current
    local ok, out = pcall(f)
    local left = ok and sd.memory().current - m0 - out:numel() * 4
    collectgarbage("restart")
    if not ok then error(out, 0) end
    io.write(string.format("  %s: %d bytes left after forward besides its output\n", what, left))
    test.eq(left, 0, what .. " leaves only its output")
  end
  left_after("unet", function() return unet:forward(g.sample, g.timesteps, g.encoder_hidden_states) end)
  left_after("vae decode", function() return vae:decode(gv["decode.z"]) end)
  left_after("clip", function() return te:forward(gt.input_ids) end)
end)

-- ---------------------------------------------------------------------------------------------
-- VAE


for _, model in ipairs{"tiny-sd1", "tiny-sd2"} do
  test.golden(model .. ": vae decode/encode vs golden", "goldens/" .. model .. "/vae.safetensors", function(path)
    local vae = load_vae(model)
    test.eq(#vae.unused_weights, 0, "unused weights")
    test.near(vae.scaling_factor, 0.18215, 0, "scaling_factor")
    local g, tol = load_golden(path)
    local bad = {}
    local function check(got, name)
      local e = maxerr(got, g[name])
      io.write(string.format("  %-48s max abs err %.3g  (tol %.3g)\n", name, e, tol))
      if e > tol then bad[#bad + 1] = name end
    end
    -- decode_small with intermediates
    local function check_inter(rec, pattern)
      local names = {}
      for k in pairs(g) do if k:match(pattern) then names[#names + 1] = k end end
      table.sort(names)
      for _, k in ipairs(names) do
        local n = k:match(pattern)
        test.truthy(rec[n], "recorded " .. k)
        check(rec[n], k)
      end
    end
    local rec = {}
    local out = vae:decode(g["decode_small.z"], {record = rec})
    check_inter(rec, "^decode_small%.inter%.(.*)$")
    check(out, "decode_small.out")
    -- decode 16x16 -> 128x128
    check(vae:decode(g["decode.z"], {tile = false}), "decode.out")
    -- encode with intermediates, distribution and sample
    rec = {}
    local mean, logvar, dist = vae:encode(g["encode.x"], {record = rec})
    check_inter(rec, "^encode%.inter%.(.*)$")
    check(dist.moments, "encode.moments")
    check(mean, "encode.mean")
    check(logvar, "encode.logvar")
    check(dist.std, "encode.std")
    -- diffusers draws the noise from torch.Generator().manual_seed(2001)
    local noise = T.randn(mean.shape, sd.rng.torch(2001))
    check(noise, "encode.sample_noise")
    check(dist:sample(sd.rng.torch(2001)), "encode.sample")
    test.truthy(#bad == 0, "past tolerance: " .. table.concat(bad, ", "))
  end)
end

test.golden("tiny-sd1: vae tiled decode/encode vs untiled", "goldens/tiny-sd1/vae.safetensors", function(path)
  local vae = load_vae("tiny-sd1")
  local g = sd.safetensors.load(path)
  local z = g["decode.z"]                                  -- (1,4,16,16) -> (1,3,128,128)
  local full = vae:decode(z, {tile = false})
  -- 3x3 tiles of 8x8 latents overlapping by 4 (the tiny model's receptive field is the whole
  -- 16x16 latent, and GroupNorm statistics are per tile, so tiles cannot match exactly)
  local tiled = vae:decode(z, {tile = true, tile_size = 8, tile_overlap = 4})
  test.eq(table.concat(tiled.shape, ","), "1,3,128,128", "tiled shape")
  local e = maxerr(tiled, full)
  local mean_e = (tiled - full):abs():mean():item()
  io.write(string.format("  tiled decode (8x8 latent tiles, overlap 4) vs untiled: max %.3g, mean %.3g; |out| max %.3g\n",
    e, mean_e, full:abs():max():item()))
  test.truthy(e == e and mean_e < 0.5, "tiled decode is close to untiled")
  -- seams: the largest step between neighbouring pixels is no larger than in the untiled image
  local function max_step(img)
    local W = img.shape[4]
    local a, b = img:narrow(4, 2, W - 1), img:narrow(4, 1, W - 1)
    local dx = (a - b):abs():max():item()
    local H = img.shape[3]
    a, b = img:narrow(3, 2, H - 1), img:narrow(3, 1, H - 1)
    return math.max(dx, (a - b):abs():max():item())
  end
  local st, sf = max_step(tiled), max_step(full)
  io.write(string.format("  largest neighbour step: tiled %.3g, untiled %.3g\n", st, sf))
  test.truthy(st <= 1.25 * sf, "no seam steps beyond the image's own")
  -- 2x2 tiles of 12x12 overlapping by 8
  local tiled2 = vae:decode(z, {tile = true, tile_size = 12, tile_overlap = 8})
  io.write(string.format("  tiled decode (12x12 latent tiles, overlap 8) vs untiled: max %.3g, mean %.3g\n",
    maxerr(tiled2, full), (tiled2 - full):abs():mean():item()))
  -- one tile covering everything is exactly the untiled decode
  local one = vae:decode(z, {tile = true, tile_size = 16})
  test.within(maxerr(one, full), 0, "single-tile decode == untiled")
  -- tiled encode of the decoded 128x128 image
  local img = full:clamp(-1, 1)
  local m_full = vae:encode(img, {tile = false})
  local m_tiled = vae:encode(img, {tile = true, tile_size = 8, tile_overlap = 4})
  local ee = maxerr(m_tiled, m_full)
  local mean_ee = (m_tiled - m_full):abs():mean():item()
  io.write(string.format("  tiled encode (64x64 px tiles, overlap 32) vs untiled: max %.3g, mean %.3g; |mean| max %.3g\n",
    ee, mean_ee, m_full:abs():max():item()))
  test.truthy(ee == ee, "tiled encode is finite")
end)

return test
