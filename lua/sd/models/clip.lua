-- sd.models.clip: the CLIP text encoder (transformers' CLIPTextModel) that turns 77 token ids into
-- the prompt embeddings the U-Net attends to.
--
--   local CLIP = require "sd.models.clip"
--   local te = CLIP.new(config, weights [, {quiet = true, clip_skip = 1}])
--   local emb = te:forward(ids)                       -- (B,77) ids -> (B,77,hidden)
--   local emb, hidden = te:forward(ids, {clip_skip = 2, hidden_states = true})
--
-- Architecture: token embedding + position embedding; N pre-LayerNorm transformer layers
-- (causal self-attention, MLP with quick_gelu (SD 1.x) or gelu (SD 2.x)); final LayerNorm.
-- Weights use transformers' names (text_model.embeddings.token_embedding.weight, ...); a
-- `text_model.` prefix is optional.
local nn = require "sd.nn"

local CLIP = {}
CLIP.__index = CLIP
CLIP.__call = function(self, ...) return self:forward(...) end

-- One encoder layer: x + attn(ln1(x)) then x + mlp(ln2(x)).
local Layer = nn.class("CLIPEncoderLayer")

function Layer.new(ws, prefix, c)
  local d = c.hidden_size
  local self = setmetatable({}, Layer)
  self.layer_norm1 = nn.LayerNorm.new(ws, prefix .. ".layer_norm1", d, c.layer_norm_eps)
  self.self_attn = nn.Attention.new(ws, prefix .. ".self_attn", {query_dim = d, heads = c.num_attention_heads,
    qkv_bias = true, causal = true, names = {q = "q_proj", k = "k_proj", v = "v_proj", out = "out_proj"}})
  self.layer_norm2 = nn.LayerNorm.new(ws, prefix .. ".layer_norm2", d, c.layer_norm_eps)
  self.fc1 = nn.Linear.new(ws, prefix .. ".mlp.fc1", d, c.intermediate_size)
  self.fc2 = nn.Linear.new(ws, prefix .. ".mlp.fc2", c.intermediate_size, d)
  self.act = nn.activation(c.hidden_act)
  return self
end

function Layer:forward(x)
  local n = self.layer_norm1:forward(x)
  local h = self.self_attn:forward(n, nil, true)
  nn.free(n)
  h:add_(x)
  n = self.layer_norm2:forward(h)
  local f = self.fc1:forward(n); nn.free(n)
  local a = self.act(f); nn.free(f)
  local o = self.fc2:forward(a); nn.free(a)
  o:add_(h); nn.free(h)
  return o
end

local defaults = {vocab_size = 49408, hidden_size = 768, intermediate_size = 3072, num_hidden_layers = 12,
  num_attention_heads = 12, max_position_embeddings = 77, hidden_act = "quick_gelu", layer_norm_eps = 1e-5}

-- config: a transformers CLIPTextConfig table (text_encoder/config.json); weights: name -> tensor.
-- opts.quiet: no unused-weights warning; opts.clip_skip: default clip skip for forward;
-- opts.num_layers: build only the first n layers (e.g. SD 2.x single files, which use the
-- penultimate layer of a 24-layer model).
function CLIP.new(config, weights, opts)
  opts = opts or {}
  local c = nn.with_defaults(defaults, config)
  weights = weights or {}
  -- accept names with or without the "text_model." prefix
  local prefix = "text_model."
  if weights["embeddings.token_embedding.weight"] and not weights[prefix .. "embeddings.token_embedding.weight"] then
    prefix = ""
  end
  local ws = nn.store(weights, "text_encoder", opts.init)
  -- config.layer = "penultimate" (the loader sets it for OpenCLIP towers used as SD 2.x does):
  -- the model's own output is the penultimate layer; clip_skip counts from there.
  if c.layer ~= nil and c.layer ~= "last" and c.layer ~= "penultimate" then
    error("text_encoder config: layer must be \"last\" or \"penultimate\", got " .. tostring(c.layer), 2)
  end
  local self = setmetatable({config = c, clip_skip = opts.clip_skip or 1,
    base_skip = c.layer == "penultimate" and 1 or 0}, CLIP)
  local d = c.hidden_size
  self.token_embedding = nn.Embedding.new(ws, prefix .. "embeddings.token_embedding", c.vocab_size, d, true)
  self.position_embedding = nn.Embedding.new(ws, prefix .. "embeddings.position_embedding",
    c.max_position_embeddings, d)
  self.layers = {}
  local n = opts.num_layers or c.num_hidden_layers
  for i = 1, n do
    self.layers[i] = Layer.new(ws, prefix .. "encoder.layers." .. (i - 1), c)
  end
  self.final_layer_norm = nn.LayerNorm.new(ws, prefix .. "final_layer_norm", d, c.layer_norm_eps)
  -- text_projection / position_ids belong to CLIPTextModelWithProjection / old checkpoints
  if opts.num_layers then
    for k in pairs(weights) do
      local li = k:match("encoder%.layers%.(%d+)%.")
      if li and tonumber(li) >= n then ws.used[k] = true end
    end
  end
  if weights[prefix .. "embeddings.position_ids"] then ws.used[prefix .. "embeddings.position_ids"] = true end
  nn.report_unused(self, ws, opts)
  return self
end

-- ids: (B,L) tensor of integer values (any dtype) or nested Lua lists.
-- opts.clip_skip (AUTOMATIC1111's meaning): 1 = last layer, 2 = penultimate layer, ...; the
-- final LayerNorm is applied to the chosen layer's output in every case. With config.layer =
-- "penultimate" the count starts one layer earlier (clip_skip = 1 uses the penultimate layer).
-- opts.hidden_states = true: also returns a table hs with hs[0] = embeddings and hs[k] = output
-- of layer k (before the final LayerNorm), as transformers' output_hidden_states.
-- Returns (B,L,hidden) f32.
function CLIP:forward(ids, opts)
  opts = opts or {}
  local skip = opts.clip_skip or self.clip_skip or 1
  local n = #self.layers
  if type(skip) ~= "number" or skip % 1 ~= 0 or skip < 1 or skip + self.base_skip > n then
    error(string.format("clip: clip_skip must be an integer in 1..%d, got %s", n - self.base_skip, tostring(skip)), 2)
  end
  skip = math.tointeger(skip) + self.base_skip
  local want_hs = opts.hidden_states
  local given = ids
  ids = nn.as_ids(ids)
  if ids.ndim == 1 then
    local v = ids:view{1, ids.shape[1]}
    if ids ~= given then ids:release() end
    ids = v
  end
  local L = ids.shape[2]
  if L > self.position_embedding.num then
    error(string.format("clip: %d tokens, the model has %d positions", L, self.position_embedding.num), 2)
  end
  local tok = self.token_embedding:forward(ids)
  if ids ~= given then ids:release() end
  local pos = self.position_embedding.weight:narrow(1, 1, L)
  local h = tok:add_(pos)
  pos:release()
  local hs = want_hs and {[0] = h} or nil
  local last = n - (skip - 1)               -- index of the layer whose output is used
  for i = 1, last do
    local nh = self.layers[i]:forward(h)
    if not want_hs then nn.free(h) end
    h = nh
    if want_hs then hs[i] = h end
  end
  if want_hs then
    for i = last + 1, n do hs[i] = self.layers[i]:forward(hs[i - 1]) end
  end
  local out = self.final_layer_norm:forward(h)
  if not want_hs then nn.free(h) end
  return out, hs
end

return CLIP
