-- sd.nn: the layers the models are built from.
--
-- Every layer is a small table with a constructor `Layer.new(ws, prefix, ...)` that takes its
-- weights from a weight store (see nn.store) under a name prefix (the diffusers / transformers
-- parameter names), and a plain `forward(...)`. Layers are also callable: `layer(x)` is
-- `layer:forward(x)`. All heavy work happens in the C tensor ops (x:linear, x:conv2d,
-- T.attention, x:group_norm, ...); the Lua code only wires them together.
--
-- Memory rule used throughout: a forward never releases its arguments (they belong to the
-- caller) unless the caller hands one over explicitly (`consume`, as in UpBlock:forward and
-- Upsample2D:forward), and releases every intermediate it created as soon as it is dead (x:release() drops
-- the storage at once), so peak memory does not depend on when the garbage collector runs.
-- Views count too: a view holds a reference to its storage until it is released or collected,
-- so temporary views are released as well (tests/lua/test_models.lua checks that a forward
-- leaves nothing behind with the collector stopped).
local core = require "sd.core"
local T = core.tensor

local nn = {}

-- ---------------------------------------------------------------------------------------------
-- helpers

local function class(name)
  local c = {__name = name}
  c.__index = c
  c.__call = function(self, ...) return self:forward(...) end
  return c
end
nn.class = class

-- Releases every tensor argument that is not nil (intermediates only, never weights or inputs).
local function free(...)
  for i = 1, select("#", ...) do
    local x = select(i, ...)
    if x ~= nil then x:release() end
  end
end
nn.free = free

-- A model's resolved config: a copy of `defaults` with the keys of `config` laid over it (JSON
-- nulls, which cjson decodes as a userdata, are skipped).
function nn.with_defaults(defaults, config)
  local c = {}
  for k, v in pairs(defaults) do c[k] = v end
  for k, v in pairs(config or {}) do if type(v) ~= "userdata" then c[k] = v end end
  return c
end

local function shape_str(s)
  return "(" .. table.concat(s, ",") .. ")"
end

-- ---------------------------------------------------------------------------------------------
-- Weight store: hands weights out by name, remembers which were used, collects missing names and
-- wrong shapes so a constructor can report all of them at once.
--   local ws = nn.store(weights, "unet")
--   local w = ws:get("conv_in.weight", {32, 4, 3, 3})   -- any dtype (kept as stored)
--   local b = ws:small("conv_in.bias", {32})            -- converted to f32 (norms, biases)
--   local unused = ws:finish()                          -- errors listing missing/mis-shaped names

local Store = {}
Store.__index = Store

-- init (optional): function(name, shape) -> tensor, called for weights that are absent (random
-- or constant initialisation for benchmarks and tests; the created tensors join `weights`).
function nn.store(weights, what, init)
  assert(type(weights) == "table", "nn.store: weights must be a table name -> tensor")
  return setmetatable({weights = weights, what = what or "model", used = {}, missing = {},
    bad = {}, init = init}, Store)
end

-- An init function for nn.store: normal(0, 1/sqrt(fan_in)) weights (1-D tensors: norm weights
-- 1 + 0.1 n, biases 0.1 n), drawn from generator `gen`, stored as `dtype` (default f32).
function nn.random_init(gen, dtype)
  return function(name, shape)
    local w = T.randn(shape, gen)
    if #shape == 1 then
      w:mul_(0.1)
      if name:match("norm") and name:match("weight$") then w:add_(1) end
    else
      local fan_in = 1
      for i = 2, #shape do fan_in = fan_in * shape[i] end
      w:mul_(1 / math.sqrt(fan_in))
    end
    if dtype and dtype ~= "f32" then
      local h = w:to(dtype)
      w:release()
      w = h
    end
    return w
  end
end

function Store:has(name)
  return self.weights[name] ~= nil
end

function Store:get(name, shape)
  local w = self.weights[name]
  if w == nil and self.init and shape then
    w = self.init(name, shape)
    self.weights[name] = w
  end
  if w == nil then
    self.missing[#self.missing + 1] = name
    return nil
  end
  self.used[name] = true
  if shape then
    local s = w.shape
    local ok = #s == #shape
    if ok then for i = 1, #s do if s[i] ~= shape[i] then ok = false end end end
    if not ok then
      self.bad[#self.bad + 1] = string.format("%s: expected %s, got %s", name, shape_str(shape), shape_str(s))
    end
  end
  return w
end

-- Small tensors (norm weights, biases, embeddings) are widened to f32 once, at construction.
function Store:small(name, shape)
  local w = self:get(name, shape)
  if w ~= nil and w.dtype ~= "f32" then w = w:to("f32") end
  return w
end

-- Raises one error listing every missing or mis-shaped weight; returns the sorted list of names
-- that were present but never used.
function Store:finish()
  if #self.missing > 0 or #self.bad > 0 then
    local msg = {}
    if #self.missing > 0 then
      msg[#msg + 1] = string.format("%s: %d missing weight(s):\n  %s", self.what, #self.missing,
        table.concat(self.missing, "\n  "))
    end
    if #self.bad > 0 then
      msg[#msg + 1] = string.format("%s: %d weight(s) with the wrong shape:\n  %s", self.what, #self.bad,
        table.concat(self.bad, "\n  "))
    end
    error(table.concat(msg, "\n"), 0)
  end
  local unused = {}
  for name in pairs(self.weights) do
    if not self.used[name] then unused[#unused + 1] = name end
  end
  table.sort(unused)
  return unused
end

-- Reports unused weights the way every model constructor does: a warning on stderr unless
-- opts.quiet, and the list kept as model.unused_weights.
function nn.report_unused(model, ws, opts)
  local unused = ws:finish()
  model.unused_weights = unused
  if #unused > 0 and not (opts and opts.quiet) then
    local show = {}
    for i = 1, math.min(#unused, 10) do show[i] = unused[i] end
    io.stderr:write(string.format("warning: %s: %d unused weight(s): %s%s\n", ws.what, #unused,
      table.concat(show, ", "), #unused > 10 and ", ..." or ""))
  end
  return unused
end

local function join(prefix, name)
  if prefix == nil or prefix == "" then return name end
  return prefix .. "." .. name
end
nn.join = join

-- ---------------------------------------------------------------------------------------------
-- activations (functions tensor -> new tensor)

nn.act = {
  silu = function(x) return x:silu() end,
  swish = function(x) return x:silu() end,
  gelu = function(x) return x:gelu() end,
  quick_gelu = function(x) return x:quick_gelu() end,
  gelu_new = function(x) return x:gelu_tanh() end,
  gelu_pytorch_tanh = function(x) return x:gelu_tanh() end,
  relu = function(x) return x:clamp(0, math.huge) end,
}

function nn.activation(name)
  local f = nn.act[name or "silu"]
  if not f then error("nn.activation: unknown activation '" .. tostring(name) .. "'", 2) end
  return f
end

-- ---------------------------------------------------------------------------------------------
-- Linear: y = x W^T + b, W (out, in) in f32/f16/bf16 as stored.

local Linear = class("Linear")
nn.Linear = Linear

function Linear.new(ws, prefix, in_features, out_features, bias)
  local self = setmetatable({in_features = in_features, out_features = out_features}, Linear)
  self.weight = ws:get(join(prefix, "weight"), {out_features, in_features})
  if bias ~= false then self.bias = ws:small(join(prefix, "bias"), {out_features}) end
  return self
end

function Linear:forward(x)
  return x:linear(self.weight, self.bias)
end

-- ---------------------------------------------------------------------------------------------
-- Conv2d over NCHW. opts: stride, padding (numbers).

local Conv2d = class("Conv2d")
nn.Conv2d = Conv2d

function Conv2d.new(ws, prefix, cin, cout, k, opts)
  opts = opts or {}
  local self = setmetatable({cin = cin, cout = cout, k = k}, Conv2d)
  self.weight = ws:get(join(prefix, "weight"), {cout, cin, k, k})
  if opts.bias ~= false then self.bias = ws:small(join(prefix, "bias"), {cout}) end
  self.opts = {stride = opts.stride or 1, padding = opts.padding or 0}
  return self
end

function Conv2d:forward(x)
  return x:conv2d(self.weight, self.bias, self.opts)
end

-- A 1x1 convolution seen as a Linear over the channel dimension (weight (out, in, 1, 1) viewed
-- as (out, in)): used by Transformer2D, whose proj_in/proj_out are 1x1 convs in SD 1.x and
-- Linear layers in SD 2.x.
local function linear_or_1x1(ws, prefix, cin, cout, conv)
  local name = join(prefix, "weight")
  local w = ws.weights[name]
  if w ~= nil then conv = w.ndim == 4 end
  if conv then
    local l = setmetatable({in_features = cin, out_features = cout}, Linear)
    l.weight = ws:get(name, {cout, cin, 1, 1})
    if l.weight then l.weight = l.weight:view{cout, cin} end
    l.bias = ws:small(join(prefix, "bias"), {cout})
    return l
  end
  return Linear.new(ws, prefix, cin, cout)
end

-- ---------------------------------------------------------------------------------------------
-- Normalisation layers

local GroupNorm = class("GroupNorm")
nn.GroupNorm = GroupNorm

function GroupNorm.new(ws, prefix, groups, channels, eps)
  local self = setmetatable({groups = groups, channels = channels, eps = eps or 1e-5}, GroupNorm)
  self.weight = ws:small(join(prefix, "weight"), {channels})
  self.bias = ws:small(join(prefix, "bias"), {channels})
  return self
end

-- silu = true: SiLU applied in the same pass (one tensor and one sweep over memory fewer than
-- norm then silu; the resnet blocks and the models' output heads use it).
function GroupNorm:forward(x, silu)
  return x:group_norm(self.groups, self.weight, self.bias, self.eps, silu or false)
end

-- GroupNorm then SiLU, as the models' output heads run it: fused, or in two steps when `record`
-- (a function) wants the norm's own output (the goldens record it before the SiLU).
function GroupNorm:forward_silu(x, record)
  if not record then return self:forward(x, true) end
  local n = self:forward(x)
  record(n)
  local a = n:silu()
  free(n)
  return a
end

local LayerNorm = class("LayerNorm")
nn.LayerNorm = LayerNorm

function LayerNorm.new(ws, prefix, dim, eps)
  local self = setmetatable({dim = dim, eps = eps or 1e-5}, LayerNorm)
  self.weight = ws:small(join(prefix, "weight"), {dim})
  self.bias = ws:small(join(prefix, "bias"), {dim})
  return self
end

function LayerNorm:forward(x)
  return x:layer_norm(self.weight, self.bias, self.eps)
end

-- ---------------------------------------------------------------------------------------------
-- Embedding: rows of a (num, dim) table. Small tables are widened to f32 at construction; with
-- keep_dtype (CLIP's 49408-row token table) the table stays as stored and only the looked-up
-- rows are widened (T.embedding reads f16/bf16): an f16 checkpoint then keeps 76 MB mapped
-- instead of 152 MB of f32 on the heap.

local Embedding = class("Embedding")
nn.Embedding = Embedding

function Embedding.new(ws, prefix, num, dim, keep_dtype)
  local self = setmetatable({num = num, dim = dim}, Embedding)
  local name = join(prefix, "weight")
  self.weight = keep_dtype and ws:get(name, {num, dim}) or ws:small(name, {num, dim})
  return self
end

-- ids: a tensor of integer values (any dtype) or a flat Lua list.
function Embedding:forward(ids)
  return T.embedding(self.weight, nn.as_ids(ids))
end

-- Integer ids as an i64 tensor.
function nn.as_ids(ids, shape)
  if type(ids) == "table" and not T.is_tensor(ids) then
    if type(ids[1]) == "table" then
      local flat, B, L = {}, #ids, #ids[1]
      for b = 1, B do for i = 1, L do flat[#flat + 1] = ids[b][i] end end
      return T.from(flat, {B, L}, "i64")
    end
    return T.from(ids, shape or {1, #ids}, "i64")
  end
  if ids.dtype ~= "i64" and ids.dtype ~= "i32" then return ids:to("i64") end
  return ids
end

-- ---------------------------------------------------------------------------------------------
-- Multi-head attention (diffusers' Attention with the default processor; transformers' CLIP
-- attention uses the same wiring with biases on q/k/v).
--   opts: query_dim, context_dim (nil = self-attention), heads, dim_head, qkv_bias (false),
--         out_bias (true), names = {q=, k=, v=, out=} (defaults to_q, to_k, to_v, to_out.0)
-- forward(x (B,N,query_dim) [, ctx (B,M,context_dim)] [, causal]) -> (B,N,query_dim)

local Attention = class("Attention")
nn.Attention = Attention

function Attention.new(ws, prefix, opts)
  local qd = opts.query_dim
  local cd = opts.context_dim or qd
  local heads = opts.heads
  local dh = opts.dim_head or (qd // heads)
  local inner = heads * dh
  local names = opts.names or {}
  local self = setmetatable({heads = heads, dim_head = dh, inner = inner,
    scale = opts.scale or 1 / math.sqrt(dh), causal = opts.causal or false}, Attention)
  local qkv_bias = opts.qkv_bias or false
  self.to_q = Linear.new(ws, join(prefix, names.q or "to_q"), qd, inner, qkv_bias)
  self.to_k = Linear.new(ws, join(prefix, names.k or "to_k"), cd, inner, qkv_bias)
  self.to_v = Linear.new(ws, join(prefix, names.v or "to_v"), cd, inner, qkv_bias)
  self.to_out = Linear.new(ws, join(prefix, names.out or "to_out.0"), inner, opts.out_dim or qd,
    opts.out_bias ~= false)
  return self
end

-- (B,N,H*d) -> (B,H,N,d) view (no copy; T.attention takes any strides but the last)
local function split_heads(x, heads)
  local s = x.shape
  local v = x:view{s[1], s[2], heads, s[3] // heads}
  local p = v:permute{1, 3, 2, 4}
  v:release()
  return p
end
nn.split_heads = split_heads

-- x:view(shape):permute(perm) without leaving the intermediate view alive
function nn.view_permute(x, shape, perm)
  local v = x:view(shape)
  local p = v:permute(perm)
  v:release()
  return p
end

-- x:permute(perm):reshape(shape) (a copy unless the permutation keeps x contiguous)
function nn.permute_reshape(x, perm, shape)
  local p = x:permute(perm)
  local r = p:reshape(shape)
  p:release()
  return r
end

-- (B,C,H,W) -> (B,H*W,C): an image as a sequence of H*W tokens. Releases the image.
local function image_to_tokens(img)
  local B, C, H, W = table.unpack(img.shape)
  local tokens = nn.permute_reshape(img, {1, 3, 4, 2}, {B, H * W, C})
  free(img)
  return tokens
end

-- (B,H*W,C) tokens back to the (B,C,H,W) shape of `x`, plus x (the residual connection).
-- Releases the tokens.
local function tokens_to_image_plus(tokens, x)
  local B, C, H, W = table.unpack(x.shape)
  local img = nn.view_permute(tokens, {B, H, W, C}, {1, 4, 2, 3})
  free(tokens)
  local out = img + x
  free(img)
  return out
end

function Attention:forward(x, ctx, causal)
  local B, N = x.shape[1], x.shape[2]
  ctx = ctx or x
  local q = self.to_q:forward(x)
  local k = self.to_k:forward(ctx)
  local v = self.to_v:forward(ctx)
  local qh, kh, vh = split_heads(q, self.heads), split_heads(k, self.heads), split_heads(v, self.heads)
  free(q, k, v)
  local o = T.attention(qh, kh, vh, {causal = causal or self.causal, scale = self.scale})
  free(qh, kh, vh)
  -- o is a (B,H,N,d) view of a contiguous (B,N,H,d) buffer: back to (B,N,H*d) without a copy
  local merged = nn.permute_reshape(o, {1, 3, 2, 4}, {B, N, self.inner})
  free(o)
  local out = self.to_out:forward(merged)
  free(merged)
  return out
end

-- ---------------------------------------------------------------------------------------------
-- FeedForward with GEGLU (diffusers' default for SD): net.0.proj (dim -> 2*inner), a * gelu(b),
-- net.2 (inner -> dim).

local FeedForward = class("FeedForward")
nn.FeedForward = FeedForward

function FeedForward.new(ws, prefix, dim, mult, dim_out)
  local inner = dim * (mult or 4)
  local self = setmetatable({dim = dim, inner = inner}, FeedForward)
  self.proj = Linear.new(ws, join(prefix, "net.0.proj"), dim, inner * 2)
  self.out = Linear.new(ws, join(prefix, "net.2"), inner, dim_out or dim)
  return self
end

function FeedForward:forward(x)
  local h = self.proj:forward(x)
  local g = h:geglu()
  free(h)
  local out = self.out:forward(g)
  free(g)
  return out
end

-- ---------------------------------------------------------------------------------------------
-- BasicTransformerBlock: pre-LayerNorm self-attention, cross-attention, GEGLU feed-forward, each
-- with a residual connection.

local BasicTransformerBlock = class("BasicTransformerBlock")
nn.BasicTransformerBlock = BasicTransformerBlock

function BasicTransformerBlock.new(ws, prefix, opts)
  local dim, heads, dh = opts.dim, opts.heads, opts.dim_head
  local eps = opts.norm_eps or 1e-5
  local self = setmetatable({dim = dim, only_cross = opts.only_cross_attention}, BasicTransformerBlock)
  self.norm1 = LayerNorm.new(ws, join(prefix, "norm1"), dim, eps)
  self.attn1 = Attention.new(ws, join(prefix, "attn1"), {query_dim = dim, heads = heads, dim_head = dh,
    context_dim = opts.only_cross_attention and opts.cross_attention_dim or nil})
  self.norm2 = LayerNorm.new(ws, join(prefix, "norm2"), dim, eps)
  self.attn2 = Attention.new(ws, join(prefix, "attn2"), {query_dim = dim, heads = heads, dim_head = dh,
    context_dim = opts.cross_attention_dim})
  self.norm3 = LayerNorm.new(ws, join(prefix, "norm3"), dim, eps)
  self.ff = FeedForward.new(ws, join(prefix, "ff"), dim)
  return self
end

-- x (B,N,dim), ctx (B,M,cross_dim) -> (B,N,dim)
function BasicTransformerBlock:forward(x, ctx)
  local n = self.norm1:forward(x)
  local a = self.attn1:forward(n, self.only_cross and ctx or nil)
  free(n)
  local h = a:add_(x)                     -- h = attn1(norm1(x)) + x
  n = self.norm2:forward(h)
  a = self.attn2:forward(n, ctx)
  free(n)
  a:add_(h); free(h); h = a               -- h = attn2(norm2(h), ctx) + h
  n = self.norm3:forward(h)
  local f = self.ff:forward(n)
  free(n)
  f:add_(h); free(h)                      -- ff(norm3(h)) + h
  return f
end

-- ---------------------------------------------------------------------------------------------
-- Transformer2D (diffusers' Transformer2DModel for continuous inputs): GroupNorm (eps 1e-6),
-- proj_in (1x1 conv or Linear), transformer blocks over the H*W tokens, proj_out, residual.

local Transformer2D = class("Transformer2D")
nn.Transformer2D = Transformer2D

function Transformer2D.new(ws, prefix, opts)
  local C, heads = opts.channels, opts.heads
  local dh = opts.dim_head or (C // heads)
  local inner = heads * dh
  local self = setmetatable({channels = C, inner = inner, heads = heads}, Transformer2D)
  self.norm = GroupNorm.new(ws, join(prefix, "norm"), opts.groups or 32, C, 1e-6)
  local conv = not opts.use_linear_projection    -- used when the weights do not say
  self.proj_in = linear_or_1x1(ws, join(prefix, "proj_in"), C, inner, conv)
  self.blocks = {}
  for i = 1, opts.depth or 1 do
    self.blocks[i] = BasicTransformerBlock.new(ws, join(prefix, "transformer_blocks." .. (i - 1)), {
      dim = inner, heads = heads, dim_head = dh, cross_attention_dim = opts.cross_attention_dim,
      norm_eps = 1e-5, only_cross_attention = opts.only_cross_attention})
  end
  self.proj_out = linear_or_1x1(ws, join(prefix, "proj_out"), inner, C, conv)
  return self
end

-- x (B,C,H,W), ctx (B,M,cross_dim) -> (B,C,H,W)
function Transformer2D:forward(x, ctx)
  local tokens = image_to_tokens(self.norm:forward(x))
  local h = self.proj_in:forward(tokens)
  free(tokens)
  for _, blk in ipairs(self.blocks) do
    local nh = blk:forward(h, ctx)
    if nh ~= h then free(h) end
    h = nh
  end
  local o = self.proj_out:forward(h)
  free(h)
  return tokens_to_image_plus(o, x)
end

-- ---------------------------------------------------------------------------------------------
-- ResnetBlock2D: GroupNorm, SiLU, conv3x3, (+ projected time embedding), GroupNorm, SiLU,
-- conv3x3, plus the shortcut (1x1 conv when the channel count changes).
--   opts: cin, cout, temb_channels (nil: no time embedding, as in the VAE), groups, eps,
--         output_scale_factor (1)

local ResnetBlock2D = class("ResnetBlock2D")
nn.ResnetBlock2D = ResnetBlock2D

function ResnetBlock2D.new(ws, prefix, opts)
  local cin, cout = opts.cin, opts.cout or opts.cin
  local groups, eps = opts.groups or 32, opts.eps or 1e-5
  local self = setmetatable({cin = cin, cout = cout, scale = opts.output_scale_factor or 1}, ResnetBlock2D)
  self.norm1 = GroupNorm.new(ws, join(prefix, "norm1"), groups, cin, eps)
  self.conv1 = Conv2d.new(ws, join(prefix, "conv1"), cin, cout, 3, {padding = 1})
  if opts.temb_channels then
    self.time_emb_proj = Linear.new(ws, join(prefix, "time_emb_proj"), opts.temb_channels, cout)
  end
  self.norm2 = GroupNorm.new(ws, join(prefix, "norm2"), opts.groups_out or groups, cout, eps)
  self.conv2 = Conv2d.new(ws, join(prefix, "conv2"), cout, cout, 3, {padding = 1})
  if cin ~= cout or opts.conv_shortcut then
    local k = ws.weights[join(prefix, "conv_shortcut.weight")]
    k = k and k.shape[3] or 1
    self.conv_shortcut = Conv2d.new(ws, join(prefix, "conv_shortcut"), cin, cout, k,
      {padding = (k - 1) // 2})
  end
  self.act = nn.act.silu
  return self
end

-- x (B,cin,H,W), temb (B,temb_channels) or nil -> (B,cout,H,W)
function ResnetBlock2D:forward(x, temb)
  local a = self.norm1:forward(x, true)   -- silu(norm1(x)) in one pass
  local h = self.conv1:forward(a); free(a)
  if self.time_emb_proj and temb then
    local ta = temb:silu()
    local t = self.time_emb_proj:forward(ta); free(ta)
    local tv = t:view{t.shape[1], t.shape[2], 1, 1}
    h:add_(tv)
    free(tv, t)
  end
  a = self.norm2:forward(h, true); free(h)
  h = self.conv2:forward(a); free(a)
  if self.conv_shortcut then
    local s = self.conv_shortcut:forward(x)
    h:add_(s); free(s)
  else
    h:add_(x)
  end
  if self.scale ~= 1 then h:div_(self.scale) end
  return h
end

-- ---------------------------------------------------------------------------------------------
-- Down/up sampling

-- x:narrow(3, y0, h):narrow(4, x0, w) (1-based starts) without an intermediate view left alive
function nn.narrow2(x, y0, h, x0, w)
  local a = x:narrow(3, y0, h)
  local b = a:narrow(4, x0, w)
  a:release()
  return b
end

-- Pads (0,1,0,1): one zero column on the right, one zero row at the bottom (the VAE encoder's
-- asymmetric padding before a stride-2 conv without padding).
function nn.pad_right_bottom(x)
  local N, C, H, W = table.unpack(x.shape)
  local y = T.zeros({N, C, H + 1, W + 1}, x.dtype)
  local r = nn.narrow2(y, 1, H, 1, W)
  r:copy_(x)
  r:release()
  return y
end

local Downsample2D = class("Downsample2D")
nn.Downsample2D = Downsample2D

-- opts: channels, out_channels, padding (1 in the U-Net; 0 in the VAE encoder = asymmetric pad)
function Downsample2D.new(ws, prefix, opts)
  local pad = opts.padding == nil and 1 or opts.padding
  local self = setmetatable({pad = pad}, Downsample2D)
  self.conv = Conv2d.new(ws, join(prefix, "conv"), opts.channels, opts.out_channels or opts.channels, 3,
    {stride = 2, padding = pad})
  return self
end

function Downsample2D:forward(x)
  if self.pad == 0 then
    local p = nn.pad_right_bottom(x)
    local y = self.conv:forward(p)
    free(p)
    return y
  end
  return self.conv:forward(x)
end

local Upsample2D = class("Upsample2D")
nn.Upsample2D = Upsample2D

function Upsample2D.new(ws, prefix, opts)
  local self = setmetatable({}, Upsample2D)
  self.conv = Conv2d.new(ws, join(prefix, "conv"), opts.channels, opts.out_channels or opts.channels, 3,
    {padding = 1})
  return self
end

-- size: optional {h, w} output size (when the skip connection is not exactly 2x).
-- consume: release x as soon as it is upsampled (the caller gives it up), so that x, the
-- upsampled copy and the convolution's output are never alive together.
function Upsample2D:forward(x, size, consume)
  local u
  if size and (size[1] ~= 2 * x.shape[3] or size[2] ~= 2 * x.shape[4]) then
    u = x:interpolate{size = size, mode = "nearest"}
  else
    u = x:upsample_nearest(2)
  end
  if consume then free(x) end
  local y = self.conv:forward(u)
  free(u)
  return y
end

-- ---------------------------------------------------------------------------------------------
-- Timestep embeddings

local function f32(v) return (string.unpack("f", string.pack("f", v))) end
nn.f32 = f32

-- Sinusoidal embedding of a list of timesteps (Lua numbers) -> (B, dim) f32 tensor, computed
-- with float32 rounding at each step the way diffusers' get_timestep_embedding does in torch:
-- exponent = f32(-ln(max_period)) * i / (half - shift); freq = exp(exponent);
-- arg = t * freq * scale; [sin | cos] (or [cos | sin] with flip_sin_to_cos).
function nn.timestep_embedding(ts, dim, flip_sin_to_cos, freq_shift, scale, max_period)
  local half = dim // 2
  local neg_log = f32(-math.log(max_period or 10000))
  local denom = f32(half - (freq_shift or 0))
  scale = scale or 1
  local freqs = {}
  for i = 0, half - 1 do
    local e = f32(f32(neg_log * i) / denom)
    freqs[i + 1] = f32(math.exp(e))
  end
  local vals = {}
  for _, t in ipairs(ts) do
    local tf = f32(t)
    local s, c = {}, {}
    for i = 1, half do
      local arg = f32(tf * freqs[i])
      if scale ~= 1 then arg = f32(scale * arg) end
      s[i], c[i] = f32(math.sin(arg)), f32(math.cos(arg))
    end
    local first, second = s, c
    if flip_sin_to_cos then first, second = c, s end
    for i = 1, half do vals[#vals + 1] = first[i] end
    for i = 1, half do vals[#vals + 1] = second[i] end
    if dim % 2 == 1 then vals[#vals + 1] = 0 end
  end
  return T.from(vals, {#ts, dim})
end

local Timesteps = class("Timesteps")
nn.Timesteps = Timesteps

function Timesteps.new(dim, flip_sin_to_cos, freq_shift)
  return setmetatable({dim = dim, flip = flip_sin_to_cos, shift = freq_shift or 0}, Timesteps)
end

-- ts: list of numbers -> (B, dim)
function Timesteps:forward(ts)
  return nn.timestep_embedding(ts, self.dim, self.flip, self.shift)
end

local TimestepEmbedding = class("TimestepEmbedding")
nn.TimestepEmbedding = TimestepEmbedding

function TimestepEmbedding.new(ws, prefix, cin, dim, act)
  local self = setmetatable({}, TimestepEmbedding)
  self.linear_1 = Linear.new(ws, join(prefix, "linear_1"), cin, dim)
  self.act = nn.activation(act or "silu")
  self.linear_2 = Linear.new(ws, join(prefix, "linear_2"), dim, dim)
  return self
end

function TimestepEmbedding:forward(x)
  local h = self.linear_1:forward(x)
  local a = self.act(h); free(h)
  local y = self.linear_2:forward(a); free(a)
  return y
end

-- ---------------------------------------------------------------------------------------------
-- Spatial self-attention of the VAE mid block (diffusers' Attention with group_norm and a
-- residual connection): one head over all H*W positions, q/k/v with biases.

local SpatialAttention = class("SpatialAttention")
nn.SpatialAttention = SpatialAttention

function SpatialAttention.new(ws, prefix, opts)
  local C = opts.channels
  local dh = opts.dim_head or C
  local heads = C // dh
  local self = setmetatable({channels = C}, SpatialAttention)
  self.group_norm = GroupNorm.new(ws, join(prefix, "group_norm"), opts.groups or 32, C, opts.eps or 1e-6)
  self.attn = Attention.new(ws, prefix, {query_dim = C, heads = heads, dim_head = dh, qkv_bias = true})
  self.rescale = opts.rescale_output_factor or 1
  return self
end

function SpatialAttention:forward(x)
  local tokens = image_to_tokens(self.group_norm:forward(x))
  local a = self.attn:forward(tokens)
  free(tokens)
  local out = tokens_to_image_plus(a, x)
  if self.rescale ~= 1 then out:div_(self.rescale) end
  return out
end

-- ---------------------------------------------------------------------------------------------
-- U-Net / VAE blocks. A block is a list of resnets, optionally each followed by an attention
-- (Transformer2D in the U-Net), and optionally a down/up sampler.

-- Down block (CrossAttnDownBlock2D, DownBlock2D, DownEncoderBlock2D).
--   opts: cin, cout, layers, temb_channels, groups, eps, attention (table of Transformer2D opts
--         or nil), downsample (bool), downsample_padding, skips (false: the VAE encoder, which
--         keeps no skip outputs)
-- A block's Transformer2D: the block's attention opts (copied) over `channels` channels.
local function block_transformer(ws, prefix, attention, channels)
  local a = {}
  for k, v in pairs(attention) do a[k] = v end
  a.channels = channels
  return Transformer2D.new(ws, prefix, a)
end

-- attn:forward(h, ctx), releasing h, when a block has an attention at this position; else h.
local function attend(attn, h, ctx)
  if not attn then return h end
  local a = attn:forward(h, ctx)
  free(h)
  return a
end

local DownBlock = class("DownBlock")
nn.DownBlock = DownBlock

function DownBlock.new(ws, prefix, opts)
  local self = setmetatable({resnets = {}, attentions = {}, skips = opts.skips ~= false}, DownBlock)
  for i = 1, opts.layers do
    self.resnets[i] = ResnetBlock2D.new(ws, join(prefix, "resnets." .. (i - 1)), {
      cin = i == 1 and opts.cin or opts.cout, cout = opts.cout, temb_channels = opts.temb_channels,
      groups = opts.groups, eps = opts.eps, output_scale_factor = opts.output_scale_factor})
    if opts.attention then
      self.attentions[i] = block_transformer(ws, join(prefix, "attentions." .. (i - 1)), opts.attention, opts.cout)
    end
  end
  if opts.downsample then
    self.downsampler = Downsample2D.new(ws, join(prefix, "downsamplers.0"), {channels = opts.cout,
      padding = opts.downsample_padding})
  end
  return self
end

-- Returns the output and the list of skip outputs (each resnet/attention output, then the
-- downsampled one). The skip outputs are new tensors owned by the caller; the output is the last
-- of them. Without skips (VAE) the list is empty and intermediates are released at once.
function DownBlock:forward(x, temb, ctx)
  local skips = {}
  local h = x
  for i, resnet in ipairs(self.resnets) do
    local r = attend(self.attentions[i], resnet:forward(h, temb), ctx)
    if not self.skips and h ~= x then free(h) end
    h = r
    if self.skips then skips[#skips + 1] = h end
  end
  if self.downsampler then
    local d = self.downsampler:forward(h)
    if not self.skips and h ~= x then free(h) end
    h = d
    if self.skips then skips[#skips + 1] = h end
  end
  return h, skips
end

-- Up block (CrossAttnUpBlock2D, UpBlock2D in the U-Net; UpDecoderBlock2D in the VAE, which has no
-- skip connections).
--   opts: cin (channels of the skip from the matching down level), prev (channels coming from
--         below), cout, layers, temb_channels, groups, eps, attention, upsample (bool),
--         skips (true in the U-Net)
local UpBlock = class("UpBlock")
nn.UpBlock = UpBlock

function UpBlock.new(ws, prefix, opts)
  local self = setmetatable({resnets = {}, attentions = {}, skips = opts.skips}, UpBlock)
  for i = 1, opts.layers do
    local cin
    if opts.skips then
      local skip_ch = (i == opts.layers) and opts.cin or opts.cout
      cin = (i == 1 and opts.prev or opts.cout) + skip_ch
    else
      cin = i == 1 and opts.cin or opts.cout
    end
    self.resnets[i] = ResnetBlock2D.new(ws, join(prefix, "resnets." .. (i - 1)), {
      cin = cin, cout = opts.cout, temb_channels = opts.temb_channels, groups = opts.groups,
      eps = opts.eps, output_scale_factor = opts.output_scale_factor})
    if opts.attention then
      self.attentions[i] = block_transformer(ws, join(prefix, "attentions." .. (i - 1)), opts.attention, opts.cout)
    end
  end
  if opts.upsample then
    self.upsampler = Upsample2D.new(ws, join(prefix, "upsamplers.0"), {channels = opts.cout})
  end
  return self
end

-- skips: the matching down outputs, consumed from the end of the list (popped and released).
-- upsample_size: {h, w} of the next level's skip, or nil.
-- consume: the block releases x itself as soon as it is used (the caller gives it up; at the
-- VAE's 512x512 levels that is 134-268 MB less at the decoder's peak).
function UpBlock:forward(x, temb, ctx, skips, upsample_size, consume)
  local h = x
  local function done(t) -- t is used up: release it unless it is the caller's x
    if t ~= x or consume then free(t) end
  end
  for i, resnet in ipairs(self.resnets) do
    local inp = h
    if self.skips then
      local s = table.remove(skips)
      inp = T.cat({h, s}, 2)
      free(s)
      done(h)
    end
    local r = resnet:forward(inp, temb)
    done(inp)
    h = attend(self.attentions[i], r, ctx)
  end
  if self.upsampler then
    h = self.upsampler:forward(h, upsample_size, h ~= x or consume)
  end
  return h
end

-- Mid block: resnet, then (attention, resnet) pairs. The attention is a Transformer2D (U-Net,
-- UNetMidBlock2DCrossAttn) or a SpatialAttention (VAE, UNetMidBlock2D).
--   opts: channels, temb_channels, groups, eps, layers (1), attention (Transformer2D opts),
--         spatial_attention (bool), output_scale_factor
local MidBlock = class("MidBlock")
nn.MidBlock = MidBlock

function MidBlock.new(ws, prefix, opts)
  local C = opts.channels
  local self = setmetatable({resnets = {}, attentions = {}}, MidBlock)
  local function resnet(i)
    return ResnetBlock2D.new(ws, join(prefix, "resnets." .. i), {cin = C, cout = C,
      temb_channels = opts.temb_channels, groups = opts.groups, eps = opts.eps,
      output_scale_factor = opts.output_scale_factor})
  end
  self.resnets[1] = resnet(0)
  for i = 1, opts.layers or 1 do
    local p = join(prefix, "attentions." .. (i - 1))
    if opts.spatial_attention then
      self.attentions[i] = SpatialAttention.new(ws, p, {channels = C, groups = opts.groups,
        eps = opts.eps, dim_head = opts.dim_head or C})
    elseif opts.attention then
      self.attentions[i] = block_transformer(ws, p, opts.attention, C)
    end
    self.resnets[i + 1] = resnet(i)
  end
  return self
end

function MidBlock:forward(x, temb, ctx)
  local h = self.resnets[1]:forward(x, temb)
  for i = 2, #self.resnets do
    h = attend(self.attentions[i - 1], h, ctx)
    local r = self.resnets[i]:forward(h, temb)
    free(h)
    h = r
  end
  return h
end

return nn
