-- sd.models.unet: the Stable Diffusion U-Net (diffusers' UNet2DConditionModel) built from a
-- diffusers config table (unet/config.json) and diffusers-named weights.
--
--   local UNet = require "sd.models.unet"
--   local unet = UNet.new(config, weights [, {quiet = true}])
--   local eps = unet:forward(x, t, ctx [, {record = {}}])
--
-- The forward reads as the architecture is drawn:
--   t -> sinusoidal projection -> MLP = emb
--   x -> conv_in -> down blocks (each keeps its skip outputs) -> mid block
--     -> up blocks (each concatenates the skips of its level) -> GroupNorm, SiLU, conv_out
local nn = require "sd.nn"
local core = require "sd.core"
local T = core.tensor

local UNet = {}
UNet.__index = UNet
UNet.__call = function(self, ...) return self:forward(...) end

local function per_block(v, n, what)
  if type(v) == "table" then
    if #v ~= n then error(string.format("unet config: %s has %d entries for %d blocks", what, #v, n), 3) end
    return v
  end
  local t = {}
  for i = 1, n do t[i] = v end
  return t
end

local function reversed(list)
  local r = {}
  for i = #list, 1, -1 do r[#r + 1] = list[i] end
  return r
end

local function check_supported(c)
  local function unsupported(key, ok)
    if c[key] ~= nil and c[key] ~= ok and not (type(ok) == "table" and ok[c[key]]) then
      error(string.format("unet config: %s = %s is not supported", key, tostring(c[key])), 3)
    end
  end
  -- cjson decodes JSON null as cjson.null (a lightuserdata); treat it as nil
  if type(c.mid_block_type) == "userdata" then c.mid_block_type = false end   -- null: no mid block
  for k, v in pairs(c) do if type(v) == "userdata" then c[k] = nil end end
  unsupported("addition_embed_type", nil)
  unsupported("class_embed_type", nil)
  unsupported("num_class_embeds", nil)
  unsupported("encoder_hid_dim", nil)
  unsupported("time_cond_proj_dim", nil)
  unsupported("time_embedding_type", "positional")
  unsupported("resnet_time_scale_shift", "default")
  unsupported("dual_cross_attention", false)
  unsupported("center_input_sample", false)
  unsupported("attention_type", "default")
  unsupported("act_fn", "silu")
  unsupported("timestep_post_act", nil)
  unsupported("time_embedding_act_fn", nil)
  unsupported("resnet_skip_time_act", false)
  unsupported("cross_attention_norm", nil)
  unsupported("encoder_hid_dim_type", nil)
  unsupported("class_embeddings_concat", false)
  unsupported("reverse_transformer_layers_per_block", nil)
end

-- config: a diffusers UNet2DConditionModel config table; weights: name -> tensor.
-- opts.quiet: do not print the unused-weights warning.
function UNet.new(config, weights, opts)
  opts = opts or {}
  local c = {}
  for k, v in pairs(config) do c[k] = v end
  check_supported(c)

  local boc = c.block_out_channels or {320, 640, 1280, 1280}
  local nblocks = #boc
  local down_types = c.down_block_types or
    {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}
  local up_types = c.up_block_types or
    {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"}
  local mid_type = c.mid_block_type
  if mid_type == nil then mid_type = "UNetMidBlock2DCrossAttn" end
  if #down_types ~= nblocks or #up_types ~= nblocks then
    error("unet config: down_block_types / up_block_types must have one entry per block_out_channels", 2)
  end
  -- diffusers' naming quirk: for SD 1.x/2.x configs `attention_head_dim` is the number of heads
  local heads = per_block(c.num_attention_heads or c.attention_head_dim or 8, nblocks, "attention_head_dim")
  local layers = per_block(c.layers_per_block or 2, nblocks, "layers_per_block")
  local cross = per_block(c.cross_attention_dim or 1280, nblocks, "cross_attention_dim")
  local depth = per_block(c.transformer_layers_per_block or 1, nblocks, "transformer_layers_per_block")
  local only_cross = per_block(c.only_cross_attention or false, nblocks, "only_cross_attention")
  local groups = c.norm_num_groups or 32
  local eps = c.norm_eps or 1e-5
  local linear = c.use_linear_projection or false
  local in_ch, out_ch = c.in_channels or 4, c.out_channels or 4
  local temb_dim = c.time_embedding_dim or boc[1] * 4
  local conv_in_k, conv_out_k = c.conv_in_kernel or 3, c.conv_out_kernel or 3
  local res_scale = c.resnet_out_scale_factor or 1

  weights = weights or {}
  local ws = nn.store(weights, "unet", opts.init)
  local self = setmetatable({config = c, in_channels = in_ch, out_channels = out_ch}, UNet)

  self.time_proj = nn.Timesteps.new(boc[1], c.flip_sin_to_cos ~= false, c.freq_shift or 0)
  self.time_embedding = nn.TimestepEmbedding.new(ws, "time_embedding", boc[1], temb_dim,
    c.act_fn or "silu")
  self.conv_in = nn.Conv2d.new(ws, "conv_in", in_ch, boc[1], conv_in_k, {padding = (conv_in_k - 1) // 2})

  local function attn_opts(i, n_heads, out_ch_)
    return {heads = n_heads, dim_head = out_ch_ // n_heads, groups = groups, depth = depth[i],
      cross_attention_dim = cross[i], use_linear_projection = linear, only_cross_attention = only_cross[i]}
  end

  -- down path
  self.down_blocks = {}
  local out_channels = boc[1]
  for i, typ in ipairs(down_types) do
    local cin = out_channels
    out_channels = boc[i]
    local final = i == nblocks
    local with_attn
    if typ == "CrossAttnDownBlock2D" then with_attn = true
    elseif typ == "DownBlock2D" then with_attn = false
    else error("unet config: down block type " .. tostring(typ) .. " is not supported", 2) end
    self.down_blocks[i] = nn.DownBlock.new(ws, "down_blocks." .. (i - 1), {
      cin = cin, cout = out_channels, layers = layers[i], temb_channels = temb_dim,
      groups = groups, eps = eps, downsample = not final, downsample_padding = c.downsample_padding or 1,
      output_scale_factor = res_scale,
      attention = with_attn and attn_opts(i, heads[i], out_channels) or nil})
  end

  -- middle
  if mid_type == "UNetMidBlock2DCrossAttn" then
    self.mid_block = nn.MidBlock.new(ws, "mid_block", {channels = boc[nblocks], temb_channels = temb_dim,
      groups = groups, eps = eps, output_scale_factor = c.mid_block_scale_factor or 1,
      attention = attn_opts(nblocks, heads[nblocks], boc[nblocks])})
  elseif mid_type ~= false then
    error("unet config: mid block type " .. tostring(mid_type) .. " is not supported", 2)
  end

  -- up path (mirrors the down path; per-block lists are reversed as diffusers does: up block i
  -- takes the attention settings of down level nblocks + 1 - i)
  self.up_blocks = {}
  local rboc, rheads, rlayers = reversed(boc), reversed(heads), reversed(layers)
  out_channels = rboc[1]
  for i, typ in ipairs(up_types) do
    local prev = out_channels
    out_channels = rboc[i]
    local skip_in = rboc[math.min(i + 1, nblocks)]
    local final = i == nblocks
    local with_attn
    if typ == "CrossAttnUpBlock2D" then with_attn = true
    elseif typ == "UpBlock2D" then with_attn = false
    else error("unet config: up block type " .. tostring(typ) .. " is not supported", 2) end
    self.up_blocks[i] = nn.UpBlock.new(ws, "up_blocks." .. (i - 1), {
      cin = skip_in, prev = prev, cout = out_channels, layers = rlayers[i] + 1, skips = true,
      temb_channels = temb_dim, groups = groups, eps = eps, upsample = not final, output_scale_factor = res_scale,
      attention = with_attn and attn_opts(nblocks + 1 - i, rheads[i], out_channels) or nil})
  end

  -- output
  self.conv_norm_out = nn.GroupNorm.new(ws, "conv_norm_out", groups, boc[1], eps)
  self.conv_out = nn.Conv2d.new(ws, "conv_out", boc[1], out_ch, conv_out_k, {padding = (conv_out_k - 1) // 2})

  nn.report_unused(self, ws, opts)
  return self
end

-- t: a number, a list of numbers, or a tensor with 1 or B elements -> list of B numbers
local function timestep_list(t, B)
  local ts = {}
  if type(t) == "number" then
    for i = 1, B do ts[i] = t end
  elseif T.is_tensor(t) then
    local n = t:numel()
    local flat = t:reshape{n}:totable()
    if n == 1 then
      for i = 1, B do ts[i] = flat[1] end
    elseif n == B then
      ts = flat
    else
      error(string.format("unet: %d timesteps for a batch of %d", n, B), 3)
    end
  elseif type(t) == "table" then
    if #t == 1 then for i = 1, B do ts[i] = t[1] end
    elseif #t == B then for i = 1, B do ts[i] = t[i] end
    else error(string.format("unet: %d timesteps for a batch of %d", #t, B), 3) end
  else
    error("unet: t must be a number, a list or a tensor", 3)
  end
  return ts
end

-- x (B,in_channels,H,W) latents; t timestep(s); ctx (B,M,cross_attention_dim) text embeddings.
-- opts.record: a table that receives clones of the intermediates under the names of the goldens
-- (time_proj, time_embedding, conv_in, down.i, down.i.res.j, mid, up.i, conv_norm_out; 0-based).
-- Returns (B,out_channels,H,W).
function UNet:forward(x, t, ctx, opts)
  local rec = opts and opts.record
  local function keep(name, v) if rec then rec[name] = v:clone() end end
  local B, C, H, W = table.unpack(x.shape)
  if C ~= self.in_channels then
    error(string.format("unet: input has %d channels, the model takes %d", C, self.in_channels), 2)
  end
  if ctx.shape[1] ~= B then
    error(string.format("unet: batch of %d latents but %d text embeddings", B, ctx.shape[1]), 2)
  end
  local given_x, given_ctx = x, ctx
  if x.dtype ~= "f32" then x = x:to("f32") end
  if ctx.dtype ~= "f32" then ctx = ctx:to("f32") end

  -- time embedding
  local tproj = self.time_proj:forward(timestep_list(t, B))
  keep("time_proj", tproj)
  local emb = self.time_embedding:forward(tproj)
  nn.free(tproj)
  keep("time_embedding", emb)

  -- down path; `skips` collects conv_in's output and every down block's skip outputs
  local h = self.conv_in:forward(x)
  keep("conv_in", h)
  local skips = {h}
  for i, block in ipairs(self.down_blocks) do
    local out, res = block:forward(h, emb, ctx)
    for j, r in ipairs(res) do
      skips[#skips + 1] = r
      keep(string.format("down.%d.res.%d", i - 1, j - 1), r)
    end
    keep("down." .. (i - 1), out)
    h = out
  end

  -- middle (h is still referenced by `skips`; the mid block's output is new)
  if self.mid_block then
    h = self.mid_block:forward(h, emb, ctx)
    keep("mid", h)
  end

  -- up path: each block takes its level's skips from the end of the list
  for i, block in ipairs(self.up_blocks) do
    local n = #block.resnets
    local mine = {}
    for k = #skips - n + 1, #skips do mine[#mine + 1] = skips[k] end
    for _ = 1, n do skips[#skips] = nil end
    local size = nil
    if #skips > 0 then local s = skips[#skips].shape; size = {s[3], s[4]} end
    -- h is ours to give up unless it is the last down output, still referenced by `skips`
    h = block:forward(h, emb, ctx, mine, size, self.mid_block ~= nil or i > 1)
    keep("up." .. (i - 1), h)
  end
  nn.free(emb)

  -- output
  local a = self.conv_norm_out:forward_silu(h, rec and function(n) keep("conv_norm_out", n) end)
  nn.free(h)
  local out = self.conv_out:forward(a); nn.free(a)
  if x ~= given_x then nn.free(x) end
  if ctx ~= given_ctx then nn.free(ctx) end
  return out
end

return UNet
