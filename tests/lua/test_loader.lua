-- Checkpoint loading: recognition, derived configuration, key maps (lua/sd/loader, lua/sd/arch.lua).
package.path = "tests/lua/?.lua;lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "lib/?.so;" .. package.cpath
local test = require "test"
local T = require("sd.core").tensor
local loader = require "sd.loader"
local detect = require "sd.loader.detect"
local arch = require "sd.arch"
local cjson = require "cjson"

local tmp = test.tmpname

local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b end
  if #a ~= #b then return false end
  for i = 1, #a do if not same(a[i], b[i]) then return false end end
  return true
end

local function show(v)
  if type(v) == "table" then
    local t = {}
    for i, x in ipairs(v) do t[i] = show(x) end
    return "{" .. table.concat(t, ", ") .. "}"
  end
  return tostring(v)
end

local function eq_cfg(got, want, keys, what)
  for _, k in ipairs(keys) do
    if not same(got[k], want[k]) then
      error(("%s.%s: expected %s, got %s"):format(what, k, show(want[k]), show(got[k])), 2)
    end
  end
end

local UNET_KEYS = {"in_channels", "out_channels", "block_out_channels", "layers_per_block", "down_block_types",
  "up_block_types", "cross_attention_dim", "attention_head_dim", "use_linear_projection", "upcast_attention",
  "sample_size", "norm_num_groups", "norm_eps", "flip_sin_to_cos", "freq_shift", "transformer_layers_per_block",
  "mid_block_type"}
local VAE_KEYS = {"in_channels", "out_channels", "block_out_channels", "layers_per_block", "latent_channels",
  "down_block_types", "up_block_types", "norm_num_groups", "scaling_factor", "sample_size"}
local CLIP_KEYS = {"hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "hidden_act",
  "max_position_embeddings", "vocab_size", "layer_norm_eps"}

-- header of a key list (reference/keys/*.json) as the loader sees headers
local function keys_header(path)
  local j = loader.read_json(path)
  local h = {}
  for k, v in pairs(j) do h[k] = {shape = v.shape, dtype = v.dtype:lower()} end
  return h
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

local function copy_header(h, drop, rename)
  local r = {}
  for k, v in pairs(h) do
    if not (drop and drop(k)) then r[rename and rename(k) or k] = {shape = arch.copy(v.shape), dtype = v.dtype} end
  end
  return r
end

----------------------------------------------------------------------------------------------------
-- tiny models: single file vs diffusers folder

for _, m in ipairs{"tiny-sd1", "tiny-sd2"} do
  test.golden(m .. ": single file and diffusers folder give the same family, config and weights", m .. ".safetensors",
    function(single)
      local root = single:gsub("%.safetensors$", "")
      local a = loader.open(single)
      local b = loader.open(root)
      local family = m == "tiny-sd1" and "sd1" or "sd2"
      test.eq(a.family, family, "single family"); test.eq(b.family, family, "folder family")
      test.eq(a.layout, "single", "layout"); test.eq(b.layout, "diffusers", "layout")
      test.eq(a.format, "safetensors", "format")
      test.eq(a.inpaint, false, "inpaint")
      test.eq(a.pad, m == "tiny-sd1" and "eos" or "zero", "single pad"); test.eq(b.pad, a.pad, "folder pad")
      local fu = loader.read_json(root .. "/unet/config.json")
      local fv = loader.read_json(root .. "/vae/config.json")
      local fc = loader.read_json(root .. "/text_encoder/config.json")
      local fs = loader.read_json(root .. "/scheduler/scheduler_config.json")
      eq_cfg(a.unet.config, fu, UNET_KEYS, "single unet")
      eq_cfg(b.unet.config, fu, UNET_KEYS, "folder unet")
      eq_cfg(a.vae.config, fv, VAE_KEYS, "single vae")
      eq_cfg(a.text_encoder.config, fc, CLIP_KEYS, "single text_encoder")
      eq_cfg(a.scheduler_config, fs, {"prediction_type", "beta_start", "beta_end", "beta_schedule", "num_train_timesteps",
        "steps_offset", "set_alpha_to_one", "skip_prk_steps", "clip_sample"}, "single scheduler")
      test.eq(a.text_encoder.config.layer, "last", "text layer (converted from a folder: all layers used)")
      test.eq(a.text_encoder.config.clip_skip_default, 0, "clip_skip_default")
      for _, comp in ipairs{"unet", "vae", "text_encoder"} do
        test.eq(count(a[comp].weights), count(b[comp].weights), comp .. " weight count")
        for name, t in pairs(b[comp].weights) do
          local u = a[comp].weights[name]
          test.truthy(u ~= nil, comp .. " " .. name .. " present in the single file")
          test.truthy(same(u.shape, t.shape), comp .. " " .. name .. " shape")
          test.truthy(u:equal(t), comp .. " " .. name .. " equal")
        end
      end
      test.eq(count(b.unet.weights), 494, "unet tensors"); test.eq(count(b.vae.weights), 180, "vae tensors")
      test.eq(count(b.text_encoder.weights), 52, "text tensors")
      -- the views: VAE attention as linear, OpenCLIP q/k/v from the fused in_proj
      test.eq(#a.vae.weights["decoder.mid_block.attentions.0.to_q.weight"].shape, 2, "VAE to_q is linear")
      test.truthy(b.tokenizer_files and b.tokenizer_files.vocab:match("tokenizer/vocab.json$"), "folder vocab")
      test.truthy(b.tokenizer_files.merges:match("tokenizer/merges.txt$"), "folder merges")
    end)
end

test.golden("tiny-sd2: q/k/v are narrow views of in_proj", "tiny-sd2.safetensors", function(p)
  local raw = loader.safetensors_load(p)
  local m = loader.open(p)
  local w = raw["cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight"]
  local b = raw["cond_stage_model.model.transformer.resblocks.1.attn.in_proj_bias"]
  local H = 32
  for i, n in ipairs{"q", "k", "v"} do
    test.truthy(m.text_encoder.weights["text_model.encoder.layers.1.self_attn." .. n .. "_proj.weight"]
      :equal(w:narrow(1, (i - 1) * H + 1, H)), n .. " weight")
    test.truthy(m.text_encoder.weights["text_model.encoder.layers.1.self_attn." .. n .. "_proj.bias"]
      :equal(b:narrow(1, (i - 1) * H + 1, H)), n .. " bias")
  end
end)

test.golden("opts.dtype: f16 keeps matrices in f16, widens vectors; f32 widens halves", "tiny-sd1.safetensors", function(p)
  local m = loader.open(p, {dtype = "f16"})
  test.eq(m.unet.weights["conv_in.weight"].dtype, "f16", "conv weight")
  test.eq(m.unet.weights["conv_in.bias"].dtype, "f32", "bias")
  test.eq(m.text_encoder.weights["text_model.embeddings.token_embedding.weight"].dtype, "f16", "embedding")
  test.eq(m.vae.weights["decoder.mid_block.attentions.0.to_q.weight"].dtype, "f16", "vae attention")
  local f32 = loader.open(p)
  test.eq(f32.unet.weights["conv_in.weight"].dtype, "f32", "default keeps the file's dtype")
  local bf = loader.open(p, {dtype = "bf16"})
  test.eq(bf.unet.weights["conv_out.weight"].dtype, "bf16", "bf16 matrices")
  local h = T.from({1, 2, 3, 4}, {2, 2}, "f16")
  test.eq(loader.convert(h, "f32").dtype, "f32", "f32 widens f16")
  test.eq(loader.convert(T.from({1, 2}, {2}, "bf16"), "f16").dtype, "f32", "vectors become f32")
  test.raises(function() loader.open(p, {dtype = "f64"}) end, "opts.dtype must be")
end)

----------------------------------------------------------------------------------------------------
-- the real releases, from their name/shape lists

test.golden("SD 1.5 key list: recognised, config derived, every tensor consumed", "keys/sd15.json", function(p)
  local h = keys_header(p)
  test.eq(count(h), 1131, "tensors in the list")
  local plan = loader.plan(h, {}, "sd15")
  local i = plan.info
  test.eq(i.family, "sd1", "family"); test.eq(i.preset, "sd15", "preset"); test.eq(i.inpaint, false, "inpaint")
  test.truthy(same(i.unet.block_out_channels, {320, 640, 1280, 1280}), "channels")
  test.eq(i.unet.attention_head_dim, 8, "8 heads")
  test.eq(i.unet.cross_attention_dim, 768, "context")
  test.eq(i.unet.use_linear_projection, false, "conv projections")
  test.eq(i.unet.upcast_attention, false, "upcast")
  test.eq(i.unet.layers_per_block, 2, "layers per block")
  test.truthy(same(i.unet.down_block_types, arch.presets.sd15.unet.down_block_types), "down blocks")
  test.truthy(same(i.vae.block_out_channels, {128, 256, 512, 512}), "vae channels")
  test.eq(i.text_encoder.num_hidden_layers, 12, "text layers"); test.eq(i.text_encoder.num_attention_heads, 12, "text heads")
  test.eq(i.text_encoder.hidden_act, "quick_gelu", "act"); test.eq(i.text_encoder.layer, "last", "layer")
  test.eq(i.scheduler_config.prediction_type, "epsilon", "prediction")
  test.eq(i.pad, "eos", "pad")
  -- every tensor is the source of some weight, except the int64 position_ids buffer
  local used = {}
  local targets = 0
  for _, comp in ipairs{"unet", "vae", "text_encoder"} do
    for _, e in pairs(plan.maps[comp]) do used[e.src] = true; targets = targets + 1 end
  end
  test.eq(count(used), 1130, "sources used")
  test.eq(targets, 1130, "weights")
  for k in pairs(h) do
    test.truthy(used[k] or k == "cond_stage_model.transformer.text_model.embeddings.position_ids", "consumed " .. k)
  end
  -- the parameter list of the preset is exactly what was mapped
  local P = arch.params("sd15")
  test.eq(#P.unet + #P.vae + #P.text_encoder, 1130, "arch parameter count")
  test.eq(arch.count(P.unet), 859520964, "SD 1.5 U-Net parameters")
end)

test.golden("SD 2.1 key list: OpenCLIP text tower, 64-dim heads, linear projections", "keys/sd21.json", function(p)
  local h = keys_header(p)
  test.eq(count(h), 1228, "tensors in the list")
  local plan = loader.plan(h, {}, "sd21")
  local i = plan.info
  test.eq(i.family, "sd2", "family"); test.eq(i.preset, "sd21", "preset")
  test.truthy(same(i.unet.block_out_channels, {320, 640, 1280, 1280}), "channels")
  test.truthy(same(i.unet.attention_head_dim, {5, 10, 20, 20}), "64-dim heads")
  test.eq(i.unet.cross_attention_dim, 1024, "context")
  test.eq(i.unet.use_linear_projection, true, "linear projections")
  test.eq(i.unet.upcast_attention, true, "upcast")
  test.eq(i.unet.sample_size, 96, "768 px default")
  test.eq(i.text_encoder.hidden_size, 1024, "width"); test.eq(i.text_encoder.num_attention_heads, 16, "heads")
  test.eq(i.text_encoder.num_hidden_layers, 24, "all 24 layers present")
  test.eq(i.text_encoder.layer, "penultimate", "penultimate layer"); test.eq(i.text_encoder.clip_skip_default, 1, "clip skip")
  test.eq(i.text_encoder.hidden_act, "gelu", "act")
  test.eq(i.scheduler_config.prediction_type, "v_prediction", "v-prediction default")
  test.eq(i.pad, "zero", "pad")
  local used, targets = {}, 0
  for _, comp in ipairs{"unet", "vae", "text_encoder"} do
    for _, e in pairs(plan.maps[comp]) do used[e.src] = true; targets = targets + 1 end
  end
  test.eq(count(used), 1226, "sources used (all but text_projection and logit_scale)")
  test.eq(targets, 1226 + 2 * 2 * 24, "weights (q/k/v split three ways)")
  local q = plan.maps.text_encoder["text_model.encoder.layers.5.self_attn.k_proj.weight"]
  test.eq(q.src, "cond_stage_model.model.transformer.resblocks.5.attn.in_proj_weight", "k source")
  test.truthy(same(q.narrow, {1, 1024, 1024}), "k narrow")
  local eps = loader.plan(h, {prediction_type = "epsilon"}, "sd21 base").info
  test.eq(eps.scheduler_config.prediction_type, "epsilon", "override")
  test.eq(eps.unet.sample_size, 64, "512 px for epsilon")
  local yaml = loader.plan(h, {yaml = "model:\n  params:\n    parameterization: \"v\"\n"}, "yaml").info
  test.eq(yaml.scheduler_config.prediction_type, "v_prediction", "yaml v")
  local yaml_eps = loader.plan(h, {yaml = "model:\n  params:\n    linear_start: 0.00085\n"}, "yaml").info
  test.eq(yaml_eps.scheduler_config.prediction_type, "epsilon", "yaml without parameterization")
  test.eq(loader.plan(h, {clip_layer = "last"}, "x").info.text_encoder.layer, "last", "clip_layer override")
end)

test.golden("inpainting U-Net (9 input channels) and EMA / old text layouts", "keys/sd15.json", function(p)
  local h = keys_header(p)
  h["model.diffusion_model.input_blocks.0.0.weight"].shape = {320, 9, 3, 3}
  local i = loader.plan(h, {}, "inpaint").info
  test.eq(i.inpaint, true, "inpaint"); test.eq(i.unet.in_channels, 9, "in_channels")
  h["model.diffusion_model.input_blocks.0.0.weight"].shape = {320, 8, 3, 3}
  test.raises(function() loader.plan(h, {}, "ip2p") end, "InstructPix2Pix")
  -- EMA copies: ignored by default, used with opts.ema
  h = keys_header(p)
  local ema = copy_header(h)
  for k, v in pairs(h) do
    if k:find("^model%.diffusion_model%.") then ema["model_ema." .. k:sub(7):gsub("%.", "")] = v end
  end
  test.eq(loader.plan(ema, {}, "ema").info.ema, nil, "not used by default")
  local plan = loader.plan(ema, {ema = true}, "ema")
  test.eq(plan.info.ema, true, "ema used")
  test.eq(plan.maps.unet["conv_in.weight"].src, "model_ema.diffusion_modelinput_blocks00weight", "ema source")
  -- transformers layout without the text_model level (old SD 1.x files)
  local old = copy_header(h, nil, function(k) return (k:gsub("^cond_stage_model%.transformer%.text_model%.", "cond_stage_model.transformer.")) end)
  local po = loader.plan(old, {}, "old")
  test.eq(po.maps.text_encoder["text_model.final_layer_norm.weight"].src, "cond_stage_model.transformer.final_layer_norm.weight", "old layout")
end)

test.golden("unknown sizes: structure derived, heads guessed, opts override", "tiny-sd1.safetensors", function(p)
  local h = loader.safetensors_header(p)
  -- rename nothing, but widen the text encoder's MLP so that no preset matches
  local h2 = copy_header(h)
  for k, v in pairs(h2) do
    if k:find("mlp%.fc1%.weight$") then v.shape = {96, 32} elseif k:find("mlp%.fc1%.bias$") then v.shape = {96}
    elseif k:find("mlp%.fc2%.weight$") then v.shape = {32, 96} end
  end
  local i = loader.plan(h2, {}, "odd").info
  test.eq(i.preset, nil, "no preset")
  test.eq(i.unet.attention_head_dim, 8, "SD1 default 8 heads")
  test.truthy(#i.notes > 0, "a note says heads were guessed")
  test.eq(i.text_encoder.intermediate_size, 96, "derived MLP width")
  test.truthy(same(i.unet.block_out_channels, {32, 32, 64}), "derived channels")
  test.truthy(same(i.unet.down_block_types, {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}), "derived blocks")
  local j = loader.plan(h2, {attention_head_dim = 2, text_encoder = {num_attention_heads = 4}}, "odd").info
  test.eq(j.unet.attention_head_dim, 2, "override heads")
  test.eq(j.text_encoder.num_attention_heads, 4, "override text heads")
end)

----------------------------------------------------------------------------------------------------
-- refusals

local function sd15(p) return keys_header(p) end

test.golden("refused: SDXL, SD3, Flux, LoRA, VAE-only, text-encoder-only, U-Net-only", "keys/sd15.json", function(p)
  local h = sd15(p)
  local xl = copy_header(h)
  xl["conditioner.embedders.1.model.ln_final.weight"] = {shape = {1280}, dtype = "f32"}
  test.raises(function() loader.plan(xl) end, "Stable Diffusion XL")
  local xl2 = copy_header(h)
  xl2["model.diffusion_model.label_emb.0.0.weight"] = {shape = {1280, 2816}, dtype = "f32"}
  test.raises(function() loader.plan(xl2) end, "label_emb")
  test.raises(function() loader.plan({["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"] = {shape = {3, 3}}}) end,
    "Stable Diffusion 3")
  test.raises(function() loader.plan({["double_blocks.0.img_attn.qkv.weight"] = {shape = {3, 3}}}) end, "Flux")
  local lora = {
    ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"] = {shape = {4, 320}},
    ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"] = {shape = {320, 4}},
    ["lora_unet_down_blocks_0_attentions_0_proj_in.alpha"] = {shape = {}},
  }
  test.raises(function() loader.plan(lora) end, "LoRA")
  test.raises(function() loader.plan({["unet.down_blocks.0.attentions.0.proj_in.lora_A.weight"] = {shape = {4, 320}}}) end, "LoRA")
  local vae = copy_header(h, function(k) return not k:find("^first_stage_model%.") end)
  test.raises(function() loader.plan(vae) end, "VAE-only")
  local vae2 = copy_header(vae, nil, function(k) return (k:gsub("^first_stage_model%.", "")) end)
  test.raises(function() loader.plan(vae2) end, "VAE-only")
  local te = copy_header(h, function(k) return not k:find("^cond_stage_model%.") end)
  test.raises(function() loader.plan(te) end, "text-encoder-only")
  local te2 = copy_header(te, nil, function(k) return (k:gsub("^cond_stage_model%.transformer%.", "")) end)
  test.raises(function() loader.plan(te2) end, "text-encoder-only")
  local un = copy_header(h, function(k) return not k:find("^model%.diffusion_model%.") end)
  test.raises(function() loader.plan(un) end, "U-Net-only")
  test.raises(function() loader.plan({["foo.weight"] = {shape = {3}}, ["bar.bias"] = {shape = {3}}}) end,
    "not a Stable Diffusion checkpoint")
  test.raises(function() loader.plan({}) end, "no tensors")
end)

test.golden("refused: missing, unexpected and mis-shaped tensors, listed with counts", "keys/sd15.json", function(p)
  local h = sd15(p)
  local miss = copy_header(h, function(k) return k:find("output_blocks%.4%.1%.transformer_blocks%.0%.attn1%.to_") end)
  local err = test.raises(function() loader.plan(miss, {}, "m.safetensors") end, "5 missing tensors")
  test.truthy(err:find("model.diffusion_model.output_blocks.4.1.transformer_blocks.0.attn1.to_k.weight", 1, true), "names listed")
  test.truthy(err:find("m.safetensors", 1, true), "path named")
  local extra = copy_header(h)
  for i = 1, 7 do extra["model.diffusion_model.extra_" .. i .. ".weight"] = {shape = {1}, dtype = "f32"} end
  err = test.raises(function() loader.plan(extra) end, "7 unexpected tensors")
  test.truthy(err:find("(2 more)", 1, true), "first few listed, the rest counted")
  local bad = copy_header(h)
  bad["first_stage_model.decoder.mid.attn_1.q.weight"].shape = {512, 256, 1, 1}
  test.raises(function() loader.plan(bad) end, "unexpected shapes")
  local mixed = copy_header(h)
  mixed["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape = {320, 1024}
  mixed["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight"].shape = {320, 1024}
  test.raises(function() loader.plan(mixed) end, "")
end)

test.case("refused: non-existent path, garbage, empty file, bare folder, SDXL folder", function()
  test.raises(function() loader.open("/nonexistent/model.safetensors") end, "no such file or folder")
  local g = tmp(".safetensors")
  local f = assert(io.open(g, "wb"))
  local bytes = {}
  for i = 1, 4096 do bytes[i] = string.char((i * 7919) % 251) end
  f:write(table.concat(bytes)); f:close()
  test.raises(function() loader.open(g) end, "is not a checkpoint")
  f = assert(io.open(g, "wb")); f:close()
  test.raises(function() loader.open(g) end, "is empty")
  f = assert(io.open(g, "wb")); f:write("\x80\x02}q\0."); f:close()
  test.raises(function() loader.open(g) end, "legacy")
  os.remove(g)
  local d = tmp("-dir")
  os.execute("mkdir -p '" .. d .. "'")
  test.raises(function() loader.open(d) end, "without model_index.json")
  f = assert(io.open(d .. "/model_index.json", "wb"))
  f:write(cjson.encode{_class_name = "StableDiffusionXLPipeline"}); f:close()
  test.raises(function() loader.open(d) end, "Stable Diffusion XL")
  f = assert(io.open(d .. "/model_index.json", "wb"))
  f:write(cjson.encode{_class_name = "FluxPipeline"}); f:close()
  test.raises(function() loader.open(d) end, "FluxPipeline")
  os.execute("rm -rf '" .. d .. "'")
end)

test.golden("refused: diffusers folder with a missing tensor", "tiny-sd1/model_index.json", function(index)
  local src = index:gsub("/model_index.json$", "")
  local d = tmp("-folder")
  os.execute(("cp -r '%s' '%s'"):format(src, d))
  local w = loader.safetensors_load(d .. "/vae/diffusion_pytorch_model.safetensors")
  w["decoder.conv_out.bias"] = nil
  local save = require("sd.core").safetensors and require("sd.core").safetensors.save
  if not save then
    os.execute("rm -rf '" .. d .. "'")
    return -- needs sd.safetensors.save
  end
  save(d .. "/vae/diffusion_pytorch_model.safetensors.tmp", w)
  os.rename(d .. "/vae/diffusion_pytorch_model.safetensors.tmp", d .. "/vae/diffusion_pytorch_model.safetensors")
  test.raises(function() loader.open(d) end, "1 missing tensors: decoder.conv_out.bias")
  os.execute("rm -rf '" .. d .. "'")
end)

----------------------------------------------------------------------------------------------------
-- real-size files: a sparse f16 safetensors with the exact names and shapes (zeros, no disk used)

local function write_sparse_safetensors(path, header, dtype)
  local names = {}
  for k in pairs(header) do names[#names + 1] = k end
  table.sort(names)
  local es = {f16 = 2, i64 = 8}
  local parts, off = {}, 0
  for _, k in ipairs(names) do
    local e = header[k]
    local dt = e.dtype == "i64" and "i64" or dtype
    local n = 1
    for _, d in ipairs(e.shape) do n = n * d end
    parts[#parts + 1] = ('%s:{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}')
      :format(cjson.encode(k), dt:upper(), table.concat(e.shape, ","), off, off + n * es[dt])
    off = off + n * es[dt]
  end
  local js = "{" .. table.concat(parts, ",") .. "}"
  js = js .. string.rep(" ", (8 - #js % 8) % 8)
  local f = assert(io.open(path, "wb"))
  f:write(string.pack("<I8", #js), js)
  if off > 0 then f:seek("set", 8 + #js + off - 1); f:write("\0") end
  f:close()
  return 8 + #js + off
end

for _, rel in ipairs{"sd15", "sd21"} do
  test.golden(rel .. ": a sparse full-size f16 file opens end to end", "keys/" .. rel .. ".json", function(p)
    local h = keys_header(p)
    local path = tmp("-" .. rel .. ".safetensors")
    local size = write_sparse_safetensors(path, h, "f16")
    test.truthy(size > 1.5e9, "full size")
    local m = loader.open(path, {vocab = "/nonexistent"})
    test.eq(m.family, rel == "sd15" and "sd1" or "sd2", "family")
    test.eq(m.unet.weights["conv_in.weight"].dtype, "f16", "stays f16")
    test.truthy(same(m.unet.weights["down_blocks.1.attentions.0.proj_in.weight"].shape,
      rel == "sd15" and {640, 640, 1, 1} or {640, 640}), "proj_in shape")
    test.truthy(same(m.vae.weights["encoder.mid_block.attentions.0.to_v.weight"].shape, {512, 512}), "VAE attention linear")
    local H = rel == "sd15" and 768 or 1024
    test.truthy(same(m.text_encoder.weights["text_model.encoder.layers.3.self_attn.v_proj.weight"].shape, {H, H}), "v_proj")
    test.eq(count(m.unet.weights), #arch.unet_params(m.unet.config), "unet weights")
    test.eq(m.text_encoder.weights["text_model.final_layer_norm.bias"]:to("f32"):sum():item(), 0, "zeros read through")
    local widened = loader.convert(m.text_encoder.weights["text_model.final_layer_norm.bias"], "f16")
    test.eq(widened.dtype, "f32", "opts.dtype f16 widens vectors")
    os.remove(path)
  end)
end

----------------------------------------------------------------------------------------------------
-- vocabulary search

test.golden("vocabulary: opts.vocab folder or file, next to the checkpoint, or a helpful message", "tokenizer/vocab.json",
  function(v)
    local dir = v:gsub("/vocab.json$", "")
    local a = loader.find_vocab("/x/model.safetensors", {vocab = dir})
    test.truthy(a and a.vocab == dir .. "/vocab.json" and a.merges == dir .. "/merges.txt", "folder")
    local b = loader.find_vocab("/x/model.safetensors", {vocab = dir .. "/bpe_simple_vocab_16e6.txt.gz"})
    test.truthy(b and b.bpe, "bpe file")
    local c = loader.find_vocab("/x/model.safetensors", {vocab = dir .. "/merges.txt"})
    test.truthy(c and c.vocab, "a file inside the folder")
    local e = tmp("-empty")
    os.execute("mkdir -p '" .. e .. "'")
    local user = loader.user_data_dir()
    local user_has = user and (loader.file_exists(user .. "/vocab.json") or loader.file_exists(user .. "/bpe_simple_vocab_16e6.txt.gz"))
    if not os.getenv("SDLUA_VOCAB") and not user_has then
      local none, msg = loader.find_vocab(e .. "/model.safetensors", {})
      test.eq(none, nil, "nothing found")
      test.truthy(msg:find("vocab.json and merges.txt", 1, true) and msg:find("bpe_simple_vocab_16e6.txt.gz", 1, true),
        "message names the files")
    end
    os.execute("rm -rf '" .. e .. "'")
  end)

----------------------------------------------------------------------------------------------------
-- arch: the parameter lists match the tiny folders exactly

for _, m in ipairs{"tiny_sd1", "tiny_sd2"} do
  local rel = m:gsub("_", "-")
  test.golden("arch." .. m .. ": parameter names and shapes match the reference folder", rel .. "/unet/config.json", function(cfgp)
    local root = cfgp:gsub("/unet/config.json$", "")
    local P = arch.params(m)
    for comp, file in pairs{unet = "unet/diffusion_pytorch_model.safetensors", vae = "vae/diffusion_pytorch_model.safetensors",
        text_encoder = "text_encoder/model.safetensors"} do
      local h = loader.safetensors_header(root .. "/" .. file)
      test.eq(#P[comp], count(h), comp .. " count")
      for _, q in ipairs(P[comp]) do
        test.truthy(h[q.name] and same(h[q.name].shape, q.shape), comp .. " " .. q.name)
      end
    end
    test.eq(arch.count(P.unet), 1388548, "unet parameters")
    test.eq(arch.count(P.vae), 807111, "vae parameters")
    test.eq(arch.count(P.text_encoder), 1609216, "text parameters")
  end)
end

test.golden("single_file_layout: the exact names and shapes of the releases", "keys/sd21.json", function(p21)
  for _, r in ipairs{{"sd15", p21:gsub("sd21", "sd15"), {["cond_stage_model.transformer.text_model.embeddings.position_ids"] = true}},
      {"sd21", p21, {["cond_stage_model.model.text_projection"] = true, ["cond_stage_model.model.logit_scale"] = true}}} do
    local h = keys_header(r[2])
    local preset = arch.copy(arch.presets[r[1]])
    if r[1] == "sd21" then preset.text_encoder.num_hidden_layers = 24 end -- the release carries all 24 layers
    local layout = loader.single_file_layout(preset)
    local n = 0
    for _, e in ipairs(layout) do
      n = n + 1
      test.truthy(h[e.name] and same(h[e.name].shape, e.shape), r[1] .. " " .. e.name)
    end
    test.eq(n + count(r[3]), count(h), r[1] .. " tensor count")
  end
  local tiny = loader.single_file_layout("tiny_sd2")
  for _, e in ipairs(tiny) do
    if e.name:find("in_proj_weight") then test.eq(#e.sources, 3, "q, k, v") end
  end
end)

io.write(("# %d passed, %d failed, %d skipped\n"):format(test.passed, test.failed, test.skipped))
if test.failed > 0 then os.exit(1) end
