-- sd.models.vae: the Stable Diffusion autoencoder (diffusers' AutoencoderKL).
--
--   local VAE = require "sd.models.vae"
--   local vae = VAE.new(config, weights [, {quiet = true}])
--   local img = vae:decode(z)                 -- z already divided by vae.scaling_factor; -> ~[-1,1]
--   local mean, logvar, dist = vae:encode(img) -- img in [-1,1]; dist:sample(gen) = mean + std*randn
--
-- Encoder: conv_in, down blocks (resnets + stride-2 conv after an asymmetric (0,1,0,1) pad),
-- mid block (resnet, single-head self-attention, resnet), GroupNorm, SiLU, conv_out -> quant_conv
-- -> moments = (mean, logvar). Decoder: post_quant_conv, conv_in, mid block, up blocks (resnets
-- + nearest 2x upsample and conv), GroupNorm, SiLU, conv_out.
--
-- Large images are decoded/encoded in overlapping tiles blended with linear ramps (opts.tile, or
-- automatically when the latent has more than vae.auto_tile_latent_pixels positions).
local nn = require "sd.nn"
local core = require "sd.core"
local T = core.tensor

local VAE = {}
VAE.__index = VAE

local EPS = 1e-6   -- every norm in the VAE uses eps 1e-6

local function no_record() end  -- the `keep` of a forward that records nothing

local Encoder = nn.class("Encoder")

function Encoder.new(ws, prefix, c)
  local boc, groups, lpb = c.block_out_channels, c.norm_num_groups, c.layers_per_block
  local self = setmetatable({down_blocks = {}}, Encoder)
  self.conv_in = nn.Conv2d.new(ws, prefix .. ".conv_in", c.in_channels, boc[1], 3, {padding = 1})
  local out = boc[1]
  for i, typ in ipairs(c.down_block_types) do
    if typ ~= "DownEncoderBlock2D" then error("vae config: down block type " .. typ .. " is not supported", 3) end
    local cin = out
    out = boc[i]
    self.down_blocks[i] = nn.DownBlock.new(ws, prefix .. ".down_blocks." .. (i - 1), {cin = cin, cout = out,
      layers = lpb, groups = groups, eps = EPS, downsample = i < #boc, downsample_padding = 0, skips = false})
  end
  self.mid_block = nn.MidBlock.new(ws, prefix .. ".mid_block", {channels = boc[#boc], groups = groups, eps = EPS,
    spatial_attention = c.mid_block_add_attention ~= false, dim_head = boc[#boc]})
  self.conv_norm_out = nn.GroupNorm.new(ws, prefix .. ".conv_norm_out", groups, boc[#boc], EPS)
  self.conv_out = nn.Conv2d.new(ws, prefix .. ".conv_out", boc[#boc], 2 * c.latent_channels, 3, {padding = 1})
  return self
end

function Encoder:forward(x, keep)
  local h = self.conv_in:forward(x)
  keep("encoder.conv_in", h)
  for i, block in ipairs(self.down_blocks) do
    local out = block:forward(h, nil, nil)
    if h ~= x then nn.free(h) end
    h = out
    keep("encoder.down." .. (i - 1), h)
  end
  local m = self.mid_block:forward(h); nn.free(h)
  keep("encoder.mid", m)
  local a = self.conv_norm_out:forward(m, true); nn.free(m)
  local out = self.conv_out:forward(a); nn.free(a)
  keep("encoder.conv_out", out)
  return out
end

local Decoder = nn.class("Decoder")

function Decoder.new(ws, prefix, c)
  local boc, groups, lpb = c.block_out_channels, c.norm_num_groups, c.layers_per_block
  local self = setmetatable({up_blocks = {}}, Decoder)
  self.conv_in = nn.Conv2d.new(ws, prefix .. ".conv_in", c.latent_channels, boc[#boc], 3, {padding = 1})
  self.mid_block = nn.MidBlock.new(ws, prefix .. ".mid_block", {channels = boc[#boc], groups = groups, eps = EPS,
    spatial_attention = c.mid_block_add_attention ~= false, dim_head = boc[#boc]})
  local out = boc[#boc]
  for i, typ in ipairs(c.up_block_types) do
    if typ ~= "UpDecoderBlock2D" then error("vae config: up block type " .. typ .. " is not supported", 3) end
    local prev = out
    out = boc[#boc - i + 1]
    self.up_blocks[i] = nn.UpBlock.new(ws, prefix .. ".up_blocks." .. (i - 1), {cin = prev, cout = out,
      layers = lpb + 1, groups = groups, eps = EPS, upsample = i < #boc, skips = false})
  end
  self.conv_norm_out = nn.GroupNorm.new(ws, prefix .. ".conv_norm_out", groups, boc[1], EPS)
  self.conv_out = nn.Conv2d.new(ws, prefix .. ".conv_out", boc[1], c.out_channels, 3, {padding = 1})
  return self
end

function Decoder:forward(z, keep)
  local h = self.conv_in:forward(z)
  keep("decoder.conv_in", h)
  local m = self.mid_block:forward(h); nn.free(h)
  keep("decoder.mid", m)
  h = m
  for i, block in ipairs(self.up_blocks) do
    h = block:forward(h, nil, nil, nil, nil, true) -- the block releases its input when used
    keep("decoder.up." .. (i - 1), h)
  end
  local a = self.conv_norm_out:forward_silu(h, keep ~= no_record and function(n) keep("decoder.conv_norm_out", n) end)
  nn.free(h)
  local out = self.conv_out:forward(a); nn.free(a)
  return out
end

local defaults = {in_channels = 3, out_channels = 3, latent_channels = 4, layers_per_block = 2,
  norm_num_groups = 32, block_out_channels = {128, 256, 512, 512}, scaling_factor = 0.18215,
  down_block_types = {"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"},
  up_block_types = {"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"}}

-- config: a diffusers AutoencoderKL config table (vae/config.json); weights: name -> tensor.
-- opts.quiet: no unused-weights warning. opts.decoder_only: skip the encoder weights.
function VAE.new(config, weights, opts)
  opts = opts or {}
  local c = nn.with_defaults(defaults, config)
  weights = weights or {}
  local ws = nn.store(weights, "vae", opts.init)
  local self = setmetatable({config = c, scaling_factor = c.scaling_factor,
    downscale = 1 << (#c.block_out_channels - 1),
    tile_size = 64, tile_overlap = 16, auto_tile_latent_pixels = 128 * 128}, VAE)
  local L = c.latent_channels
  if not opts.decoder_only then
    self.encoder = Encoder.new(ws, "encoder", c)
    if c.use_quant_conv ~= false then self.quant_conv = nn.Conv2d.new(ws, "quant_conv", 2 * L, 2 * L, 1) end
  else
    for k in pairs(weights) do if k:match("^encoder%.") or k:match("^quant_conv%.") then ws.used[k] = true end end
  end
  if c.use_post_quant_conv ~= false then self.post_quant_conv = nn.Conv2d.new(ws, "post_quant_conv", L, L, 1) end
  self.decoder = Decoder.new(ws, "decoder", c)
  nn.report_unused(self, ws, opts)
  return self
end

local function recorder(opts, prefix)
  local rec = opts and opts.record
  if not rec then return no_record end
  return function(name, v) rec[(prefix or "") .. name] = v:clone() end
end

-- ---------------------------------------------------------------------------------------------
-- Tiling: overlapping tiles, each weighted by a separable linear ramp over the parts it shares
-- with its neighbours; the weighted sum is divided by the sum of the weights, so every output
-- position is a convex blend and the weights change gradually (no visible seams).

-- Tile starts along one axis of length n (tile length size, overlap ov); the last tile is
-- aligned to the end so that all tiles have the same size.
local function tile_starts(n, size, ov, align)
  align = align or 1
  if n <= size then return {0}, n end
  local stride = math.max(align, ((size - ov) // align) * align)
  local starts, s = {}, 0
  while s + size < n do
    starts[#starts + 1] = s
    s = s + stride
  end
  local last = ((n - size) // align) * align
  if starts[#starts] ~= last then starts[#starts + 1] = last end
  if last + size < n then error("vae tiling: size not a multiple of the alignment", 3) end
  return starts, size
end

-- Weights along one axis for the tile at index k; `o` maps input positions to output positions.
local function ramp(starts, k, size, o)
  local s, e = o(starts[k]), o(starts[k] + size)
  local len = e - s
  local left = k > 1 and o(starts[k - 1] + size) - s or 0          -- overlap with previous tile
  local right = k < #starts and e - o(starts[k + 1]) or 0           -- overlap with next tile
  local w = {}
  for p = 0, len - 1 do
    local v = 1
    if left > 0 then v = math.min(v, (p + 0.5) / left) end
    if right > 0 then v = math.min(v, (len - p - 0.5) / right) end
    w[p + 1] = v
  end
  return w
end

-- fn(tile) -> output tile; x (B,C,H,W) is cut into tiles of `size` input positions overlapping by
-- `ov`, starting at multiples of `align`; o(p) maps an input position to an output position
-- (p * 8 when decoding, p // 8 when encoding).
local function tiled(x, fn, size, ov, align, o)
  local B, _, H, W = table.unpack(x.shape)
  local ys, th = tile_starts(H, size, ov, align)
  local xs, tw = tile_starts(W, size, ov, align)
  local out, wsum
  for i = 1, #ys do
    local wy = ramp(ys, i, th, o)
    for j = 1, #xs do
      local wx = ramp(xs, j, tw, o)
      local tv = nn.narrow2(x, ys[i] + 1, th, xs[j] + 1, tw)
      local tile = tv:contiguous()
      nn.free(tv)
      local y = fn(tile)
      if tile ~= tv then nn.free(tile) end
      local C, oh, ow = y.shape[2], y.shape[3], y.shape[4]
      if not out then
        out = T.zeros{B, C, o(H), o(W)}
        wsum = T.zeros{1, 1, o(H), o(W)}
      end
      local wyt, wxt = T.from(wy, {1, 1, oh, 1}), T.from(wx, {1, 1, 1, ow})
      local w = wyt * wxt
      nn.free(wyt, wxt)
      local yw = y * w
      nn.free(y)
      local r = nn.narrow2(out, o(ys[i]) + 1, oh, o(xs[j]) + 1, ow)
      local sum = r + yw
      r:copy_(sum)
      nn.free(sum, yw, r)
      local rw = nn.narrow2(wsum, o(ys[i]) + 1, oh, o(xs[j]) + 1, ow)
      local wsum2 = rw + w
      rw:copy_(wsum2)
      nn.free(wsum2, w, rw)
    end
  end
  out:div_(wsum)
  nn.free(wsum)
  return out
end
VAE._tile_starts = tile_starts

local function want_tiles(self, opts, h, w)
  local t = opts and opts.tile
  if t == nil then return h * w > self.auto_tile_latent_pixels end
  return t
end

-- ---------------------------------------------------------------------------------------------
-- decode / encode

-- z (B,latent,h,w), already divided by the scaling factor -> raw image (B,3,8h,8w), about [-1,1].
-- opts.tile (true/false; nil = automatic), opts.tile_size / opts.tile_overlap (latent positions),
-- opts.record (table receiving intermediates: post_quant_conv, decoder.conv_in, decoder.mid,
-- decoder.up.i, decoder.conv_norm_out).
function VAE:decode(z, opts)
  if z.dtype ~= "f32" then z = z:to("f32") end
  local H, W = z.shape[3], z.shape[4]
  if want_tiles(self, opts, H, W) then
    local size = opts and opts.tile_size or self.tile_size
    local ov = opts and opts.tile_overlap or self.tile_overlap
    if H > size or W > size then
      local f = self.downscale
      return tiled(z, function(tile) return self:_decode(tile) end, size, ov, 1,
        function(p) return p * f end)
    end
  end
  return self:_decode(z, opts)
end

function VAE:_decode(z, opts)
  local keep = recorder(opts)
  local h = z
  if self.post_quant_conv then
    h = self.post_quant_conv:forward(z)
    keep("post_quant_conv", h)
  end
  local out = self.decoder:forward(h, keep)
  if h ~= z then nn.free(h) end
  return out
end

-- The latent distribution of an encoded image.
local Dist = {}
Dist.__index = Dist

-- mean + std * noise, with noise = gen:randn(shape) (diffusers' latent_dist.sample(generator))
function Dist:sample(gen)
  local noise = T.randn(self.mean.shape, gen)
  local s = self.std * noise
  nn.free(noise)
  return s:add_(self.mean)
end

function Dist:mode() return self.mean end

-- Splits moments (B,2L,h,w) into mean and logvar (clamped to [-30, 20]); std = exp(logvar/2).
function VAE.distribution(moments)
  local L = moments.shape[2] // 2
  local mv = moments:narrow(2, 1, L)
  local mean = mv:contiguous()
  if mean ~= mv then nn.free(mv) end
  local lv = moments:narrow(2, L + 1, L)
  local logvar = lv:clamp(-30, 20)
  nn.free(lv)
  local half = logvar * 0.5
  local std = half:exp(); nn.free(half)
  local var = logvar:exp()
  return setmetatable({moments = moments, mean = mean, logvar = logvar, std = std, var = var}, Dist)
end

function VAE:_moments(x, opts)
  local keep = recorder(opts)
  local h = self.encoder:forward(x, keep)
  if self.quant_conv then
    local m = self.quant_conv:forward(h)
    nn.free(h)
    h = m
  end
  return h
end

-- img (B,3,H,W) in [-1,1] (H, W multiples of 8) -> mean, logvar, dist (dist.moments, dist.std,
-- dist:sample(gen)). opts: tile, tile_size/tile_overlap (latent positions), record (encoder.conv_in,
-- encoder.down.i, encoder.mid, encoder.conv_out).
function VAE:encode(img, opts)
  if not self.encoder then error("vae: built with decoder_only, cannot encode", 2) end
  if img.dtype ~= "f32" then img = img:to("f32") end
  local f = self.downscale
  local H, W = img.shape[3], img.shape[4]
  if H % f ~= 0 or W % f ~= 0 then
    error(string.format("vae: image size %dx%d is not a multiple of %d", W, H, f), 2)
  end
  local moments
  if want_tiles(self, opts, H // f, W // f) then
    local size = (opts and opts.tile_size or self.tile_size)
    local ov = (opts and opts.tile_overlap or self.tile_overlap)
    if H // f > size or W // f > size then
      -- tiles in image positions, aligned to the downscale factor; blended in latent space
      moments = tiled(img, function(tile) return self:_moments(tile) end, size * f, ov * f, f,
        function(p) return p // f end)
    end
  end
  moments = moments or self:_moments(img, opts)
  local dist = VAE.distribution(moments)
  return dist.mean, dist.logvar, dist
end

return VAE
