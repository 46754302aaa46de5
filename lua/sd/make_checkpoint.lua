-- sd.make_checkpoint: random-weight single-file checkpoints in the original (LDM) layout, for
-- tests, benchmarks and trying the whole pipeline without downloading a model
-- (`sdlua make-checkpoint`, docs/cli.md).
--
--   local mc = require "sd.make_checkpoint"
--   local r = mc.write{arch = "tiny", output = "models/tiny/tiny.safetensors"}   -- f16, seed 0
--   r.path, r.tensors, r.parameters, r.bytes, r.vocab ({vocab=, merges=} for tiny models)
--   mc.layout("sd15")      -- the {name, shape, dtype, ...} list that write() fills
--
-- Nothing here defines an architecture: the names and shapes come from sd.arch (the presets and
-- their parameter lists) through sd.loader.single_file_layout(preset, {release = true}), the same
-- code path the loader uses to map a file, so a written file loads with sd.load.
--
-- Initial values, by tensor kind, so that activations stay in a realistic range through a whole
-- sampling run (no NaN or inf in f16 or f32):
--   * norm weights 1, every bias 0;
--   * embeddings (token, position) ~ N(0, 0.02);
--   * convolution and linear weights ~ N(0, gain^2 / fan_in) with gain 1, except the last
--     projection of each residual branch (resnet conv2, attention to_out, feed-forward output,
--     transformer proj_out, CLIP out_proj / fc2), whose gain RESIDUAL_GAIN keeps the residual
--     stream bounded however many blocks add to it;
--   * SD 1.5's position_ids 0..76; SD 2.1's logit_scale log(100).
local arch = require "sd.arch"
local loader = require "sd.loader"

local M = {}

M.RESIDUAL_GAIN = 0.25
M.EMBEDDING_STD = 0.02

-- Tiny checkpoints get a byte-level CLIP vocabulary (512 byte symbols + 2 specials), so the real
-- tokenizer runs on them without the 1.3 MB CLIP files.
M.TINY_VOCAB_SIZE = 514

-- Names accepted by --arch, with what they make.
M.ARCHS = {
  sd15 = {preset = "sd15", about = "Stable Diffusion 1.5 (as v1-5-pruned-emaonly.safetensors, 1.07 G parameters)"},
  sd21 = {preset = "sd21", about = "Stable Diffusion 2.1 768-v (as v2-1_768-ema-pruned.safetensors, 1.30 G parameters)"},
  tiny = {preset = "tiny_sd1", tiny = true, about = "tiny SD 1.x-shaped model (2.2 M parameters) with a byte-level vocabulary"},
  tiny_sd1 = {preset = "tiny_sd1", tiny = true, about = "the same as tiny"},
  tiny_sd2 = {preset = "tiny_sd2", tiny = true, about = "tiny SD 2.x-shaped model (v-prediction) with a byte-level vocabulary"},
}
M.ARCH_NAMES = {"sd15", "sd21", "tiny", "tiny_sd1", "tiny_sd2"}

-- The preset written for an --arch name (a copy: tiny ones get the small vocabulary).
function M.preset(name)
  local a = M.ARCHS[name]
  if not a then
    error(("make-checkpoint: unknown architecture '%s' (known: %s)"):format(tostring(name),
      table.concat(M.ARCH_NAMES, ", ")), 0)
  end
  local p = arch.copy(arch.presets[a.preset])
  if a.tiny then p.text_encoder.vocab_size = M.TINY_VOCAB_SIZE end
  return p, a
end

-- The full list of tensors of a file: single_file_layout's entries, each with `param` (the
-- sd.arch record of its first diffusers source: kind, leaf) and `dtype` when fixed.
function M.layout(name)
  local preset = type(name) == "table" and name or M.preset(name)
  local list = loader.single_file_layout(preset, {release = true})
  local full = preset
  if preset.release and preset.release.text_layers then
    full = arch.copy(preset)
    full.text_encoder.num_hidden_layers = preset.release.text_layers
  end
  local params = {}
  for _, comp in pairs(arch.params(full)) do
    for _, p in ipairs(comp) do params[p.name] = p end
  end
  for _, e in ipairs(list) do
    e.param = e.sources[1] and params[e.sources[1]]
  end
  return list
end

local RESIDUAL_OUT = {"conv2%.weight$", "to_out%.0%.weight$", "ff%.net%.2%.weight$", "^proj_out%.weight$",
  "out_proj%.weight$", "fc2%.weight$"}

-- How one entry is filled: "ones", "zeros", "arange", "logit_scale", or "normal", std.
function M.init_rule(e)
  if e.init == "arange" or e.init == "logit_scale" then return e.init end
  local shape = e.shape
  if #shape == 0 then return "zeros" end
  local leaf = e.param and e.param.leaf or e.name
  local kind = e.param and e.param.kind
  if #shape == 1 then
    if leaf:match("weight$") then return "ones" end -- every 1-D weight is a norm's
    return "zeros"
  end
  if kind == "embeddings" then return "normal", M.EMBEDDING_STD end
  local fan_in = 1
  for i = 2, #shape do fan_in = fan_in * shape[i] end
  local gain = 1
  if kind ~= "vae_attention" or leaf:match("^to_out") then
    for _, pat in ipairs(RESIDUAL_OUT) do
      if leaf:match(pat) then gain = M.RESIDUAL_GAIN; break end
    end
  end
  return "normal", gain / math.sqrt(fan_in)
end

-- The tensor of one entry, drawn from generator g, in `dtype` (the entry's own dtype wins).
function M.make_tensor(e, g, dtype)
  local T = require("sd.core").tensor
  local rule, std = M.init_rule(e)
  local t
  if rule == "arange" then
    local n = 1
    for _, d in ipairs(e.shape) do n = n * d end
    t = T.arange(0, n):view(e.shape)
  elseif rule == "logit_scale" then
    t = T.full(e.shape, math.log(100))
  elseif rule == "ones" then
    t = T.ones(e.shape)
  elseif rule == "zeros" then
    t = T.zeros(e.shape)
  else
    t = g:randn(e.shape)
    t:mul_(std)
  end
  local want = e.dtype or dtype
  if t.dtype ~= want then
    local c = t:to(want)
    t:release()
    t = c
  end
  return t
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local read_all = require("sd.loader").read_file

local function write_atomic(path, data)
  local tmp = path .. ".tmp" .. tostring(os.time())
  local f, err = io.open(tmp, "wb")
  if not f then error("make-checkpoint: cannot write " .. path .. ": " .. tostring(err), 0) end
  f:write(data)
  f:close()
  local ok, rerr = os.rename(tmp, path)
  if not ok then os.remove(tmp); error("make-checkpoint: cannot write " .. path .. ": " .. tostring(rerr), 0) end
end

-- The byte-level CLIP vocabulary: vocab.json text (ids 0..255 the byte symbols in CLIP's order,
-- 256..511 the same with "</w>", 512 <|startoftext|>, 513 <|endoftext|>) and merges.txt text
-- (the version line, no merges).
function M.tiny_vocab()
  local _, cs = require("sd.tokenizer").byte_order()
  local entries = {}
  local function esc(s) return (s:gsub('[%c"\\]', function(c) return ("\\u%04x"):format(c:byte()) end)) end
  for i = 1, 256 do entries[#entries + 1] = ('"%s": %d'):format(esc(utf8.char(cs[i])), i - 1) end
  for i = 1, 256 do entries[#entries + 1] = ('"%s</w>": %d'):format(esc(utf8.char(cs[i])), 255 + i) end
  entries[#entries + 1] = '"<|startoftext|>": 512'
  entries[#entries + 1] = '"<|endoftext|>": 513'
  return "{" .. table.concat(entries, ", ") .. "}\n", "#version: 0.2\n"
end

-- Raises when dir holds a vocabulary other than the tiny one.
function M.check_vocab_dir(dir)
  local vocab, merges = M.tiny_vocab()
  for _, f in ipairs{{dir .. "/vocab.json", vocab}, {dir .. "/merges.txt", merges}} do
    local old = read_all(f[1])
    if old and old ~= f[2] then
      error(("make-checkpoint: %s already holds another vocabulary; write the tiny checkpoint into a folder of its own")
        :format(f[1]), 0)
    end
  end
end

-- Writes vocab.json and merges.txt into dir; refuses to replace a different vocabulary.
function M.write_tiny_vocab(dir)
  M.check_vocab_dir(dir)
  local vocab, merges = M.tiny_vocab()
  local vp, mp = dir .. "/vocab.json", dir .. "/merges.txt"
  write_atomic(vp, vocab)
  write_atomic(mp, merges)
  return {vocab = vp, merges = mp}
end

-- write{arch=, output=, dtype="f16"|"f32", seed=0, vocab=<true for tiny>, on_tensor=function(i, n, name)}
function M.write(opts)
  assert(type(opts) == "table", "make_checkpoint.write expects a table")
  local preset, a = M.preset(opts.arch or "tiny")
  local dtype = opts.dtype or "f16"
  if dtype ~= "f16" and dtype ~= "f32" and dtype ~= "bf16" then
    error("make-checkpoint: --dtype must be f16, f32 or bf16, got " .. tostring(dtype), 0)
  end
  local out = opts.output
  if type(out) ~= "string" or out == "" then error("make-checkpoint: an output file (-o FILE) is needed", 0) end
  local seed = opts.seed or 0
  local want_vocab = opts.vocab
  if want_vocab == nil then want_vocab = a.tiny end
  if want_vocab then M.check_vocab_dir(dirname(out)) end -- before any work
  local core = require "sd.core"
  local list = M.layout(preset)
  local g = core.rng.torch(seed)
  local tensors, total, bytes = {}, 0, 0
  local size = {f16 = 2, bf16 = 2, f32 = 4, i64 = 8}
  for i, e in ipairs(list) do
    local t = M.make_tensor(e, g, dtype)
    tensors[e.name] = t
    local n = t:numel()
    total = total + n
    bytes = bytes + n * (size[t.dtype] or 4)
    if opts.on_tensor then opts.on_tensor(i, #list, e.name) end
  end
  local meta = {
    format = "pt",
    ["sdlua.arch"] = opts.arch or "tiny",
    ["sdlua.random"] = "true",
    ["sdlua.seed"] = tostring(seed),
    ["sdlua.note"] = "random weights made by `sdlua make-checkpoint`: its images are noise from an untrained model",
  }
  local ok, err = pcall(core.safetensors.save, out, tensors, meta)
  for _, t in pairs(tensors) do t:release() end
  if not ok then
    if tostring(err):find("interrupted!", 1, true) then error(err, 0) end
    error("make-checkpoint: " .. tostring(err), 0)
  end
  local vocab = want_vocab and M.write_tiny_vocab(dirname(out)) or nil
  return {path = out, tensors = #list, parameters = total, bytes = bytes, vocab = vocab, arch = opts.arch or "tiny",
    dtype = dtype, seed = seed}
end

-- true when a checkpoint's metadata says make-checkpoint wrote it
function M.is_random(path)
  local ok, _, meta = pcall(require("sd.core").safetensors.header, path)
  return ok and type(meta) == "table" and meta["sdlua.random"] == "true" or false
end

return M
