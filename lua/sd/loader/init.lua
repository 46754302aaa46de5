-- sd.loader: open a checkpoint (single .safetensors / .ckpt file in the original LDM layout, or a
-- diffusers folder), recognise it, derive its configuration and hand out diffusers-named weights.
--
--   local L = require "sd.loader"
--   local m = L.open(path, opts)
--   m.family ("sd1"|"sd2"), m.layout ("single"|"diffusers"), m.format ("safetensors"|"ckpt"),
--   m.inpaint, m.path, m.unet = {config=, weights=}, m.vae = {...}, m.text_encoder = {...},
--   m.scheduler_config, m.tokenizer_files ({vocab=, merges=} | {bpe=} | nil), m.tokenizer_error
--   (= m.tokenizer_missing: the message to raise when a prompt must be encoded without a vocabulary),
--   m.pad ("eos"|"zero"), m.preset, m.notes, m.metadata
--
-- L.plan(header, opts) does the recognition and key mapping on a header alone
-- (name -> {shape=, dtype=}); L.header(path) / L.inspect(path, opts) describe a single file
-- without loading weights; L.single_file_layout(preset [, {release = true}]) lists the LDM names
-- for writing files.
-- See docs/checkpoints.md.
local arch = require "sd.arch"
local detect = require "sd.loader.detect"
local keymap_unet = require "sd.loader.keymap_unet"
local keymap_vae = require "sd.loader.keymap_vae"
local keymap_clip = require "sd.loader.keymap_clip"

local M = {}

local function core() return require "sd.core" end

----------------------------------------------------------------------------------------------------
-- small helpers

local function file_exists(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local ok, _, code = f:read(0)
  f:close()
  return ok ~= nil or code == nil
end

-- true when path is a directory (io.open succeeds on directories on Linux, reading fails)
local function is_dir(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local _, _, code = f:read(1)
  f:close()
  return code == 21 -- EISDIR
end
M.is_dir = is_dir

local function regular_file(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local _, _, code = f:read(0)
  f:close()
  return code == nil and not is_dir(path)
end

local function dirname(path)
  local d = path:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

-- The bytes of a file, or nil when it cannot be opened.
local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
M.read_file = read_all

-- JSON with integral numbers as Lua integers and nulls dropped (configs feed shapes and names)
local function normalize_json(v)
  local cjson = require "cjson"
  if v == cjson.null then return nil end
  if type(v) == "number" then
    local i = math.tointeger(v)
    if i and v == math.floor(v) and math.abs(v) < 2^53 then return i end
    return v
  end
  if type(v) == "table" then
    local r = {}
    for k, x in pairs(v) do r[k] = normalize_json(x) end
    return r
  end
  return v
end

local function read_json(path, what)
  local s = read_all(path)
  if not s then return nil end
  local cjson = require "cjson"
  local ok, v = pcall(cjson.decode, s)
  if not ok then error(("sd.load: %s (%s) is not valid JSON: %s"):format(what or "file", path, tostring(v)), 0) end
  return normalize_json(v)
end
M.read_json = read_json

----------------------------------------------------------------------------------------------------
-- safetensors access: the core reader when present, otherwise a header parsed here and
-- zero-copy views through T.from_file.

local ST_DTYPES = {F32 = "f32", F16 = "f16", BF16 = "bf16", I64 = "i64", I32 = "i32", U8 = "u8", F64 = "f64",
  I16 = "i16", I8 = "i8", BOOL = "bool", U16 = "u16", U32 = "u32", U64 = "u64", F8_E4M3 = "f8_e4m3", F8_E5M2 = "f8_e5m2"}
local DT_SIZE = {f32 = 4, f16 = 2, bf16 = 2, i64 = 8, i32 = 4, u8 = 1, f64 = 8, i16 = 2, i8 = 1, bool = 1, u16 = 2,
  u32 = 4, u64 = 8, f8_e4m3 = 1, f8_e5m2 = 1}
M.DT_SIZE = DT_SIZE

local function norm_dtype(d)
  if type(d) ~= "string" then return d end
  return ST_DTYPES[d] or ST_DTYPES[d:upper()] or d:lower()
end

local function norm_shape(s)
  local r = {}
  for i, d in ipairs(s or {}) do r[i] = math.tointeger(d) or d end
  return r
end

-- Lua reader of a safetensors header: name -> {dtype=, shape=, offset= (absolute byte offset)}, metadata
local function parse_st_header(path)
  local f, err = io.open(path, "rb")
  if not f then error("sd.load: cannot open " .. path .. ": " .. tostring(err), 0) end
  local size = f:seek("end")
  f:seek("set", 0)
  local head = f:read(8)
  if not head or #head < 8 then f:close(); return nil, "file too short" end
  local n = string.unpack("<I8", head)
  if n < 2 or n > 100 * 1024 * 1024 or 8 + n > size then f:close(); return nil, "bad header length" end
  local js = f:read(n)
  f:close()
  if not js or #js ~= n or js:sub(1, 1) ~= "{" then return nil, "header is not a JSON object" end
  local ok, h = pcall(require("cjson").decode, js)
  if not ok or type(h) ~= "table" then return nil, "header is not valid JSON" end
  local meta = h.__metadata__
  h.__metadata__ = nil
  local data0, out = 8 + n, {}
  for name, e in pairs(h) do
    if type(e) ~= "table" or type(e.dtype) ~= "string" or type(e.shape) ~= "table" or type(e.data_offsets) ~= "table" then
      return nil, "bad header entry for " .. tostring(name)
    end
    local dt = norm_dtype(e.dtype)
    local shape = norm_shape(e.shape)
    local numel = 1
    for _, d in ipairs(shape) do numel = numel * d end
    local b, en = math.tointeger(e.data_offsets[1]), math.tointeger(e.data_offsets[2])
    if not b or not en or en < b or data0 + en > size or (DT_SIZE[dt] and en - b ~= numel * DT_SIZE[dt]) then
      return nil, "bad data offsets for " .. tostring(name)
    end
    out[name] = {dtype = dt, shape = shape, offset = data0 + b}
  end
  return out, (meta ~= require("cjson").null) and meta or nil
end

M.parse_safetensors_header = parse_st_header

-- name -> {dtype=, shape=} of a safetensors file; raises a clear error for non-safetensors files.
function M.safetensors_header(path)
  local st = core().safetensors
  if st and st.header then
    local ok, h, meta = pcall(st.header, path)
    if ok and type(h) == "table" then
      local out = {}
      for name, e in pairs(h) do
        if name ~= "__metadata__" then out[name] = {dtype = norm_dtype(e.dtype), shape = norm_shape(e.shape)} end
      end
      return out, meta or (type(h.__metadata__) == "table" and h.__metadata__ or nil)
    end
  end
  local h, meta = parse_st_header(path)
  if not h then
    error(("sd.load: %s is not a safetensors file (%s)"):format(path, meta), 0)
  end
  return h, meta
end

-- name -> tensor (mmap'd views) of a safetensors file
-- (tensors of dtypes the runtime cannot hold, e.g. f64 buffers, are left out; the key plan
-- reports them if a model weight is among them)
local LOADABLE = {f32 = true, f16 = true, bf16 = true, i64 = true, i32 = true, u8 = true}
function M.safetensors_load(path)
  local st = core().safetensors
  local first_err
  if st and st.load then
    local ok, w, meta = pcall(st.load, path)
    if ok then return w, meta end
    first_err = w
  end
  local h, meta = parse_st_header(path)
  if not h then error(first_err or ("sd.load: %s is not a safetensors file (%s)"):format(path, meta), 0) end
  local T = core().tensor
  if not T.from_file then error(first_err or "sd.load: the core has neither safetensors.load nor tensor.from_file", 0) end
  local w = {}
  for name, e in pairs(h) do
    if LOADABLE[e.dtype] then w[name] = T.from_file(path, e.offset, e.dtype, e.shape) end
  end
  return w, meta
end

----------------------------------------------------------------------------------------------------
-- Key plans: which source tensor (and view) each diffusers-named weight comes from.

-- Tensors in single files that are not model weights (or not used by inference).
M.IGNORABLE = {
  "^betas$", "^alphas_cumprod$", "^alphas_cumprod_prev$", "^sqrt_alphas_cumprod$", "^sqrt_one_minus_alphas_cumprod$",
  "^log_one_minus_alphas_cumprod$", "^sqrt_recip_alphas_cumprod$", "^sqrt_recipm1_alphas_cumprod$",
  "^posterior_variance$", "^posterior_log_variance_clipped$", "^posterior_mean_coef1$", "^posterior_mean_coef2$",
  "^lvlb_weights$", "^logvar$", "^model_ema%.", "^first_stage_model%.loss%.",
  "position_ids$", "^cond_stage_model%.model%.text_projection$", "^cond_stage_model%.model%.logit_scale$",
  "^cond_stage_model%.model%.attn_mask$",
}

local function ignorable(name)
  for _, p in ipairs(M.IGNORABLE) do
    if name:find(p) then return true end
  end
  return false
end
M.ignorable = ignorable

local function shape_str(s)
  local t = {}
  for i, d in ipairs(s or {}) do t[i] = tostring(d) end
  return "[" .. table.concat(t, ", ") .. "]"
end

local function same_shape(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

-- Checks a set of maps (component -> {target -> entry}) against a header: every entry's source
-- present with the right shape, every header tensor consumed or ignorable. Raises otherwise.
local function check_consumption(header, maps, what, ignore)
  local used, missing, wrong = {}, {}, {}
  for _, comp in ipairs{"unet", "vae", "text_encoder"} do
    local map = maps[comp]
    if map then
      for target, e in pairs(map) do
        local h = header[e.src]
        if not h then
          missing[#missing + 1] = e.src
        else
          used[e.src] = true
          local want = e.src_shape or e.shape
          if not same_shape(h.shape, want) then
            -- a [C, C] weight stored as [C, C, 1, 1] (or back) is accepted through a view
            local n1, n2 = 1, 1
            for _, d in ipairs(h.shape) do n1 = n1 * d end
            for _, d in ipairs(want) do n2 = n2 * d end
            if n1 == n2 and not e.narrow and (#h.shape == 4 or #want == 4) and h.shape[1] == want[1] then
              e.src_shape = h.shape
            else
              wrong[#wrong + 1] = ("%s is %s, expected %s"):format(e.src, shape_str(h.shape), shape_str(want))
            end
          end
          if target then e.dtype = h.dtype end
        end
      end
    end
  end
  local unexpected = {}
  for name in pairs(header) do
    if not used[name] and not (ignore or ignorable)(name) then unexpected[#unexpected + 1] = name end
  end
  table.sort(missing); table.sort(unexpected); table.sort(wrong)
  local problems = {}
  if #missing > 0 then
    problems[#problems + 1] = ("%d missing tensors: %s"):format(#missing, detect.list_some(missing, 5))
  end
  if #wrong > 0 then
    problems[#problems + 1] = ("%d tensors with unexpected shapes: %s"):format(#wrong, detect.list_some(wrong, 3))
  end
  if #unexpected > 0 then
    problems[#problems + 1] = ("%d unexpected tensors: %s"):format(#unexpected, detect.list_some(unexpected, 5))
  end
  if #problems > 0 then
    error(("sd.load: %s does not match its derived architecture: %s"):format(what, table.concat(problems, "; ")), 0)
  end
end
M.check_consumption = check_consumption

-- EMA weights of LDM checkpoints: model.diffusion_model.a.b.c -> model_ema.diffusion_modelabc
local function ema_name(src)
  local rest = src:match("^model%.(.*)$")
  return rest and ("model_ema." .. rest:gsub("%.", "")) or src
end

-- header (name -> {shape=, dtype=}) of a single-file checkpoint -> plan:
-- {info = <detect.derive result>, maps = {unet = {target -> entry}, vae = ..., text_encoder = ...}}
-- Raises when the file is not a supported checkpoint or tensors are missing / unexpected.
function M.plan(header, opts, what)
  opts = opts or {}
  local info = detect.derive(header, opts)
  local maps = {}
  maps.unet = keymap_unet.build(info.unet)
  maps.vae = keymap_vae.build(info.vae)
  if info.text_layout == "openclip" then
    maps.text_encoder = keymap_clip.build_openclip(info.text_encoder)
  else
    local prefix = info.hf_prefix
    local map = keymap_clip.build_hf(info.text_encoder, prefix)
    if not header[prefix .. "text_model.embeddings.token_embedding.weight"] then
      -- old transformers layout without the text_model level
      for _, e in pairs(map) do e.src = prefix .. e.src:sub(#prefix + 1):gsub("^text_model%.", "") end
    end
    maps.text_encoder = map
  end
  if opts.ema then
    local n = 0
    for k in pairs(header) do if k:find("^model_ema%.") then n = n + 1 end end
    if n < 100 then
      info.notes[#info.notes + 1] = "opts.ema: the file has no EMA copy of the U-Net; using its weights"
    else
      for _, e in pairs(maps.unet) do e.src = ema_name(e.src) end
      info.ema = true
    end
  end
  check_consumption(header, maps, what or "checkpoint", function(name)
    if ignorable(name) then return true end
    -- with EMA selected, the non-EMA U-Net is left unused on purpose
    return info.ema and name:find("^model%.diffusion_model%.") ~= nil
  end)
  return {info = info, maps = maps}
end

----------------------------------------------------------------------------------------------------
-- Materialising weights

local HALF = {f16 = true, bf16 = true}
local FLOAT = {f32 = true, f16 = true, bf16 = true}

-- opts.dtype: nil keeps the file's dtypes; "f32" widens every half tensor once; "f16"/"bf16" keep
-- (or convert) matrices and convolution weights in that dtype and widen vectors (norms, biases) to f32.
local function convert(t, dtype)
  if not dtype or not FLOAT[t.dtype] then return t end
  if dtype == "f32" then
    if HALF[t.dtype] then return t:to("f32") end
    return t
  end
  if t.ndim >= 2 then
    if t.dtype ~= dtype then return t:to(dtype) end
    return t
  end
  if t.dtype ~= "f32" then return t:to("f32") end
  return t
end
M.convert = convert

local function check_dtype_opt(dtype)
  if dtype ~= nil and dtype ~= "f32" and dtype ~= "f16" and dtype ~= "bf16" then
    error("sd.load: opts.dtype must be \"f32\", \"f16\" or \"bf16\", got " .. tostring(dtype), 0)
  end
end

-- map (target -> entry) + source tensors (name -> tensor) -> target -> tensor
-- A source read only to make converted copies is released as soon as its last copy is made, its
-- file pages given back (x:drop_pages), so that widening a half checkpoint to f32 holds the f32
-- copies and little more, not both copies until the end (or the garbage collector).
local function materialize(map, tensors, dtype)
  local out, uses, kept = {}, {}, {}
  for _, e in pairs(map) do uses[e.src] = (uses[e.src] or 0) + 1 end
  for target, e in pairs(map) do
    local src = tensors[e.src]
    if src == nil then
      error(("sd.load: tensor %s%s cannot be loaded"):format(e.src, e.dtype and (" (dtype " .. e.dtype .. ")") or ""), 0)
    end
    local t = src
    if e.narrow then t = t:narrow(e.narrow[1], e.narrow[2] + 1, e.narrow[3]) end
    if not same_shape(t.shape, e.shape) then t = t:view(e.shape) end
    local c = convert(t, dtype)
    if rawequal(c, t) then
      kept[e.src] = true
    elseif not rawequal(t, src) then
      t:release() -- the temporary view
    end
    out[target] = c
    uses[e.src] = uses[e.src] - 1
    if uses[e.src] == 0 and not kept[e.src] then
      src:drop_pages()
      src:release()
    end
  end
  return out
end
M.materialize = materialize

----------------------------------------------------------------------------------------------------
-- Vocabulary (the CLIP BPE files) for single files

local function vocab_in(dir)
  if regular_file(dir .. "/vocab.json") and regular_file(dir .. "/merges.txt") then
    return {vocab = dir .. "/vocab.json", merges = dir .. "/merges.txt"}
  end
  if regular_file(dir .. "/bpe_simple_vocab_16e6.txt.gz") then
    return {bpe = dir .. "/bpe_simple_vocab_16e6.txt.gz"}
  end
  if is_dir(dir .. "/tokenizer") then return vocab_in(dir .. "/tokenizer") end
  return nil
end

local function vocab_at(p)
  if not p or p == "" then return nil end
  if is_dir(p) then return vocab_in(p) end
  if regular_file(p) then
    if p:match("%.gz$") or p:match("%.txt$") and not p:match("merges%.txt$") then return {bpe = p} end
    return vocab_in(dirname(p))
  end
  return nil
end

function M.user_data_dir()
  local xdg = os.getenv("XDG_DATA_HOME")
  if xdg and xdg ~= "" then return xdg .. "/sdlua" end
  local home = os.getenv("HOME")
  if home and home ~= "" then return home .. "/.local/share/sdlua" end
  return nil
end

-- -> files or nil, message
function M.find_vocab(path, opts)
  opts = opts or {}
  local tried = {}
  local function try(where, p)
    if not p then return nil end
    tried[#tried + 1] = where .. " " .. p
    return vocab_at(p)
  end
  local found = try("opts.vocab", opts.vocab) or try("SDLUA_VOCAB", os.getenv("SDLUA_VOCAB"))
    or (path and try("next to the checkpoint", dirname(path))) or try("user data folder", M.user_data_dir())
  if found then return found end
  local msg = "no CLIP tokenizer vocabulary found for " .. tostring(path) .. ". Single-file checkpoints do not carry it: "
    .. "download vocab.json and merges.txt (the tokenizer/ folder of any Stable Diffusion 1.x/2.x diffusers repository) "
    .. "or OpenAI CLIP's bpe_simple_vocab_16e6.txt.gz, and put them in " .. (M.user_data_dir() or "~/.local/share/sdlua")
    .. " or next to the checkpoint (or pass opts.vocab / set SDLUA_VOCAB to their folder). Looked in: "
    .. (#tried > 0 and table.concat(tried, "; ") or "nowhere")
  return nil, msg
end

----------------------------------------------------------------------------------------------------
-- Single files

local function sniff(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local head, _, code = f:read(8)
  f:close()
  if code == 21 then return "dir" end
  if not head then return "empty" end
  if head:sub(1, 4) == "PK\3\4" or head:sub(1, 4) == "PK\5\6" then return "zip" end
  if head:byte(1) == 0x80 and #head >= 2 and head:byte(2) <= 5 then return "pickle" end
  if #head == 8 then return "safetensors?" end
  return "unknown"
end

local function header_of_tensors(tensors)
  local h = {}
  for name, t in pairs(tensors) do h[name] = {shape = t.shape, dtype = t.dtype} end
  return h
end

local function yaml_next_to(path)
  local base = path:gsub("%.[%w_]+$", "")
  return read_all(base .. ".yaml")
end

local function finish_single(path, opts, fmt, header, load_tensors, meta)
  local popts = setmetatable({}, {__index = opts})
  if opts.prediction_type == nil then popts.yaml = yaml_next_to(path) end
  local plan = M.plan(header, popts, path)
  local info = plan.info
  local tensors = load_tensors()
  local dtype = opts.dtype
  local vocab, verr = M.find_vocab(path, opts)
  return {
    family = info.family, layout = "single", format = fmt, inpaint = info.inpaint, path = path,
    preset = info.preset, notes = info.notes, metadata = meta, ema = info.ema or false,
    unet = {config = info.unet, weights = materialize(plan.maps.unet, tensors, dtype)},
    vae = {config = info.vae, weights = materialize(plan.maps.vae, tensors, dtype)},
    text_encoder = {config = info.text_encoder, weights = materialize(plan.maps.text_encoder, tensors, dtype)},
    scheduler_config = info.scheduler_config,
    tokenizer_files = vocab, tokenizer_error = verr, tokenizer_missing = verr,
    pad = info.pad,
  }
end

local function open_single(path, opts)
  local kind = sniff(path)
  if kind == "zip" then
    local ckpt = require "sd.loader.ckpt"
    local tensors, header = ckpt.load(path)
    return finish_single(path, opts, "ckpt", header, function() return tensors end, nil)
  elseif kind == "empty" then
    error("sd.load: " .. path .. " is empty: not a checkpoint", 0)
  end
  local ok, header, meta = pcall(M.safetensors_header, path)
  if not ok then
    if kind == "pickle" then
      error("sd.load: " .. path .. " is a legacy (pre-1.6) PyTorch pickle file: not supported; re-save it with a current "
        .. "PyTorch (torch.save writes zip archives) or convert it to safetensors", 0)
    end
    error(("sd.load: %s is not a checkpoint: neither a safetensors file nor a PyTorch .ckpt (zip) archive"):format(path), 0)
  end
  return finish_single(path, opts, "safetensors", header, function()
    local w = M.safetensors_load(path)
    return w
  end, meta)
end

----------------------------------------------------------------------------------------------------
-- Diffusers folders

local WEIGHT_FILES = {
  unet = {"diffusion_pytorch_model", "model"},
  vae = {"diffusion_pytorch_model", "model"},
  text_encoder = {"model", "pytorch_model", "diffusion_pytorch_model"},
}

-- name -> tensor of one component folder (safetensors, sharded safetensors, or .bin)
local function load_component(dir, comp, opts)
  local bases = WEIGHT_FILES[comp]
  local variants = {}
  if opts.variant then variants[#variants + 1] = "." .. opts.variant end
  variants[#variants + 1] = ""
  for _, v in ipairs(variants) do
    for _, b in ipairs(bases) do
      local p = ("%s/%s%s.safetensors"):format(dir, b, v)
      if regular_file(p) then return M.safetensors_load(p), p end
      local idx = ("%s/%s%s.safetensors.index.json"):format(dir, b, v)
      if regular_file(idx) then
        local j = read_json(idx, "shard index")
        local files, out = {}, {}
        for _, f in pairs(j.weight_map or {}) do files[f] = true end
        for f in pairs(files) do
          for name, t in pairs(M.safetensors_load(dir .. "/" .. f)) do out[name] = t end
        end
        return out, idx
      end
    end
  end
  for _, v in ipairs(variants) do
    for _, b in ipairs(bases) do
      local p = ("%s/%s%s.bin"):format(dir, b, v)
      if regular_file(p) then
        local tensors = require("sd.loader.ckpt").load(p)
        return tensors, p
      end
    end
  end
  error(("sd.load: no weights in %s (looked for %s.safetensors, sharded .safetensors.index.json, .bin)")
    :format(dir, table.concat(bases, ".safetensors / ")), 0)
end

-- diffusers VAE names used before diffusers 0.14 for the mid-block attention
local OLD_VAE_ATTN = {{"to_q.", "query."}, {"to_k.", "key."}, {"to_v.", "value."}, {"to_out.0.", "proj_attn."},
  {"group_norm.", "group_norm."}}

local function identity_map(params, header, comp)
  local map = {}
  for _, p in ipairs(params) do
    local src = p.name
    if not header[src] and comp == "vae" and p.kind == "vae_attention" then
      for _, r in ipairs(OLD_VAE_ATTN) do
        if p.leaf:sub(1, #r[1]) == r[1] then
          local alt = p.module .. "." .. r[2] .. p.leaf:sub(#r[1] + 1)
          if header[alt] then src = alt end
        end
      end
    end
    map[p.name] = {src = src, shape = p.shape}
  end
  return map
end

local PIPELINES = {
  StableDiffusionPipeline = true, StableDiffusionImg2ImgPipeline = true, StableDiffusionInpaintPipeline = true,
}

local function pad_of(dir)
  for _, f in ipairs{"special_tokens_map.json", "tokenizer_config.json"} do
    local j = read_json(dir .. "/tokenizer/" .. f, "tokenizer config")
    if j and j.pad_token ~= nil then
      local p = type(j.pad_token) == "table" and j.pad_token.content or j.pad_token
      if p == "<|endoftext|>" then return "eos" end
      if p == "!" then return "zero" end
    end
  end
  return nil
end

local function open_folder(dir, opts)
  local index = read_json(dir .. "/model_index.json", "model_index.json")
  if not index then
    error("sd.load: " .. dir .. " is a folder without model_index.json: not a diffusers pipeline folder", 0)
  end
  local class = index._class_name or "?"
  if class:find("XL") then
    error(("sd.load: %s is a Stable Diffusion XL pipeline (%s): not supported yet"):format(dir, class), 0)
  end
  if not PIPELINES[class] then
    error(("sd.load: %s holds a %s: not supported yet (Stable Diffusion 1.x/2.x pipelines are)"):format(dir, class), 0)
  end
  for _, comp in ipairs{"unet", "vae", "text_encoder"} do
    if index[comp] == nil then error(("sd.load: %s/model_index.json has no %s"):format(dir, comp), 0) end
  end
  local cfg = {}
  cfg.unet = read_json(dir .. "/unet/config.json", "unet config")
    or error("sd.load: " .. dir .. "/unet/config.json is missing", 0)
  cfg.vae = read_json(dir .. "/vae/config.json", "vae config")
    or error("sd.load: " .. dir .. "/vae/config.json is missing", 0)
  cfg.text_encoder = read_json(dir .. "/text_encoder/config.json", "text encoder config")
    or error("sd.load: " .. dir .. "/text_encoder/config.json is missing", 0)
  if cfg.text_encoder.model_type and cfg.text_encoder.model_type ~= "clip_text_model" then
    error(("sd.load: %s has a %s text encoder: not supported yet"):format(dir, tostring(cfg.text_encoder.model_type)), 0)
  end
  -- fill defaults the files may omit (older diffusers wrote fewer keys)
  cfg.unet = arch.unet_config(cfg.unet)
  cfg.vae = arch.vae_config(cfg.vae)
  cfg.text_encoder = arch.clip_config(cfg.text_encoder)
  for _, comp in ipairs{"unet", "vae", "text_encoder"} do
    for k, v in pairs(opts[comp] or {}) do cfg[comp][k] = arch.copy(v) end
  end
  if opts.attention_head_dim then cfg.unet.attention_head_dim = arch.copy(opts.attention_head_dim) end
  if opts.clip_layer then cfg.text_encoder.layer = opts.clip_layer end
  cfg.text_encoder.clip_skip_default = cfg.text_encoder.layer == "penultimate" and 1 or 0

  local params = {}
  local ok, err = pcall(function()
    params.unet = arch.unet_params(cfg.unet)
    params.vae = arch.vae_params(cfg.vae)
    params.text_encoder = arch.clip_params(cfg.text_encoder)
  end)
  if not ok then error("sd.load: " .. dir .. ": " .. tostring(err):gsub("^[^:]*:%d+: ", ""), 0) end

  local out = {}
  local files = {}
  for _, comp in ipairs{"unet", "vae", "text_encoder"} do
    local tensors, file = load_component(dir .. "/" .. comp, comp, opts)
    files[comp] = file
    local header = header_of_tensors(tensors)
    local map = identity_map(params[comp], header, comp)
    check_consumption(header, {[comp] = map}, file)
    out[comp] = {config = cfg[comp], weights = materialize(map, tensors, opts.dtype)}
  end

  local family = cfg.text_encoder.hidden_act == "gelu" and "sd2" or "sd1"
  if cfg.unet.cross_attention_dim ~= cfg.text_encoder.hidden_size then
    error(("sd.load: %s: the U-Net cross-attention width %s differs from the text encoder width %s")
      :format(dir, tostring(cfg.unet.cross_attention_dim), tostring(cfg.text_encoder.hidden_size)), 0)
  end
  local sched = read_json(dir .. "/scheduler/scheduler_config.json", "scheduler config")
  if not sched then
    sched = arch.scheduler_config{prediction_type = family == "sd2" and "v_prediction" or "epsilon"}
  end
  if opts.prediction_type then sched.prediction_type = opts.prediction_type end

  local vocab, verr
  if regular_file(dir .. "/tokenizer/vocab.json") and regular_file(dir .. "/tokenizer/merges.txt") then
    vocab = {vocab = dir .. "/tokenizer/vocab.json", merges = dir .. "/tokenizer/merges.txt"}
  else
    vocab, verr = M.find_vocab(dir .. "/model_index.json", opts)
  end

  return {
    family = family, layout = "diffusers", format = files.unet:match("%.bin$") and "ckpt" or "safetensors",
    inpaint = cfg.unet.in_channels == 9, path = dir, files = files, notes = {},
    unet = out.unet, vae = out.vae, text_encoder = out.text_encoder,
    scheduler_config = sched, tokenizer_files = vocab, tokenizer_error = verr, tokenizer_missing = verr,
    pad = pad_of(dir) or (family == "sd2" and "zero" or "eos"),
  }
end

----------------------------------------------------------------------------------------------------

-- open(path, opts): see the top of this file and docs/checkpoints.md.
function M.open(path, opts)
  opts = opts or {}
  if type(path) ~= "string" or path == "" then error("sd.load: a path (string) is expected", 2) end
  if type(opts) ~= "table" then error("sd.load: opts must be a table", 2) end
  check_dtype_opt(opts.dtype)
  path = path:gsub("(.)/+$", "%1")
  local f = io.open(path, "rb")
  if not f then
    error("sd.load: no such file or folder: " .. path, 0)
  end
  f:close()
  if is_dir(path) then return open_folder(path, opts) end
  return open_single(path, opts)
end

-- header(path) -> name -> {shape=, dtype=} of a single-file checkpoint (safetensors: the header
-- only; .ckpt: the pickle, without touching tensor data), format
function M.header(path)
  if sniff(path) == "zip" then
    local _, header = require("sd.loader.ckpt").load(path)
    return header, "ckpt"
  end
  return (M.safetensors_header(path)), "safetensors"
end

-- inspect(path, opts) -> the derived description of a single file without loading weights:
-- {family, inpaint, preset, unet, vae, text_encoder (configs), scheduler_config, pad, notes, format}
function M.inspect(path, opts)
  local header, fmt = M.header(path)
  local plan = M.plan(header, opts, path)
  plan.info.format = fmt
  return plan.info
end

-- The original single-file layout of an architecture, for writing checkpoints
-- (sdlua make-checkpoint): list of {name = LDM name, shape = {...}, component = "unet"|"vae"|
-- "text_encoder", sources = {diffusers names}} in name order. Several sources (OpenCLIP's fused
-- q/k/v in_proj) are concatenated along dim 1; a source whose shape differs (the VAE attention's
-- [C, C] linear weights) is reshaped to `shape`. preset: a name or table of sd.arch.presets.
-- opts.release: also the tensors the original release files carry that the pipeline does not use
-- (preset.release: SD 1.5's position_ids, SD 2.1's 24th text block, text_projection, logit_scale);
-- those entries have no sources and may have `dtype` and `init`.
function M.single_file_layout(preset, opts)
  if type(preset) == "string" then
    preset = arch.presets[preset] or error("unknown architecture " .. preset, 2)
  end
  local release = opts and opts.release and preset.release
  if release and release.text_layers then
    preset = arch.copy(preset)
    preset.text_encoder.num_hidden_layers = release.text_layers
  end
  local maps = {
    unet = keymap_unet.build(preset.unet),
    vae = keymap_vae.build(preset.vae),
    text_encoder = preset.family == "sd2" and keymap_clip.build_openclip(preset.text_encoder)
      or keymap_clip.build_hf(preset.text_encoder),
  }
  local by_src = {}
  for comp, map in pairs(maps) do
    for target, e in pairs(map) do
      local r = by_src[e.src]
      if not r then
        r = {name = e.src, shape = arch.copy(e.src_shape or e.shape), component = comp, sources = {}}
        by_src[e.src] = r
      end
      local slot = e.narrow and (e.narrow[2] // e.narrow[3] + 1) or (#r.sources + 1)
      r.sources[slot] = target
    end
  end
  local list = {}
  for _, r in pairs(by_src) do list[#list + 1] = r end
  for _, x in ipairs(release and release.extra or {}) do
    list[#list + 1] = {name = x.name, shape = arch.copy(x.shape), component = "text_encoder", sources = {},
      dtype = x.dtype, init = x.init}
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  return list
end

M.load = M.open
M.file_exists = file_exists

return M
