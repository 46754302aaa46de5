-- sd.cli: the `sdlua <subcommand>` command line (docs/cli.md).
--
--   sdlua txt2img -m MODEL -p PROMPT [-n NEGATIVE] [--steps 20] [--cfg 7.5] [--seed N|-1]
--                 [--sampler euler_a] [--karras] [-W 512 -H 512] [--batch-count N] [--clip-skip N]
--                 [--vae-tiling] [-t THREADS] [--quiet] -o out.png
--   sdlua txt2img --from image.png [-o again.png]     (same parameters, same bytes)
--   sdlua img2img -i init.png --strength 0.75 ...
--   sdlua info image.png | model.safetensors
--   sdlua make-checkpoint --arch sd15|sd21|tiny --random [--dtype f16|f32] [--seed N] -o FILE
--
-- runtime/lsdlua.c calls main(argv) when the program's first argument is one of the subcommands
-- and exits with what it returns: 0 done, 1 error, 2 usage error, 130 interrupted (Ctrl-C).
-- Arguments are parsed by Debian's lua-argparse. Every error is one line on standard error,
-- "sdlua <command>: <what went wrong and what to do>".
local M = {}

M.EXIT_OK, M.EXIT_ERROR, M.EXIT_USAGE, M.EXIT_INTERRUPTED = 0, 1, 2, 130
M.COMMANDS = {"txt2img", "img2img", "info", "make-checkpoint"}
M.is_command = {}
for _, c in ipairs(M.COMMANDS) do M.is_command[c] = true end

local function sd() return require "sd" end

----------------------------------------------------------------------------------------------------
-- errors

-- A usage error (exit code 2) or a plain error (exit code 1), raised as a table so that main can
-- tell them from Lua errors and interruptions.
local CliError = {}
CliError.__index = CliError
CliError.__tostring = function(e) return e.msg end

local function fail(msg, ...)
  error(setmetatable({msg = select("#", ...) > 0 and msg:format(...) or msg, code = M.EXIT_ERROR}, CliError), 0)
end

local function usage_error(msg, ...)
  error(setmetatable({msg = select("#", ...) > 0 and msg:format(...) or msg, code = M.EXIT_USAGE}, CliError), 0)
end

-- Lua errors raised with a position ("lua/sd/pipeline.lua:123: ...", "[C]: ...") lose it here:
-- the command line user wants the message.
local function clean(msg)
  msg = tostring(msg)
  msg = msg:gsub("^[^\n]-%.lua:%d+: ", ""):gsub("^%[C%]: ", ""):gsub("^sd%.load: ", "")
  return (msg:gsub("\n.*$", ""))
end
M.clean_message = clean

----------------------------------------------------------------------------------------------------
-- small helpers

local function getenv(name)
  local v = os.getenv(name)
  if v == nil or v == "" then return nil end
  return v
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close(); return true end
  return false
end

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function mkdir_p(dir)
  if dir == "" or dir == "." then return true end
  return os.execute("mkdir -p " .. shell_quote(dir))
end

local function dirname(path) return path:match("^(.*)/[^/]*$") or "." end
M.shell_quote, M.mkdir_p, M.dirname = shell_quote, mkdir_p, dirname

local function note(quiet, fmt, ...)
  if quiet then return end
  io.stderr:write(fmt:format(...), "\n")
  io.stderr:flush()
end

local function mib(bytes) return ("%.1f MiB"):format((bytes or 0) / 2 ^ 20) end

----------------------------------------------------------------------------------------------------
-- sampler names: sdlua's (euler_a), AUTOMATIC1111's ("Euler a", "DPM++ 2M Karras") and
-- stable-diffusion.cpp's (euler_a, dpm++2m) all work.

local SAMPLER_ALIASES = {
  plms = "pndm", eulerancestral = "euler_a", dpm2m = "dpmpp_2m", dpmpp2msde = "dpmpp_2m_sde",
  dpmsolvermultistep = "dpmpp_2m", unipcmultistep = "unipc", dpm2ancestral = nil,
}

local function squash(s)
  s = s:lower():gsub("%+%+", "pp"):gsub("^k_", "")
  return (s:gsub("[%s_%-]", ""))
end

-- The samplers that take Karras noise levels (use_karras_sigmas).
M.KARRAS_LIST = {"euler", "heun", "dpm2", "lms", "dpmpp_2m", "dpmpp_2m_sde", "unipc"}
M.KARRAS = {}
for _, n in ipairs(M.KARRAS_LIST) do M.KARRAS[n] = true end

-- name -> sdlua scheduler name, karras (true when the name ends in "Karras"); nil, message if unknown
function M.sampler_name(name)
  local schedulers = require "sd.schedulers"
  local karras = false
  local base = name:gsub("[%s_]+[Kk]arras$", "")
  if base ~= name then karras = true end
  local key = squash(base)
  for _, n in ipairs(schedulers.names) do
    if squash(n) == key or squash(schedulers.ui_names[n] or n) == key then return n, karras end
  end
  if SAMPLER_ALIASES[key] then return SAMPLER_ALIASES[key], karras end
  return nil, ("unknown sampler '%s'; known: %s (AUTOMATIC1111 names such as \"Euler a\" or \"DPM++ 2M Karras\" work too)")
    :format(name, table.concat(schedulers.names, ", "))
end

----------------------------------------------------------------------------------------------------
-- the parser

local DESCRIPTION = "sdlua: Stable Diffusion in C and Lua."
local EPILOG = [[
Exit status: 0 done, 1 error, 2 usage error, 130 interrupted (Ctrl-C; no partial file is left).
Environment: SDLUA_MODEL (the model when -m is not given), SDLUA_VOCAB (folder of the CLIP
vocabulary: vocab.json + merges.txt), SDLUA_THREADS (threads when -t is not given).
See docs/cli.md.]]

local function num(what, integer)
  return function(s)
    local v = tonumber(s)
    if v == nil or v ~= v then return nil, ("%s must be a number, got '%s'"):format(what, s) end
    if integer and math.tointeger(v) == nil then return nil, ("%s must be an integer, got '%s'"):format(what, s) end
    return integer and math.tointeger(v) or v
  end
end

local function generation_options(c, mode)
  c:option("-m --model", "Model: a .safetensors or .ckpt single file, or a diffusers folder (default: $SDLUA_MODEL).")
    :argname("MODEL")
  c:option("-p --prompt", "The prompt."):argname("PROMPT")
  c:option("-n --negative-prompt", "The negative prompt."):argname("NEGATIVE")
  c:option("--steps", "Sampling steps (default 20)."):argname("N"):convert(num("--steps", true))
  c:option("--cfg --cfg-scale", "Classifier-free guidance scale (default 7.5; 1 or less: no negative pass).")
    :argname("SCALE"):convert(num("--cfg"))
  c:option("-s --seed", "Seed; -1 picks a random one (default -1). Batch images use seed, seed+1, ...")
    :argname("N"):convert(num("--seed", true))
  c:option("--sampler --sampling-method", "Sampler (default euler_a): ddim, ddpm, pndm, lms, euler, euler_a, heun, "
    .. "dpm2, dpmpp_2m, dpmpp_2m_sde, unipc, lcm; AUTOMATIC1111 names work too.")
    :argname("NAME")
  c:flag("--karras", "Karras noise levels (euler, heun, dpm2, lms, dpmpp_2m, dpmpp_2m_sde, unipc).")
  c:option("--eta", "DDIM eta (default 0)."):argname("ETA"):convert(num("--eta"))
  c:option("-W --width", "Image width, a multiple of 8 (default: the model's, 512 for SD 1.x)."):argname("W")
    :convert(num("--width", true))
  c:option("-H --height", "Image height, a multiple of 8 (default: the model's)."):argname("H")
    :convert(num("--height", true))
  c:option("-b --batch-count", "Number of images to make, one after the other (default 1).")
    :argname("N"):convert(num("--batch-count", true))
  c:option("--clip-skip", "Use the output of the N-th last text encoder layer (AUTOMATIC1111's Clip skip; 1 = last).")
    :argname("N"):convert(num("--clip-skip", true))
  c:option("--long-prompt", "Prompts over 75 tokens: truncate (default) or chunk (AUTOMATIC1111).")
    :argname("MODE"):choices{"truncate", "chunk"}
  c:option("--weighting", "Prompt weighting: none (default) or a1111 for (word:1.2) and [word].")
    :argname("MODE"):choices{"none", "a1111"}
  c:flag("--vae-tiling", "Decode (and encode) the image in overlapping tiles: less memory for large images.")
  c:option("--precision", "Matrix products in f32 (default) or bf16 (AVX512_BF16 dot products: faster, "
    .. "less exact; docs/performance.md).")
    :argname("P"):choices{"f32", "bf16"}
  c:option("--vocab", "Folder (or file) of the CLIP vocabulary for single-file models (default: $SDLUA_VOCAB, "
    .. "next to the model, ~/.local/share/sdlua).")
    :argname("DIR")
  c:option("-t --threads", "Threads (default: $SDLUA_THREADS, else every core)."):argname("N")
    :convert(num("--threads", true))
  c:option("-o --output", "Output PNG (default output.png); a batch adds -2, -3, ... before .png.")
    :argname("FILE")
  c:option("--from", "Take every parameter from the PNG written by an earlier run (options given here win): "
    .. "the same model and options give the same image, byte for byte.")
    :argname("IMAGE")
  c:flag("-q --quiet", "No progress bar, notes or timing summary.")
  if mode == "img2img" then
    c:option("-i --init-img", "The initial image (PNG, JPEG, ...); its size is the output size."):argname("IMAGE")
    c:option("--strength", "How much to change the initial image, 0 to 1 (default 0.75)."):argname("S")
      :convert(num("--strength"))
  end
end

function M.parser()
  local argparse = require "argparse"
  local p = argparse("sdlua", DESCRIPTION):epilog(EPILOG)
  p:command_target("command")
  p:require_command(true)
  p:help_max_width(100)
  p:help_description_margin(28)
  local t2i = p:command("txt2img", "Make images from a text prompt."):epilog(EPILOG)
  generation_options(t2i, "txt2img")
  local i2i = p:command("img2img", "Make images from an initial image and a prompt."):epilog(EPILOG)
  generation_options(i2i, "img2img")
  local info = p:command("info", "Print the generation parameters stored in a PNG, or describe a model file.")
    :epilog(EPILOG)
  info:argument("file", "A PNG written by sdlua (or AUTOMATIC1111), or a checkpoint / diffusers folder.")
  info:flag("--json", "Print the parsed parameters as JSON.")
  local mk = p:command("make-checkpoint", "Write a random-weight single-file checkpoint with the exact tensor names, "
    .. "shapes and dtypes of a release (for tests, benchmarks and trying sdlua without downloads).")
    :epilog(EPILOG)
  mk:option("--arch", "Architecture: sd15 (as v1-5-pruned-emaonly), sd21 (as v2-1_768-ema-pruned), tiny "
    .. "(a 2.2 M parameter SD 1.x, written with a small vocabulary beside it), tiny_sd2.")
    :argname("ARCH"):default("tiny"):choices{"sd15", "sd21", "tiny", "tiny_sd1", "tiny_sd2"}
  mk:flag("--random", "Random weights (needed: the only kind make-checkpoint makes).")
  mk:option("--dtype", "Weight dtype: f16, or f32 as the releases.")
    :argname("DTYPE"):default("f16"):choices{"f16", "f32", "bf16"}
  mk:option("--seed", "Seed of the weights."):argname("N"):default("0"):convert(num("--seed", true))
  mk:option("-o --output", "Output .safetensors file."):argname("FILE")
  mk:option("-t --threads", "Threads."):argname("N"):convert(num("--threads", true))
  mk:flag("-q --quiet", "Print only errors.")
  return p
end

----------------------------------------------------------------------------------------------------
-- models

-- Where `sdlua txt2img` keeps the tiny random model it makes when no model is given.
function M.tiny_model_path()
  local base = getenv("XDG_CACHE_HOME")
  if not base then
    local home = getenv("HOME")
    base = home and (home .. "/.cache") or "/tmp"
  end
  return base .. "/sdlua/tiny-random/tiny-random.safetensors"
end

local FALLBACK_NOTE = [[
sdlua: no model given (-m MODEL or SDLUA_MODEL). For real images, get Stable Diffusion 1.5:
  v1-5-pruned-emaonly.safetensors (4.3 GB, https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5)
  and its tokenizer/vocab.json + tokenizer/merges.txt, put the two into %s,
  then: export SDLUA_MODEL=/path/to/v1-5-pruned-emaonly.safetensors
Meanwhile this runs on a tiny random-weight model (%s):
its image is NOISE from an untrained model, not a picture of the prompt.]]

-- -> path, random (true for make-checkpoint models)
local function resolve_model(a)
  local m = a.model or getenv("SDLUA_MODEL")
  local mc = require "sd.make_checkpoint"
  if m then
    if not exists(m) then
      fail("model not found: %s (give -m a .safetensors / .ckpt file or a diffusers folder, or set SDLUA_MODEL)", m)
    end
    return m, mc.is_random(m)
  end
  local path = M.tiny_model_path()
  io.stderr:write(FALLBACK_NOTE:format(require("sd.loader").user_data_dir() or "~/.local/share/sdlua", path), "\n")
  io.stderr:flush()
  if not exists(path) then
    if not mkdir_p(dirname(path)) then fail("cannot create %s for the tiny model", dirname(path)) end
    mc.write{arch = "tiny", output = path, dtype = "f16", seed = 0}
  end
  return path, true
end
M.resolve_model = resolve_model

----------------------------------------------------------------------------------------------------
-- parameters stored in PNGs

-- The parameters of a PNG as option values (the names argparse gives: steps, cfg, seed, ...).
function M.read_parameters(path)
  if not exists(path) then fail("--from: no such file: %s", path) end
  local ok, texts = pcall(require("sd.image").text, path)
  if not ok then fail("--from: cannot read %s: %s", path, clean(texts)) end
  local text = texts and texts.parameters
  if not text then fail("--from: %s holds no generation parameters (no \"parameters\" text chunk)", path) end
  local f = require("sd.image").parse_parameters(text)
  local r = {prompt = f.prompt, negative_prompt = f.negative_prompt}
  r.steps = math.tointeger(tonumber(f.Steps or ""))
  r.cfg = tonumber(f["CFG scale"] or "")
  r.seed = math.tointeger(tonumber(f.Seed or ""))
  if f.Size then
    local w, h = f.Size:match("^(%d+)x(%d+)$")
    r.width, r.height = math.tointeger(tonumber(w)), math.tointeger(tonumber(h))
  end
  if f.Sampler then
    local name, karras = M.sampler_name(f.Sampler)
    if not name then fail("--from: %s: %s", path, karras) end
    r.sampler, r.karras = name, karras
  end
  r.clip_skip = math.tointeger(tonumber(f["Clip skip"] or ""))
  r.eta = tonumber(f.Eta or "")
  r.strength = tonumber(f["Denoising strength"] or "")
  r.long_prompt = f["Long prompt"]
  r.weighting = f.Weighting
  r.precision = f.Precision
  r.vae_tiling = f["VAE tiling"] == "true" or nil
  r.model_hash = f["Model hash"]
  r.model_name = f.Model
  r.text = text
  return r
end

----------------------------------------------------------------------------------------------------
-- txt2img / img2img

local function random_seed()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(4) or string.pack("<I4", os.time() & 0xffffffff)
  if f then f:close() end
  return string.unpack("<I4", bytes)
end

local function set_threads(n)
  if n == nil then return end
  if n < 1 or n > 1024 then usage_error("--threads wants a count from 1 to 1024, got %d", n) end
  sd().threads(n)
end

local function output_path(base, k)
  if k == 1 then return base end
  return (base:gsub("%.png$", "")) .. "-" .. k .. ".png"
end

-- Resolved settings of a generation: option values over --from values over defaults.
local function settings(a, mode)
  local from = a.from and M.read_parameters(a.from) or {}
  local s = {}
  local function pick(key, default)
    if a[key] ~= nil then return a[key] end
    if from[key] ~= nil then return from[key] end
    return default
  end
  if a.from and mode == "txt2img" and from.strength then
    usage_error("--from: %s was made by img2img (it has a denoising strength): use sdlua img2img -i INIT --from %s",
      a.from, a.from)
  end
  s.prompt = pick("prompt", nil)
  if s.prompt == nil then usage_error("a prompt is needed: -p \"a lighthouse at dusk\" (or --from IMAGE)") end
  s.negative_prompt = pick("negative_prompt", "")
  s.steps = pick("steps", 20)
  if s.steps < 1 then usage_error("--steps must be at least 1, got %d", s.steps) end
  s.cfg = pick("cfg", 7.5)
  s.seed = pick("seed", -1)
  if s.seed == -1 then s.seed = random_seed() end
  if s.seed < 0 then usage_error("--seed must be -1 (random) or a number from 0, got %d", s.seed) end
  if a.sampler then
    local name, karras = M.sampler_name(a.sampler)
    if not name then usage_error("%s", karras) end
    s.sampler, s.karras = name, karras or a.karras
  else
    s.sampler = from.sampler or "euler_a"
    s.karras = a.karras or from.karras or false
  end
  if s.karras and not M.KARRAS[s.sampler] then
    usage_error("--karras works with the sigma-based samplers %s; not with %s", table.concat(M.KARRAS_LIST, ", "), s.sampler)
  end
  s.eta = pick("eta", 0)
  s.width, s.height = pick("width", nil), pick("height", nil)
  for _, d in ipairs{{"width", s.width}, {"height", s.height}} do
    local v = d[2]
    if v and (v < 8 or v % 8 ~= 0) then
      local lo, hi = math.max(8, v - v % 8), v - v % 8 + 8
      usage_error("%s must be a multiple of 8, got %d: try %d or %d", d[1], v, lo, hi)
    end
  end
  s.batch_count = a.batch_count or 1
  if s.batch_count < 1 then usage_error("--batch-count must be at least 1, got %d", s.batch_count) end
  s.clip_skip = pick("clip_skip", nil)
  if s.clip_skip and s.clip_skip < 1 then usage_error("--clip-skip must be at least 1, got %d", s.clip_skip) end
  s.long_prompt = pick("long_prompt", "truncate")
  s.weighting = pick("weighting", "none")
  s.precision = pick("precision", "f32")
  s.vae_tiling = a.vae_tiling or from.vae_tiling or false
  if mode == "img2img" then
    s.strength = pick("strength", 0.75)
    if s.strength < 0 or s.strength > 1 then usage_error("--strength must be between 0 and 1, got %g", s.strength) end
    s.init_img = a.init_img
    if not s.init_img then usage_error("img2img needs an initial image: -i init.png") end
    if not exists(s.init_img) then fail("initial image not found: %s", s.init_img) end
  end
  s.output = a.output or "output.png"
  s.from = from
  return s
end

-- The number of on_step calls of one generation (the bar's length).
local function count_steps(pipe, s, args)
  local ok, n = pcall(function()
    local p = pipe:resolve({steps = s.steps, scheduler = s.sampler, scheduler_options = args.scheduler_options,
      eta = s.eta, width = s.width, height = s.height, seed = 0}, "txt2img")
    local sch = pipe:make_scheduler(p)
    sch:set_timesteps(s.steps)
    local total = #sch.timesteps
    if s.strength then
      local init_timestep = math.min(math.floor(s.steps * s.strength), s.steps)
      total = total - (s.steps - init_timestep) * (sch.order or 1)
    end
    return total
  end)
  return ok and n or s.steps
end

local function generate(mode, a)
  local quiet = a.quiet
  local s = settings(a, mode)
  set_threads(a.threads)
  local S = sd()
  S.memory_reset_peak()
  local model, random = resolve_model(a)
  local clock = S.clock
  local t0 = clock()
  local ok, pipe = pcall(S.load, model, {vocab = a.vocab})
  if not ok then
    if tostring(pipe):find("interrupted!", 1, true) then error(pipe, 0) end
    fail("cannot load %s: %s", model, clean(pipe))
  end
  local load_seconds = clock() - t0
  if s.vae_tiling then
    pipe.vae.auto_tile_latent_pixels = 0
    pipe.vae.tile_size, pipe.vae.tile_overlap = 32, 8
  end
  if a.from and s.from.model_hash and pipe.model_hash and s.from.model_hash ~= pipe.model_hash then
    note(quiet, "sdlua %s: note: %s was made with model hash %s (%s), this model's is %s: the image will differ",
      mode, a.from, s.from.model_hash, s.from.model_name or "?", pipe.model_hash)
  end
  -- the prompt must be encodable: say so before any work
  if not pipe.tokenizer_files and not pipe.tokenizer then
    fail("%s", clean(pipe.tokenizer_missing or "no CLIP vocabulary found for this model"))
  end
  local args = {
    prompt = s.prompt, negative_prompt = s.negative_prompt, steps = s.steps, guidance = s.cfg,
    scheduler = s.sampler, scheduler_options = s.karras and {use_karras_sigmas = true} or {}, eta = s.eta,
    width = s.width, height = s.height, clip_skip = s.clip_skip, long_prompt = s.long_prompt,
    weighting = s.weighting, precision = s.precision,
  }
  if mode == "img2img" then
    local lok, img = pcall(S.image.load, s.init_img)
    if not lok then fail("cannot read the initial image %s: %s", s.init_img, clean(img)) end
    local h, w = img.shape[3], img.shape[4]
    if (s.width and s.width ~= w) or (s.height and s.height ~= h) then
      fail("-W/-H (%sx%s) differ from the initial image's size %dx%d: resize the image instead",
        tostring(s.width or w), tostring(s.height or h), w, h)
    end
    if w % 8 ~= 0 or h % 8 ~= 0 then
      fail("the initial image is %dx%d; its width and height must be multiples of 8 (crop or resize it to %dx%d)",
        w, h, w - w % 8, h - h % 8)
    end
    args.image, args.strength = img, s.strength
    args.width, args.height = nil, nil
  end
  local total_steps = count_steps(pipe, s, args)
  local progress = require "sd.progress"
  local times = {encode = 0, sampling = 0, decode = 0, steps = 0}
  -- the prompts are encoded first (the pipeline caches the embeddings), so that the progress
  -- bar times sampling alone
  t0 = clock()
  local eok, eerr = pcall(function()
    local opts = {clip_skip = s.clip_skip, long_prompt = s.long_prompt, weighting = s.weighting}
    pipe:encode_prompt(s.prompt, opts)
    if s.cfg > 1 then pipe:encode_prompt(s.negative_prompt, opts) end
  end)
  if not eok then
    if tostring(eerr):find("interrupted!", 1, true) then error(eerr, 0) end
    fail("%s", clean(eerr))
  end
  times.encode = clock() - t0
  local written = {}
  for k = 1, s.batch_count do
    args.seed = s.seed + (k - 1)
    local label = s.batch_count > 1 and ("image %d/%d"):format(k, s.batch_count) or "sampling"
    local bar = progress.new{total = total_steps, label = label, quiet = quiet}
    args.on_step = bar:on_step()
    local gok, img, info = pcall(mode == "img2img" and pipe.img2img or pipe.txt2img, pipe, args)
    bar:finish()
    if not gok then
      if tostring(img):find("interrupted!", 1, true) then error(img, 0) end
      fail("%s", clean(img))
    end
    info.long_prompt, info.weighting, info.vae_tiling = s.long_prompt, s.weighting, s.vae_tiling
    local path = output_path(s.output, k)
    local dir = dirname(path)
    if not exists(dir) then fail("cannot write %s: the folder %s does not exist", path, dir) end
    local sok, serr = pcall(S.image.save, path, img, info)
    if not sok then fail("cannot write %s: %s", path, clean(serr)) end
    written[#written + 1] = path
    times.encode = times.encode + (info.encode_seconds or 0)
    times.sampling = times.sampling + (info.sampling_seconds or 0)
    times.decode = times.decode + (info.decode_seconds or 0)
    times.steps = times.steps + #(info.step_seconds or {})
    io.stdout:write(path, "\n")
    io.stdout:flush()
    note(quiet, "sdlua %s: wrote %s (seed %d, %dx%d, %s%s, %d steps, cfg %s)", mode, path, info.seed, info.width,
      info.height, s.sampler, s.karras and " karras" or "", s.steps, tostring(s.cfg))
    img:release()
  end
  if random then
    note(false, "sdlua %s: note: %s made by a random-weight model: it is noise from an untrained model, not the prompt",
      mode, #written == 1 and written[1] or (#written .. " images"))
  end
  local m = S.memory()
  note(quiet, "time: load %.2fs, text encoding %.2fs, sampling %.2fs (%d steps, %.3f s/it), decoding %.2fs; "
    .. "peak memory: tensors %s, process %s", load_seconds, times.encode, times.sampling, times.steps,
    times.steps > 0 and times.sampling / times.steps or 0, times.decode, mib(m.peak), mib(m.peak_rss))
  return M.EXIT_OK
end

----------------------------------------------------------------------------------------------------
-- info

local function is_png(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local head = f:read(8)
  f:close()
  return head == "\137PNG\r\n\26\n"
end

local function info_cmd(a)
  local path = a.file
  if not exists(path) then fail("no such file: %s", path) end
  if is_png(path) then
    local p = M.read_parameters(path)
    if a.json then
      local cjson = require "cjson"
      local fields = require("sd.image").parse_parameters(p.text)
      io.stdout:write(cjson.encode(fields), "\n")
    else
      io.stdout:write(p.text, "\n")
    end
    return M.EXIT_OK
  end
  local loader = require "sd.loader"
  local cjson = require "cjson"
  if loader.is_dir(path) then
    local ok, m = pcall(loader.open, path, {})
    if not ok then fail("%s", clean(m)) end
    local r = {path = path, layout = "diffusers", family = m.family, inpaint = m.inpaint,
      prediction_type = m.scheduler_config and m.scheduler_config.prediction_type,
      vocabulary = m.tokenizer_files and (m.tokenizer_files.vocab or m.tokenizer_files.bpe) or "missing"}
    if a.json then io.stdout:write(cjson.encode(r), "\n") else
      for _, k in ipairs{"path", "layout", "family", "inpaint", "prediction_type", "vocabulary"} do
        io.stdout:write(("%-16s %s\n"):format(k .. ":", tostring(r[k])))
      end
    end
    return M.EXIT_OK
  end
  local ok, d = pcall(loader.inspect, path, {})
  if not ok then fail("%s", clean(d)) end
  local header = loader.header(path)
  local n = 0
  for _ in pairs(header) do n = n + 1 end
  local vocab = loader.find_vocab(path, {})
  local r = {path = path, layout = "single file", format = d.format, family = d.family, preset = d.preset or "none",
    inpaint = d.inpaint, prediction_type = d.scheduler_config.prediction_type, tensors = n,
    text_encoder_layer = d.text_encoder.layer,
    vocabulary = vocab and (vocab.vocab or vocab.bpe) or "missing (see SDLUA_VOCAB in docs/cli.md)",
    random_weights = require("sd.make_checkpoint").is_random(path)}
  if a.json then io.stdout:write(cjson.encode(r), "\n") return M.EXIT_OK end
  for _, k in ipairs{"path", "layout", "format", "family", "preset", "inpaint", "prediction_type", "text_encoder_layer",
      "tensors", "vocabulary", "random_weights"} do
    io.stdout:write(("%-19s %s\n"):format(k .. ":", tostring(r[k])))
  end
  for _, line in ipairs(d.notes or {}) do io.stdout:write("note: ", line, "\n") end
  return M.EXIT_OK
end

----------------------------------------------------------------------------------------------------
-- make-checkpoint

local function make_checkpoint_cmd(a)
  if not a.random then
    usage_error("make-checkpoint only writes random-weight checkpoints: add --random")
  end
  if not a.output then usage_error("an output file is needed: -o FILE.safetensors") end
  set_threads(a.threads)
  local dir = dirname(a.output)
  if not exists(dir) then fail("cannot write %s: the folder %s does not exist", a.output, dir) end
  local mc = require "sd.make_checkpoint"
  local progress = require "sd.progress"
  local tty = not a.quiet and progress.isatty(2)
  local bar
  local t0 = sd().clock()
  local ok, r = pcall(mc.write, {arch = a.arch, output = a.output, dtype = a.dtype, seed = a.seed,
    on_tensor = tty and function(i, n)
      bar = bar or progress.new{total = n, label = "tensors", tty = true}
      if i % 8 == 0 or i == n then bar:update(i) end
    end or nil})
  if bar then bar:finish() end
  if not ok then
    if tostring(r):find("interrupted!", 1, true) then error(r, 0) end
    fail("%s", clean(tostring(r):gsub("^make%-checkpoint: ", "")))
  end
  io.stdout:write(r.path, "\n")
  note(a.quiet, "sdlua make-checkpoint: wrote %s: %s, %d tensors, %.1f M parameters, %s, %s, seed %d, %.1fs",
    r.path, r.arch, r.tensors, r.parameters / 1e6, r.dtype, mib(r.bytes), r.seed, sd().clock() - t0)
  if r.vocab then
    note(a.quiet, "sdlua make-checkpoint: wrote its byte-level vocabulary beside it: %s, %s", r.vocab.vocab, r.vocab.merges)
  end
  return M.EXIT_OK
end

----------------------------------------------------------------------------------------------------
-- main

local RUN = {txt2img = function(a) return generate("txt2img", a) end,
  img2img = function(a) return generate("img2img", a) end,
  info = info_cmd, ["make-checkpoint"] = make_checkpoint_cmd}

-- main(argv) -> exit code. argv: {"txt2img", "-p", "a cat", ...} (the program's arguments).
function M.main(argv)
  argv = argv or {}
  local command = argv[1]
  local prefix = "sdlua" .. (M.is_command[command] and (" " .. command) or "")
  local parser = M.parser()
  local ok, a = parser:pparse(argv)
  if not ok then
    io.stderr:write(prefix, ": ", a, " (see: ", prefix, " --help)\n")
    return M.EXIT_USAGE
  end
  local trace
  local rok, rc = xpcall(RUN[a.command], function(e)
    if getmetatable(e) ~= CliError then trace = debug.traceback(tostring(e), 2) end
    return e
  end, a)
  if rok then return rc or M.EXIT_OK end
  io.stdout:flush()
  if getmetatable(rc) == CliError then
    io.stderr:write(prefix, ": ", rc.msg, "\n")
    if rc.code == M.EXIT_USAGE then io.stderr:write("(see: ", prefix, " --help)\n") end
    return rc.code
  end
  if tostring(rc):find("interrupted!", 1, true) then
    io.stderr:write("\n", prefix, ": interrupted; no file was left half-written\n")
    return M.EXIT_INTERRUPTED
  end
  io.stderr:write(prefix, ": ", clean(rc), "\n")
  if getenv("SDLUA_DEBUG") then io.stderr:write(trace or "", "\n") end
  return M.EXIT_ERROR
end

return M
