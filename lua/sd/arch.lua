-- sd.arch: the one definition of each supported architecture.
--
-- A preset holds the diffusers-style configuration of every component (the keys of unet/config.json,
-- vae/config.json, text_encoder/config.json, scheduler/scheduler_config.json). The parameter lists
-- (diffusers names and shapes) are generated from a configuration by the functions below, so the
-- same definition serves the checkpoint loader (which tensors must be present, with which shapes),
-- the key maps (lua/sd/loader/keymap_*.lua walk the same structure) and `sdlua make-checkpoint`.
--
--   arch.presets.sd15 / sd21 / tiny_sd1 / tiny_sd2          -- (arch.tiny = tiny_sd1)
--   arch.unet_config(t)  arch.vae_config(t)  arch.clip_config(t)   -- fill in the diffusers defaults
--   arch.unet_params(cfg) / vae_params(cfg) / clip_params(cfg)
--       -> list of {name = "down_blocks.0.resnets.0.norm1.weight", shape = {...},
--                   module = "down_blocks.0.resnets.0", kind = "resnet", leaf = "norm1.weight"}
--   arch.params(preset) -> {unet = list, vae = list, text_encoder = list}
local arch = {}

local function copy(t)
  if type(t) ~= "table" then return t end
  local r = {}
  for k, v in pairs(t) do r[k] = copy(v) end
  return r
end
arch.copy = copy

local function merge(base, over)
  local r = copy(base)
  for k, v in pairs(over or {}) do r[k] = copy(v) end
  return r
end

----------------------------------------------------------------------------------------------------
-- Configuration defaults (diffusers 0.27.2 / transformers CLIPTextConfig)

local UNET_DEFAULTS = {
  _class_name = "UNet2DConditionModel",
  act_fn = "silu",
  addition_embed_type = nil,
  addition_embed_type_num_heads = 64,
  attention_head_dim = 8,
  attention_type = "default",
  block_out_channels = {320, 640, 1280, 1280},
  center_input_sample = false,
  class_embeddings_concat = false,
  conv_in_kernel = 3,
  conv_out_kernel = 3,
  cross_attention_dim = 768,
  down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"},
  downsample_padding = 1,
  dropout = 0.0,
  dual_cross_attention = false,
  flip_sin_to_cos = true,
  freq_shift = 0,
  in_channels = 4,
  layers_per_block = 2,
  mid_block_scale_factor = 1,
  mid_block_type = "UNetMidBlock2DCrossAttn",
  norm_eps = 1e-5,
  norm_num_groups = 32,
  only_cross_attention = false,
  out_channels = 4,
  resnet_out_scale_factor = 1.0,
  resnet_skip_time_act = false,
  resnet_time_scale_shift = "default",
  sample_size = 64,
  time_embedding_type = "positional",
  transformer_layers_per_block = 1,
  up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"},
  upcast_attention = false,
  use_linear_projection = false,
}

local VAE_DEFAULTS = {
  _class_name = "AutoencoderKL",
  act_fn = "silu",
  block_out_channels = {128, 256, 512, 512},
  down_block_types = {"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"},
  force_upcast = true,
  in_channels = 3,
  latent_channels = 4,
  layers_per_block = 2,
  norm_num_groups = 32,
  out_channels = 3,
  sample_size = 512,
  scaling_factor = 0.18215,
  up_block_types = {"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"},
}

local CLIP_DEFAULTS = {
  architectures = {"CLIPTextModel"},
  model_type = "clip_text_model",
  attention_dropout = 0.0,
  bos_token_id = 0,
  dropout = 0.0,
  eos_token_id = 2,
  hidden_act = "quick_gelu",
  hidden_size = 768,
  initializer_factor = 1.0,
  initializer_range = 0.02,
  intermediate_size = 3072,
  layer_norm_eps = 1e-5,
  max_position_embeddings = 77,
  num_attention_heads = 12,
  num_hidden_layers = 12,
  pad_token_id = 1,
  projection_dim = 768,
  vocab_size = 49408,
  -- sdlua additions: which hidden state the pipeline takes (before final_layer_norm).
  -- "last" = last_hidden_state (SD 1.x, diffusers folders); "penultimate" = output of layer n-1
  -- (the original SD 2.x OpenCLIP tower, whose single files carry all 24 layers).
  layer = "last",
  clip_skip_default = 0,
}

-- SD 1.5's scheduler/scheduler_config.json (PNDM); SD 2.x differs only in prediction_type.
local SCHEDULER_SD = {
  _class_name = "PNDMScheduler",
  beta_end = 0.012,
  beta_schedule = "scaled_linear",
  beta_start = 0.00085,
  clip_sample = false,
  num_train_timesteps = 1000,
  prediction_type = "epsilon",
  set_alpha_to_one = false,
  skip_prk_steps = true,
  steps_offset = 1,
}

function arch.unet_config(t) return merge(UNET_DEFAULTS, t) end
function arch.vae_config(t) return merge(VAE_DEFAULTS, t) end
function arch.clip_config(t) return merge(CLIP_DEFAULTS, t) end
function arch.scheduler_config(t) return merge(SCHEDULER_SD, t) end

----------------------------------------------------------------------------------------------------
-- Presets

arch.presets = {}

arch.presets.sd15 = {
  name = "sd15", family = "sd1", pad = "eos",
  description = "Stable Diffusion 1.x (CLIP ViT-L/14 text encoder, 768-dim context)",
  unet = arch.unet_config{},
  vae = arch.vae_config{},
  text_encoder = arch.clip_config{},
  scheduler = arch.scheduler_config{},
}

arch.presets.sd21 = {
  name = "sd21", family = "sd2", pad = "zero",
  description = "Stable Diffusion 2.x (OpenCLIP ViT-H/14 text encoder, 1024-dim context, 64-dim heads)",
  unet = arch.unet_config{
    attention_head_dim = {5, 10, 20, 20}, cross_attention_dim = 1024, sample_size = 96,
    use_linear_projection = true, upcast_attention = true,
  },
  vae = arch.vae_config{sample_size = 768},
  text_encoder = arch.clip_config{
    hidden_act = "gelu", hidden_size = 1024, intermediate_size = 4096, num_attention_heads = 16,
    num_hidden_layers = 23, projection_dim = 512,
  },
  scheduler = arch.scheduler_config{prediction_type = "v_prediction"},
}

local TINY_UNET = {
  attention_head_dim = 2, block_out_channels = {32, 32, 64}, cross_attention_dim = 32,
  down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"},
  up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"},
  sample_size = 16,
}
local TINY_VAE = {block_out_channels = {32, 32, 32, 64}, layers_per_block = 1, sample_size = 128}
local TINY_CLIP = {hidden_size = 32, intermediate_size = 64, num_attention_heads = 4, num_hidden_layers = 3,
  projection_dim = 32}

arch.presets.tiny_sd1 = {
  name = "tiny_sd1", family = "sd1", pad = "eos",
  description = "tiny random-weight SD 1.x architecture of the reference goldens",
  unet = arch.unet_config(TINY_UNET),
  vae = arch.vae_config(TINY_VAE),
  text_encoder = arch.clip_config(TINY_CLIP),
  scheduler = arch.scheduler_config{},
}

arch.presets.tiny_sd2 = {
  name = "tiny_sd2", family = "sd2", pad = "zero",
  description = "tiny random-weight SD 2.x architecture of the reference goldens (16-dim heads)",
  unet = arch.unet_config(merge(TINY_UNET, {attention_head_dim = {2, 2, 4}, use_linear_projection = true,
    upcast_attention = true})),
  vae = arch.vae_config(TINY_VAE),
  text_encoder = arch.clip_config(merge(TINY_CLIP, {hidden_act = "gelu"})),
  scheduler = arch.scheduler_config{prediction_type = "v_prediction"},
}
arch.presets.tiny = arch.presets.tiny_sd1

-- What the original single-file releases hold besides the weights the pipeline uses (read by
-- sd.loader.single_file_layout(preset, {release = true}) for `sdlua make-checkpoint`): SD 1.5's
-- int64 position_ids; SD 2.1's whole 24-block OpenCLIP tower (the pipeline stops at block 23)
-- with its text_projection and logit_scale. init: how make-checkpoint fills the tensor.
arch.presets.sd15.release = {
  file = "v1-5-pruned-emaonly.safetensors",
  extra = {{name = "cond_stage_model.transformer.text_model.embeddings.position_ids", shape = {1, 77},
    dtype = "i64", init = "arange"}},
}
arch.presets.sd21.release = {
  file = "v2-1_768-ema-pruned.safetensors",
  text_layers = 24,
  extra = {{name = "cond_stage_model.model.text_projection", shape = {1024, 1024}, init = "linear"},
    {name = "cond_stage_model.model.logit_scale", shape = {}, init = "logit_scale"}},
}

-- Presets in the order the loader tries them when matching a checkpoint's derived structure.
arch.preset_order = {"sd15", "sd21", "tiny_sd1", "tiny_sd2"}

----------------------------------------------------------------------------------------------------
-- Parameter lists (diffusers names)

local function emitter(list, module, kind)
  return function(leaf, shape)
    list[#list + 1] = {name = module .. "." .. leaf, shape = shape, module = module, kind = kind, leaf = leaf}
  end
end

local function norm(e, name, c) e(name .. ".weight", {c}); e(name .. ".bias", {c}) end

-- UNet ResnetBlock2D (temb ~= nil) or VAE ResnetBlock2D (temb == nil)
local function resnet(list, module, cin, cout, temb)
  local e = emitter(list, module, "resnet")
  norm(e, "norm1", cin)
  e("conv1.weight", {cout, cin, 3, 3}); e("conv1.bias", {cout})
  if temb then e("time_emb_proj.weight", {cout, temb}); e("time_emb_proj.bias", {cout}) end
  norm(e, "norm2", cout)
  e("conv2.weight", {cout, cout, 3, 3}); e("conv2.bias", {cout})
  if cin ~= cout then e("conv_shortcut.weight", {cout, cin, 1, 1}); e("conv_shortcut.bias", {cout}) end
end

local function plain_norm(list, module, c)
  local e = emitter(list, module, "norm")
  e("weight", {c}); e("bias", {c})
end

local function conv(list, module, cin, cout, k, kind)
  local e = emitter(list, module, kind or "conv")
  e("weight", {cout, cin, k, k}); e("bias", {cout})
end

-- Transformer2DModel (SD's SpatialTransformer)
local function transformer(list, module, c, ctx, linear, depth)
  local e = emitter(list, module, "transformer")
  norm(e, "norm", c)
  e("proj_in.weight", linear and {c, c} or {c, c, 1, 1}); e("proj_in.bias", {c})
  for d = 0, depth - 1 do
    local b = "transformer_blocks." .. d .. "."
    norm(e, b .. "norm1", c)
    e(b .. "attn1.to_q.weight", {c, c}); e(b .. "attn1.to_k.weight", {c, c}); e(b .. "attn1.to_v.weight", {c, c})
    e(b .. "attn1.to_out.0.weight", {c, c}); e(b .. "attn1.to_out.0.bias", {c})
    norm(e, b .. "norm2", c)
    e(b .. "attn2.to_q.weight", {c, c}); e(b .. "attn2.to_k.weight", {c, ctx}); e(b .. "attn2.to_v.weight", {c, ctx})
    e(b .. "attn2.to_out.0.weight", {c, c}); e(b .. "attn2.to_out.0.bias", {c})
    norm(e, b .. "norm3", c)
    e(b .. "ff.net.0.proj.weight", {8 * c, c}); e(b .. "ff.net.0.proj.bias", {8 * c})
    e(b .. "ff.net.2.weight", {c, 4 * c}); e(b .. "ff.net.2.bias", {c})
  end
  e("proj_out.weight", linear and {c, c} or {c, c, 1, 1}); e("proj_out.bias", {c})
end

local function per_block(v, i)
  if type(v) == "table" then return v[i] end
  return v
end

local CROSS = {CrossAttnDownBlock2D = true, CrossAttnUpBlock2D = true}
local PLAIN = {DownBlock2D = true, UpBlock2D = true}

-- Checks that a UNet config describes what the structure below builds (SD 1.x / 2.x style).
function arch.check_unet_config(cfg)
  local n = #cfg.block_out_channels
  if #cfg.down_block_types ~= n or #cfg.up_block_types ~= n then
    error("unet config: block_out_channels, down_block_types and up_block_types differ in length", 2)
  end
  for i = 1, n do
    local d, u = cfg.down_block_types[i], cfg.up_block_types[i]
    if not (CROSS[d] or PLAIN[d]) then error("unet config: down block type " .. tostring(d) .. " is not supported", 2) end
    if not (CROSS[u] or PLAIN[u]) then error("unet config: up block type " .. tostring(u) .. " is not supported", 2) end
  end
  local mid = cfg.mid_block_type or "UNetMidBlock2DCrossAttn"
  if mid ~= "UNetMidBlock2DCrossAttn" then error("unet config: mid block type " .. tostring(mid) .. " is not supported", 2) end
  for _, k in ipairs{"addition_embed_type", "class_embed_type", "encoder_hid_dim_type", "time_cond_proj_dim"} do
    if cfg[k] ~= nil and cfg[k] ~= false then error("unet config: " .. k .. " = " .. tostring(cfg[k]) .. " is not supported", 2) end
  end
end

function arch.unet_params(cfg)
  arch.check_unet_config(cfg)
  local list = {}
  local ch = cfg.block_out_channels
  local n, L = #ch, cfg.layers_per_block
  local temb = cfg.time_embedding_dim or 4 * ch[1]
  local ctx, linear = cfg.cross_attention_dim, cfg.use_linear_projection and true or false
  local depth = cfg.transformer_layers_per_block or 1
  local k_in, k_out = cfg.conv_in_kernel or 3, cfg.conv_out_kernel or 3

  conv(list, "conv_in", cfg.in_channels, ch[1], k_in)
  local e = emitter(list, "time_embedding", "time_embedding")
  e("linear_1.weight", {temb, ch[1]}); e("linear_1.bias", {temb})
  e("linear_2.weight", {temb, temb}); e("linear_2.bias", {temb})

  local out = ch[1]
  for i = 1, n do
    local cin, cout = out, ch[i]
    local m = "down_blocks." .. (i - 1)
    for j = 0, L - 1 do
      resnet(list, m .. ".resnets." .. j, j == 0 and cin or cout, cout, temb)
      if CROSS[cfg.down_block_types[i]] then
        transformer(list, m .. ".attentions." .. j, cout, ctx, linear, per_block(depth, i))
      end
    end
    if i < n then conv(list, m .. ".downsamplers.0.conv", cout, cout, 3) end
    out = cout
  end

  local cm = ch[n]
  resnet(list, "mid_block.resnets.0", cm, cm, temb)
  transformer(list, "mid_block.attentions.0", cm, ctx, linear, per_block(depth, n))
  resnet(list, "mid_block.resnets.1", cm, cm, temb)

  local rev = {}
  for i = n, 1, -1 do rev[#rev + 1] = ch[i] end
  local prev = rev[1]
  for i = 1, n do
    local cout = rev[i]
    local cin = rev[math.min(i + 1, n)]
    local m = "up_blocks." .. (i - 1)
    for j = 0, L do
      local skip = (j == L) and cin or cout
      local rin = (j == 0) and prev or cout
      resnet(list, m .. ".resnets." .. j, rin + skip, cout, temb)
      if CROSS[cfg.up_block_types[i]] then
        transformer(list, m .. ".attentions." .. j, cout, ctx, linear, per_block(depth, n + 1 - i))
      end
    end
    if i < n then conv(list, m .. ".upsamplers.0.conv", cout, cout, 3) end
    prev = cout
  end

  plain_norm(list, "conv_norm_out", ch[1])
  conv(list, "conv_out", ch[1], cfg.out_channels, k_out)
  return list
end

local function vae_attention(list, module, c)
  local e = emitter(list, module, "vae_attention")
  norm(e, "group_norm", c)
  for _, p in ipairs{"to_q", "to_k", "to_v", "to_out.0"} do
    e(p .. ".weight", {c, c}); e(p .. ".bias", {c})
  end
end

function arch.vae_params(cfg)
  local list = {}
  local ch = cfg.block_out_channels
  local n, L = #ch, cfg.layers_per_block
  local lat = cfg.latent_channels
  -- encoder
  conv(list, "encoder.conv_in", cfg.in_channels, ch[1], 3)
  local out = ch[1]
  for i = 1, n do
    local m = "encoder.down_blocks." .. (i - 1)
    for j = 0, L - 1 do
      resnet(list, m .. ".resnets." .. j, j == 0 and out or ch[i], ch[i], nil)
    end
    if i < n then conv(list, m .. ".downsamplers.0.conv", ch[i], ch[i], 3) end
    out = ch[i]
  end
  local cm = ch[n]
  resnet(list, "encoder.mid_block.resnets.0", cm, cm, nil)
  vae_attention(list, "encoder.mid_block.attentions.0", cm)
  resnet(list, "encoder.mid_block.resnets.1", cm, cm, nil)
  plain_norm(list, "encoder.conv_norm_out", cm)
  conv(list, "encoder.conv_out", cm, 2 * lat, 3)
  conv(list, "quant_conv", 2 * lat, 2 * lat, 1)
  conv(list, "post_quant_conv", lat, lat, 1)
  -- decoder
  conv(list, "decoder.conv_in", lat, cm, 3)
  resnet(list, "decoder.mid_block.resnets.0", cm, cm, nil)
  vae_attention(list, "decoder.mid_block.attentions.0", cm)
  resnet(list, "decoder.mid_block.resnets.1", cm, cm, nil)
  local prev = cm
  for i = 1, n do
    local cout = ch[n + 1 - i]
    local m = "decoder.up_blocks." .. (i - 1)
    for j = 0, L do
      resnet(list, m .. ".resnets." .. j, j == 0 and prev or cout, cout, nil)
    end
    if i < n then conv(list, m .. ".upsamplers.0.conv", cout, cout, 3) end
    prev = cout
  end
  plain_norm(list, "decoder.conv_norm_out", ch[1])
  conv(list, "decoder.conv_out", ch[1], cfg.out_channels, 3)
  return list
end

function arch.clip_params(cfg)
  local list = {}
  local H, I = cfg.hidden_size, cfg.intermediate_size
  local e = emitter(list, "text_model.embeddings", "embeddings")
  e("token_embedding.weight", {cfg.vocab_size, H})
  e("position_embedding.weight", {cfg.max_position_embeddings, H})
  for i = 0, cfg.num_hidden_layers - 1 do
    local el = emitter(list, "text_model.encoder.layers." .. i, "clip_layer")
    for _, p in ipairs{"q_proj", "k_proj", "v_proj", "out_proj"} do
      el("self_attn." .. p .. ".weight", {H, H}); el("self_attn." .. p .. ".bias", {H})
    end
    norm(el, "layer_norm1", H)
    el("mlp.fc1.weight", {I, H}); el("mlp.fc1.bias", {I})
    el("mlp.fc2.weight", {H, I}); el("mlp.fc2.bias", {H})
    norm(el, "layer_norm2", H)
  end
  plain_norm(list, "text_model.final_layer_norm", H)
  return list
end

function arch.params(preset)
  if type(preset) == "string" then
    preset = arch.presets[preset] or error("unknown architecture " .. preset .. " (known: sd15, sd21, tiny_sd1, tiny_sd2)", 2)
  end
  return {
    unet = arch.unet_params(preset.unet),
    vae = arch.vae_params(preset.vae),
    text_encoder = arch.clip_params(preset.text_encoder),
  }
end

-- Number of parameters (elements) in a list from the functions above.
function arch.count(list)
  local total = 0
  for _, p in ipairs(list) do
    local n = 1
    for _, d in ipairs(p.shape) do n = n * d end
    total = total + n
  end
  return total
end

return arch
