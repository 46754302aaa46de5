-- sd.loader.detect: recognise a single-file checkpoint from its tensor names and shapes, and derive
-- the diffusers-style configuration of its components.
--
-- Everything here works on a *header*: name -> {shape = {...}, dtype = "f32"|...}; no tensor data
-- is touched, so recognition can be tested on the name/shape lists of the real releases.
--
--   detect.recognise(header) -> {kind = "sd", text_layout = "hf"|"openclip", hf_prefix = ...}
--                               or raises "<what the file is>: not supported yet"
--   detect.derive(header, opts) -> {family, inpaint, preset, unet, vae, text_encoder, scheduler_config,
--                                   pad, text_layout, hf_prefix, notes}
local arch = require "sd.arch"

local detect = {}

local UNET = "model.diffusion_model."
local VAE = "first_stage_model."

local function shape_of(header, name)
  local e = header[name]
  return e and e.shape
end

local function sorted_keys(header)
  local keys = {}
  for k in pairs(header) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end
detect.sorted_keys = sorted_keys

-- "a, b, c and N more" for error messages
function detect.list_some(names, n)
  n = n or 5
  local shown = {}
  for i = 1, math.min(n, #names) do shown[i] = names[i] end
  local s = table.concat(shown, ", ")
  if #names > n then s = s .. (", ... (%d more)"):format(#names - n) end
  return s
end

local function any(keys, pred)
  for _, k in ipairs(keys) do
    if pred(k) then return k end
  end
  return nil
end

local function all(keys, pred)
  for _, k in ipairs(keys) do
    if not pred(k) then return false end
  end
  return #keys > 0
end

local function has_prefix(p) return function(k) return k:sub(1, #p) == p end end
local function contains(s) return function(k) return k:find(s, 1, true) ~= nil end end

local function unsupported(what, example)
  error(("%s: not supported yet%s"):format(what, example and (" (found e.g. " .. example .. ")") or ""), 0)
end

-- Families and file kinds we recognise but cannot run; checked in order.
local REFUSE = {
  {test = function(k) return k:find("lora_up", 1, true) or k:find("lora_down", 1, true) or k:find("lora_A", 1, true)
      or k:find("lora_B", 1, true) or k:find(".lora.", 1, true) end,
   what = "a LoRA file (low-rank adapter weights, not a full model; LoRAs are applied on top of a checkpoint)"},
  {test = function(k) return k:find("hada_w1", 1, true) or k:find("lokr_w1", 1, true) end,
   what = "a LyCORIS adapter (LoHa/LoKr; not a full model)"},
  {test = function(k) return k == "string_to_param" or k:find("string_to_param.", 1, true) == 1 or k == "emb_params"
      or k == "clip_l" or k == "clip_g" end,
   what = "a textual-inversion embedding (not a full model)"},
  {test = has_prefix("conditioner.embedders."),
   what = "a Stable Diffusion XL checkpoint (conditioner.embedders)"},
  {test = function(k) return k:find("label_emb", 1, true) and k:find(UNET, 1, true) == 1 end,
   what = "a Stable Diffusion XL (or x4-upscaler) U-Net with label embeddings (label_emb)"},
  {test = contains("add_embedding."),
   what = "a Stable Diffusion XL U-Net in diffusers naming (add_embedding)"},
  {test = contains("joint_blocks."),
   what = "a Stable Diffusion 3 checkpoint (MMDiT joint_blocks)"},
  {test = function(k) return k:find("double_blocks.", 1, true) or k:find("single_blocks.", 1, true) end,
   what = "a Flux checkpoint (double_blocks / single_blocks)"},
  {test = contains("control_model."), what = "a ControlNet checkpoint (control_model)"},
  {test = contains("input_hint_block."), what = "a ControlNet checkpoint (input_hint_block)"},
  {test = has_prefix("depth_model."), what = "a Stable Diffusion 2 depth-to-image checkpoint (depth_model)"},
  {test = has_prefix("low_scale_model."), what = "a Stable Diffusion x4 upscaler checkpoint (low_scale_model)"},
  {test = has_prefix("embedder."), what = "a Stable unCLIP checkpoint (image embedder)"},
}

-- Which layout the text encoder of an SD checkpoint has.
local HF_PREFIXES = {"cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."}

function detect.recognise(header)
  local keys = sorted_keys(header)
  if #keys == 0 then error("no tensors in the file: not a model checkpoint", 0) end
  for _, r in ipairs(REFUSE) do
    local k = any(keys, r.test)
    if k then unsupported(r.what, k) end
  end
  local has_unet = header[UNET .. "input_blocks.0.0.weight"] ~= nil
  local has_vae = header[VAE .. "decoder.conv_in.weight"] ~= nil or header[VAE .. "encoder.conv_in.weight"] ~= nil
  local text_layout, hf_prefix
  if header["cond_stage_model.model.token_embedding.weight"] then
    text_layout = "openclip"
  else
    for _, p in ipairs(HF_PREFIXES) do
      if header[p .. "embeddings.token_embedding.weight"] then
        text_layout, hf_prefix = "hf", p:gsub("text_model%.$", "")
        break
      end
    end
  end
  if has_unet and has_vae and text_layout then
    return {kind = "sd", text_layout = text_layout, hf_prefix = hf_prefix}
  end
  -- partial files
  if not has_unet and not text_layout and (has_vae or all(keys, function(k)
      return k:match("^encoder%.") or k:match("^decoder%.") or k:match("^quant_conv%.") or k:match("^post_quant_conv%.")
        or k:match("^loss%.") or k:match("^first_stage_model%.") end)) then
    unsupported("a VAE-only file (standalone VAE weights; replacing a model's VAE is not supported yet)", keys[1])
  end
  if not has_unet and not has_vae and (text_layout or any(keys, has_prefix("text_model.")) or any(keys, has_prefix("cond_stage_model."))) then
    unsupported("a text-encoder-only file", keys[1])
  end
  if any(keys, has_prefix("down_blocks.")) or any(keys, has_prefix("unet.down_blocks.")) then
    unsupported("U-Net weights in diffusers naming without the rest of the pipeline (load the diffusers folder instead)", keys[1])
  end
  if has_unet and not has_vae and not text_layout then
    unsupported("a U-Net-only file (model.diffusion_model.* without VAE and text encoder)", keys[1])
  end
  if has_unet then
    local missing = {}
    if not has_vae then missing[#missing + 1] = "VAE (first_stage_model.*)" end
    if not text_layout then missing[#missing + 1] = "text encoder (cond_stage_model.*)" end
    error("incomplete Stable Diffusion checkpoint: no " .. table.concat(missing, " and ") .. " found", 0)
  end
  error(("not a Stable Diffusion checkpoint: no model.diffusion_model.* U-Net; %d tensors, e.g. %s")
    :format(#keys, detect.list_some(keys, 5)), 0)
end

----------------------------------------------------------------------------------------------------
-- Config derivation

local function need(header, name, why)
  local s = shape_of(header, name)
  if not s then error(("cannot derive the %s: tensor %s is missing"):format(why, name), 0) end
  return s
end

local function count_indexed(header, prefix, suffix_pattern)
  -- number of consecutive indices i = 0.. such that some key starts with prefix .. i .. "."
  local seen = {}
  local pat = "^" .. prefix:gsub("%p", "%%%0") .. "(%d+)%."
  for k in pairs(header) do
    local i = k:match(pat)
    if i and (not suffix_pattern or k:find(suffix_pattern)) then seen[tonumber(i)] = true end
  end
  local n = 0
  while seen[n] do n = n + 1 end
  return n
end
detect.count_indexed = count_indexed

-- UNet structure from LDM names (model.diffusion_model.*)
function detect.unet_structure(header)
  local P = UNET
  local cin = need(header, P .. "input_blocks.0.0.weight", "U-Net input convolution")
  local cout = need(header, P .. "out.2.weight", "U-Net output convolution")
  local temb = need(header, P .. "time_embed.0.weight", "U-Net time embedding")
  local n_in = count_indexed(header, P .. "input_blocks.")
  -- input blocks after conv_in: resnet(+attention) blocks, with a downsampler (".0.op.") closing each level but the last
  local levels, cur = {}, 0
  for k = 1, n_in - 1 do
    if header[P .. "input_blocks." .. k .. ".0.op.weight"] then
      levels[#levels + 1] = cur
      cur = 0
    else
      cur = cur + 1
    end
  end
  levels[#levels + 1] = cur
  local L = levels[1]
  for i, l in ipairs(levels) do
    if l ~= L then
      error(("unsupported U-Net layout: level %d has %d res blocks, level 1 has %d"):format(i, l, L), 0)
    end
  end
  if L < 1 then error("unsupported U-Net layout: no res blocks in the first level", 0) end
  local n = #levels
  local ch, down, up = {}, {}, {}
  local ctx, linear, depth
  local function attn_info(mod)
    local w = shape_of(header, P .. mod .. ".proj_in.weight")
    if not w then return false end
    linear = (#w == 2)
    local k = shape_of(header, P .. mod .. ".transformer_blocks.0.attn2.to_k.weight")
    if k then ctx = k[2] end
    depth = depth or count_indexed(header, P .. mod .. ".transformer_blocks.")
    return true
  end
  for i = 0, n - 1 do
    local k = 1 + i * (L + 1)
    local w = need(header, P .. "input_blocks." .. k .. ".0.out_layers.3.weight", "U-Net channel count")
    ch[i + 1] = w[1]
    down[i + 1] = attn_info("input_blocks." .. k .. ".1") and "CrossAttnDownBlock2D" or "DownBlock2D"
    up[i + 1] = attn_info("output_blocks." .. (i * (L + 1)) .. ".1") and "CrossAttnUpBlock2D" or "UpBlock2D"
  end
  if not attn_info("middle_block.1") then
    error("unsupported U-Net layout: the middle block has no attention", 0)
  end
  if not ctx then error("cannot derive the U-Net cross-attention width: no attn2.to_k weight found", 0) end
  local n_out = count_indexed(header, P .. "output_blocks.")
  if n_out ~= n * (L + 1) then
    error(("unsupported U-Net layout: %d output blocks for %d levels of %d res blocks"):format(n_out, n, L), 0)
  end
  return {
    in_channels = cin[2], out_channels = cout[1], conv_in_kernel = cin[3], conv_out_kernel = cout[3],
    block_out_channels = ch, layers_per_block = L, down_block_types = down, up_block_types = up,
    cross_attention_dim = ctx, use_linear_projection = linear, transformer_layers_per_block = depth or 1,
    time_embedding_dim = (temb[1] ~= 4 * ch[1]) and temb[1] or nil,
  }
end

function detect.vae_structure(header)
  local P = VAE
  local cin = need(header, P .. "encoder.conv_in.weight", "VAE input convolution")
  local cout = need(header, P .. "decoder.conv_out.weight", "VAE output convolution")
  local n = count_indexed(header, P .. "encoder.down.")
  local L = count_indexed(header, P .. "encoder.down.0.block.")
  local ch = {}
  for i = 0, n - 1 do
    ch[i + 1] = need(header, P .. "encoder.down." .. i .. ".block.0.conv1.weight", "VAE channel count")[1]
  end
  local lat = need(header, P .. "decoder.conv_in.weight", "VAE latent channels")[2]
  local down, up = {}, {}
  for i = 1, n do down[i] = "DownEncoderBlock2D"; up[i] = "UpDecoderBlock2D" end
  return {in_channels = cin[2], out_channels = cout[1], block_out_channels = ch, layers_per_block = L,
    latent_channels = lat, down_block_types = down, up_block_types = up}
end

function detect.clip_structure(header, layout, hf_prefix)
  local tok, pos, n, fc1
  if layout == "openclip" then
    local P = "cond_stage_model.model."
    tok = need(header, P .. "token_embedding.weight", "text encoder width")
    pos = need(header, P .. "positional_embedding", "text encoder positions")
    n = count_indexed(header, P .. "transformer.resblocks.")
    fc1 = need(header, P .. "transformer.resblocks.0.mlp.c_fc.weight", "text encoder MLP width")
  else
    local P = hf_prefix .. "text_model."
    if not header[P .. "embeddings.token_embedding.weight"] then P = hf_prefix end
    tok = need(header, P .. "embeddings.token_embedding.weight", "text encoder width")
    pos = need(header, P .. "embeddings.position_embedding.weight", "text encoder positions")
    n = count_indexed(header, P .. "encoder.layers.")
    fc1 = need(header, P .. "encoder.layers.0.mlp.fc1.weight", "text encoder MLP width")
  end
  return {vocab_size = tok[1], hidden_size = tok[2], max_position_embeddings = pos[1], num_hidden_layers = n,
    intermediate_size = fc1[1]}
end

local function same_list(a, b)
  if type(a) ~= "table" or type(b) ~= "table" or #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

-- The preset whose structure matches (heads and sample sizes cannot be read from shapes).
function detect.match_preset(family, u, v, c)
  for _, name in ipairs(arch.preset_order) do
    local p = arch.presets[name]
    local pu, pv, pc = p.unet, p.vae, p.text_encoder
    if p.family == family and same_list(pu.block_out_channels, u.block_out_channels)
      and pu.layers_per_block == u.layers_per_block and pu.cross_attention_dim == u.cross_attention_dim
      and same_list(pu.down_block_types, u.down_block_types)
      and (pu.use_linear_projection or false) == (u.use_linear_projection or false)
      and same_list(pv.block_out_channels, v.block_out_channels) and pv.layers_per_block == v.layers_per_block
      and pc.hidden_size == c.hidden_size and pc.intermediate_size == c.intermediate_size then
      return p
    end
  end
  return nil
end

local function overlay(t, over)
  for k, v in pairs(over or {}) do t[k] = arch.copy(v) end
  return t
end

-- header -> derived configuration (see the top of the file). opts: prediction_type, clip_layer,
-- unet / vae / text_encoder (config keys laid over the derived ones), attention_head_dim,
-- yaml (text of an LDM .yaml config found next to the checkpoint).
function detect.derive(header, opts)
  opts = opts or {}
  local r = detect.recognise(header)
  local notes = {}
  local u = detect.unet_structure(header)
  local v = detect.vae_structure(header)
  local c = detect.clip_structure(header, r.text_layout, r.hf_prefix)
  -- OpenCLIP names mean SD 2.x; so does a 1024-wide text encoder stored under transformers names
  local family = (r.text_layout == "openclip" or c.hidden_size == 1024) and "sd2" or "sd1"
  if u.cross_attention_dim ~= c.hidden_size then
    error(("inconsistent checkpoint: the U-Net cross-attention width is %d but the text encoder width is %d")
      :format(u.cross_attention_dim, c.hidden_size), 0)
  end
  local inpaint = u.in_channels == 9
  if u.in_channels ~= 4 and not inpaint then
    local what = ({[5] = "a depth-conditioned U-Net (5 input channels)", [7] = "an upscaler U-Net (7 input channels)",
      [8] = "an InstructPix2Pix-style U-Net (8 input channels)"})[u.in_channels]
      or ("a U-Net with %d input channels"):format(u.in_channels)
    unsupported(what .. "; Stable Diffusion 1.x/2.x with 4 (text-to-image) or 9 (inpainting) input channels are supported")
  end
  if u.out_channels ~= 4 then unsupported(("a U-Net with %d output channels"):format(u.out_channels)) end

  local structure_cfg = arch.copy(u)
  structure_cfg.in_channels = 4
  local preset = detect.match_preset(family, structure_cfg, v, c)

  -- UNet config
  local ucfg = arch.unet_config(preset and preset.unet or {})
  overlay(ucfg, u)
  ucfg.time_embedding_dim = u.time_embedding_dim -- nil unless unusual
  ucfg.upcast_attention = family == "sd2"
  if preset then
    ucfg.attention_head_dim = arch.copy(preset.unet.attention_head_dim)
  elseif family == "sd1" then
    ucfg.attention_head_dim = 8 -- SD 1.x: 8 heads in every block (diffusers' attention_head_dim means heads here)
    notes[#notes + 1] = "unknown SD 1.x size: assuming 8 attention heads (override with opts.attention_head_dim)"
  else
    local heads = {}
    for i, ch in ipairs(u.block_out_channels) do heads[i] = math.max(1, ch // 64) end -- 64-dim heads
    ucfg.attention_head_dim = heads
    notes[#notes + 1] = "unknown SD 2.x size: assuming 64-dim attention heads (override with opts.attention_head_dim)"
  end
  if opts.attention_head_dim then ucfg.attention_head_dim = arch.copy(opts.attention_head_dim) end

  -- prediction type: opts > .yaml next to the file > family default
  local prediction = opts.prediction_type
  if not prediction and opts.yaml then
    if opts.yaml:find("parameterization:%s*[\"']?v[\"']?%s") or opts.yaml:find("parameterization:%s*[\"']?v[\"']?$") then
      prediction = "v_prediction"
    else
      prediction = "epsilon"
    end
  end
  if not prediction then
    if family == "sd2" and not inpaint then
      prediction = "v_prediction"
      notes[#notes + 1] = "SD 2.x single file: assuming v-prediction (768-v); pass prediction_type = \"epsilon\" for 512-base models"
    else
      prediction = "epsilon"
    end
  end
  if prediction ~= "epsilon" and prediction ~= "v_prediction" and prediction ~= "sample" then
    error("prediction_type must be \"epsilon\", \"v_prediction\" or \"sample\", got " .. tostring(prediction), 0)
  end

  -- VAE config
  local vcfg = arch.vae_config(preset and preset.vae or {})
  overlay(vcfg, v)

  -- sample sizes of the real SD 2.x releases: 768 for v-prediction, 512 otherwise
  if preset and preset.name == "sd21" then
    local px = prediction == "v_prediction" and 768 or 512
    ucfg.sample_size = px // 8
    vcfg.sample_size = px
  end

  -- text encoder config
  local ccfg = arch.clip_config(preset and preset.text_encoder or {})
  overlay(ccfg, c)
  if not preset then
    if c.hidden_size % 64 == 0 then
      ccfg.num_attention_heads = c.hidden_size // 64
    else
      notes[#notes + 1] = "unknown text encoder width: set opts.text_encoder.num_attention_heads"
    end
  end
  if family == "sd2" then
    ccfg.hidden_act = "gelu"
    -- The original OpenCLIP tower (with text_projection/logit_scale, or all 24 ViT-H layers) is used
    -- through its penultimate layer; files converted from diffusers folders already dropped that layer.
    local full = header["cond_stage_model.model.text_projection"] or header["cond_stage_model.model.logit_scale"]
      or c.num_hidden_layers == 24
    ccfg.layer = full and "penultimate" or "last"
  else
    ccfg.hidden_act = "quick_gelu"
    ccfg.layer = "last"
  end
  if opts.clip_layer then
    if opts.clip_layer ~= "last" and opts.clip_layer ~= "penultimate" then
      error("clip_layer must be \"last\" or \"penultimate\", got " .. tostring(opts.clip_layer), 0)
    end
    ccfg.layer = opts.clip_layer
  end
  ccfg.clip_skip_default = ccfg.layer == "penultimate" and 1 or 0

  overlay(ucfg, opts.unet)
  overlay(vcfg, opts.vae)
  overlay(ccfg, opts.text_encoder)
  if inpaint then ucfg.in_channels = 9 end
  if opts.unet and opts.unet.in_channels then ucfg.in_channels = opts.unet.in_channels end

  return {
    family = family, inpaint = inpaint, preset = preset and preset.name or nil,
    text_layout = r.text_layout, hf_prefix = r.hf_prefix,
    unet = ucfg, vae = vcfg, text_encoder = ccfg,
    scheduler_config = arch.scheduler_config{prediction_type = prediction},
    pad = family == "sd2" and "zero" or "eos",
    notes = notes,
  }
end

return detect
