-- Pipelines: txt2img and img2img over the four parts (tokenizer + text encoder, U-Net, VAE,
-- scheduler), following diffusers' StableDiffusionPipeline / StableDiffusionImg2ImgPipeline
-- operation by operation, so that the same seed gives the same image.
--
--   local pipe = sd.load("v1-5-pruned-emaonly.safetensors")
--   local img, info = pipe:txt2img{prompt = "a red fox", steps = 20, seed = 42}
--   sd.image.save("fox.png", img, info)
local core = require "sd.core"
local T = core.tensor
local schedulers = require "sd.schedulers"
local release_unless = require("sd.schedulers.common").release_unless

local Pipeline = {}
Pipeline.__index = Pipeline

local clock = core.clock or os.clock

-- parts: what sd.loader.open returns (configs + diffusers-named weights of each model).
function Pipeline.new(parts, opts)
  opts = opts or {}
  local CLIP = require "sd.models.clip"
  local UNet = require "sd.models.unet"
  local VAE = require "sd.models.vae"
  local self = setmetatable({}, Pipeline)
  self.family = parts.family
  self.path = parts.path
  self.model = parts.path and parts.path:match("([^/]+)$"):gsub("%.[^.]*$", "") or "model"
  -- AUTOMATIC1111's short hash of a single file (diffusers folders have none)
  self.model_hash = parts.model_hash or (parts.layout == "single" and core.image.model_hash(parts.path)) or nil
  self.text_encoder = CLIP.new(parts.text_encoder.config, parts.text_encoder.weights, parts.text_encoder.opts)
  self.unet = UNet.new(parts.unet.config, parts.unet.weights, parts.unet.opts)
  self.vae = VAE.new(parts.vae.config, parts.vae.weights, parts.vae.opts)
  self.unet_config = parts.unet.config
  self.scheduler_config = parts.scheduler_config or {}
  self.default_scheduler = schedulers.class_names[self.scheduler_config._class_name] or "pndm"
  self.scaling_factor = parts.vae.config.scaling_factor or 0.18215
  self.tokenizer_files = parts.tokenizer_files
  self.tokenizer_missing = parts.tokenizer_missing
  self.pad = parts.pad
  self.embedding_cache = {}
  return self
end

-- The tokenizer is loaded when a prompt is first encoded: a single-file checkpoint carries no
-- vocabulary, and a pipeline used with precomputed embeddings never needs one.
function Pipeline:get_tokenizer()
  if not self.tokenizer then
    if not self.tokenizer_files then
      error(self.tokenizer_missing or "no CLIP vocabulary found for this model", 0)
    end
    local opts = {pad = self.pad}
    for k, v in pairs(self.tokenizer_files) do opts[k] = v end
    self.tokenizer = require("sd.tokenizer").load(opts)
  end
  return self.tokenizer
end

-- Embeddings (1, 77*k, C) of one prompt. opts: clip_skip, long_prompt ("truncate"|"chunk"),
-- weighting ("none"|"a1111"). Recent results are cached, so a REPL session that changes only
-- the seed or the scheduler does not run the text encoder again.
function Pipeline:encode_prompt(prompt, opts)
  opts = opts or {}
  -- keyed by whether the bf16 kernels run: the embeddings differ only then
  local key = table.concat({prompt, tostring(opts.clip_skip), opts.long_prompt or "", opts.weighting or "",
    tostring(select(2, core.precision()))}, "\0")
  local cached = self.embedding_cache[key]
  if cached then return cached end
  local tok = self:get_tokenizer()
  local windows, weights
  if opts.weighting == "a1111" then
    windows, weights = tok:encode_weighted(prompt, {long_prompt = opts.long_prompt})
  elseif opts.long_prompt == "chunk" then
    windows = tok:encode_chunks(prompt)
  else
    windows = {tok:encode(prompt)}
  end
  if type(windows[1]) == "number" then windows, weights = {windows}, weights and {weights} end
  local parts = {}
  for i, ids in ipairs(windows) do
    local z = self.text_encoder:forward(T.from(ids, {1, #ids}), {clip_skip = opts.clip_skip})
    if weights then
      -- AUTOMATIC1111: scale each token's embedding by its weight, then restore the mean
      local before = z:mean():item()
      z = z * T.from(weights[i], {1, #weights[i], 1})
      local after = z:mean():item()
      if after ~= 0 then z = z * (before / after) end
    end
    parts[i] = z
  end
  local emb = #parts == 1 and parts[1] or T.cat(parts, 2)
  if #self.embedding_cache >= 16 then self.embedding_cache = {} end
  self.embedding_cache[key] = emb
  return emb
end

-- Pads the shorter of two chunked embeddings with the empty prompt's chunk (AUTOMATIC1111).
function Pipeline:match_lengths(a, b, opts)
  if a.shape[2] == b.shape[2] then return a, b end
  local empty = self:encode_prompt("", {clip_skip = opts.clip_skip})
  local function pad(x, n)
    local parts = {x}
    for _ = 1, (n - x.shape[2]) // empty.shape[2] do parts[#parts + 1] = empty end
    return T.cat(parts, 2)
  end
  local n = math.max(a.shape[2], b.shape[2])
  return pad(a, n), pad(b, n)
end

local function check(cond, fmt, ...)
  if not cond then error(string.format(fmt, ...), 3) end
end

local function check_int(v, name, lo)
  check(math.type(v) == "integer" or (type(v) == "number" and v == math.floor(v)),
    "%s must be an integer, got %s", name, tostring(v))
  check(v >= lo, "%s must be at least %d, got %s", name, lo, tostring(v))
  return math.tointeger(v)
end

-- Fills in defaults and checks every argument; returns the resolved parameters.
function Pipeline:resolve(args, mode)
  check(type(args) == "table", "%s expects a table of arguments", mode)
  local known = {prompt = 1, negative_prompt = 1, steps = 1, guidance = 1, seed = 1, scheduler = 1,
    scheduler_options = 1, eta = 1, width = 1, height = 1, batch_size = 1, latents = 1, on_step = 1,
    clip_skip = 1, long_prompt = 1, weighting = 1, image = 1, strength = 1, sampler = 1, generator = 1,
    prompt_embeds = 1, negative_prompt_embeds = 1, precision = 1}
  for k in pairs(args) do
    check(known[k], "%s: unknown argument '%s'", mode, tostring(k))
  end
  local p = {}
  p.prompt = args.prompt or ""
  check(type(p.prompt) == "string", "prompt must be a string, got %s", type(p.prompt))
  p.negative_prompt = args.negative_prompt or ""
  check(type(p.negative_prompt) == "string", "negative_prompt must be a string, got %s", type(p.negative_prompt))
  p.steps = check_int(args.steps or 20, "steps", 1)
  p.guidance = args.guidance or 7.5
  check(type(p.guidance) == "number", "guidance must be a number, got %s", type(p.guidance))
  local seed = args.seed
  if seed == nil or seed == -1 then
    local f = io.open("/dev/urandom", "rb")
    local bytes = f and f:read(4) or string.pack("<I4", os.time() & 0xffffffff)
    if f then f:close() end
    seed = string.unpack("<I4", bytes)
  end
  p.seed = check_int(seed, "seed", 0)
  p.scheduler = args.scheduler or self.default_scheduler
  check(type(p.scheduler) == "string", "scheduler must be a name, got %s", type(p.scheduler))
  p.scheduler_options = args.scheduler_options or {}
  check(type(p.scheduler_options) == "table", "scheduler_options must be a table")
  p.eta = args.eta or 0
  p.batch_size = check_int(args.batch_size or 1, "batch_size", 1)
  local default_size = (self.unet_config.sample_size or 64) * 8
  p.width = check_int(args.width or default_size, "width", 8)
  p.height = check_int(args.height or default_size, "height", 8)
  check(p.width % 8 == 0 and p.height % 8 == 0,
    "width and height must be multiples of 8, got %dx%d", p.width, p.height)
  p.clip_skip = args.clip_skip
  if p.clip_skip ~= nil then p.clip_skip = check_int(p.clip_skip, "clip_skip", 1) end
  p.long_prompt = args.long_prompt or "truncate"
  check(p.long_prompt == "truncate" or p.long_prompt == "chunk",
    "long_prompt must be \"truncate\" or \"chunk\", got %s", tostring(p.long_prompt))
  p.weighting = args.weighting or "none"
  check(p.weighting == "none" or p.weighting == "a1111",
    "weighting must be \"none\" or \"a1111\", got %s", tostring(p.weighting))
  check(args.on_step == nil or type(args.on_step) == "function", "on_step must be a function")
  p.on_step = args.on_step
  check(args.sampler == nil or type(args.sampler) == "function", "sampler must be a function")
  p.sampler = args.sampler
  if args.latents ~= nil then check(T.is_tensor(args.latents), "latents must be a tensor") end
  p.latents = args.latents
  p.precision = args.precision
  check(p.precision == nil or p.precision == "f32" or p.precision == "bf16",
    "precision must be \"f32\" or \"bf16\", got %s", tostring(p.precision))
  return p
end

-- The scheduler for one generation: the model's config, then scheduler_options, then eta.
function Pipeline:make_scheduler(p)
  local config = {}
  for k, v in pairs(self.scheduler_config) do config[k] = v end
  for k, v in pairs(p.scheduler_options) do config[k] = v end
  if p.scheduler == "ddim" and config.eta == nil then config.eta = p.eta end
  if p.scheduler == "dpmpp_2m_sde" then config.algorithm_type = config.algorithm_type or "sde-dpmsolver++" end
  return schedulers.new(p.scheduler, config)
end

-- cond / uncond embeddings for a batch (uncond only when guidance > 1, as diffusers does).
function Pipeline:embeddings(p, args)
  local opts = {clip_skip = p.clip_skip, long_prompt = p.long_prompt, weighting = p.weighting}
  local cond = args.prompt_embeds or self:encode_prompt(p.prompt, opts)
  local uncond
  if p.guidance > 1 then
    uncond = args.negative_prompt_embeds or self:encode_prompt(p.negative_prompt, opts)
    uncond, cond = self:match_lengths(uncond, cond, opts)
  end
  local function batch(x)
    if p.batch_size == 1 then return x end
    return x:expand{p.batch_size, x.shape[2], x.shape[3]}:contiguous()
  end
  cond = batch(cond)
  if not uncond then return cond, nil end
  return cond, T.cat({batch(uncond), cond}, 1)
end

-- One denoising prediction with classifier-free guidance.
function Pipeline:predict(latents, t, scheduler, cond, context, guidance)
  local x = scheduler:scale_model_input(latents, t)
  if not context then
    local out = self.unet:forward(x, t, cond)
    if x ~= latents then x:release() end
    return out
  end
  local both = T.cat({x, x}, 1)
  if x ~= latents then x:release() end
  local out = self.unet:forward(both, t, context)
  both:release()
  local halves = out:chunk(2, 1)
  local uncond, text = halves[1], halves[2]
  -- uncond + (text - uncond) * guidance, in place on the difference (the same sum)
  local noise = (text - uncond):mul_(guidance):add_(uncond)
  -- the halves are views of out: out's storage is freed only when they let go of it too
  uncond:release(); text:release(); out:release()
  return noise
end

-- The sampling loop over `timesteps`; returns the final latents (or the latents when on_step
-- asked to stop: on_step(i, t, latents) returning false stops early).
--
-- A custom sampler (txt2img{sampler = fn}, docs/samplers.md) replaces the loop: fn(ctx) returns
-- the final latents. ctx: pipe, scheduler (set_timesteps done), timesteps (the ones to run; a
-- suffix of scheduler.timesteps for img2img), sigmas (scheduler.sigmas, or nil), latents (the
-- start, already scaled by init_noise_sigma / noised for img2img), cond ((B,77,C) text
-- embeddings), context (uncond and cond stacked, or nil when guidance <= 1), guidance,
-- generator, on_step, predict(x, t) (the guided noise prediction, as the built-in loop makes
-- it) and step(i, t, x) (records the step's time and calls on_step; returns false when on_step
-- asked to stop).
function Pipeline:denoise(p, scheduler, timesteps, latents, cond, context, generator, info)
  if p.sampler then
    local last = clock()
    local function step(i, t, x)
      local now = clock()
      info.step_seconds[#info.step_seconds + 1] = now - last
      last = now
      if p.on_step and p.on_step(i, t, x) == false then
        info.stopped_at = i
        return false
      end
      return true
    end
    local out = p.sampler{pipe = self, scheduler = scheduler, latents = latents, cond = cond, context = context,
      guidance = p.guidance, generator = generator, timesteps = timesteps, sigmas = scheduler.sigmas,
      on_step = p.on_step, step = step,
      predict = function(x, t) return self:predict(x, t, scheduler, cond, context, p.guidance) end}
    if not (T.is_tensor(out) and #out.shape == 4) then
      error("sampler: a custom sampler must return the final latents (a (B, 4, h, w) tensor), got " .. type(out), 0)
    end
    return out
  end
  -- The loop owns the latents it made (start's, and each step's result) until it hands them to
  -- on_step: a callback may keep them, so from then on they are the caller's and are left to
  -- the collector. Without on_step nothing is.
  local own = true
  for i, t in ipairs(timesteps) do
    local t0 = clock()
    local noise = self:predict(latents, t, scheduler, cond, context, p.guidance)
    -- x0 (the predicted clean latents, unused here) is ours unless it is the result or the noise
    local nxt, x0 = scheduler:step(noise, t, latents, generator)
    if x0 then release_unless(x0, nxt, noise) end
    noise:release()
    if own and not rawequal(nxt, latents) then latents:release() end
    latents = nxt
    info.step_seconds[i] = clock() - t0
    if p.on_step then
      own = false
      if p.on_step(i, t, latents) == false then
        info.stopped_at = i
        break
      end
    end
  end
  return latents
end

function Pipeline:decode(latents)
  local z = latents / self.scaling_factor
  local image = self.vae:decode(z)
  z:release()
  local out = (image / 2 + 0.5):clamp(0, 1)
  image:release()
  return out
end

local function new_info(self, p, mode)
  local info = {mode = mode, model = self.model, model_hash = self.model_hash, step_seconds = {}}
  for _, k in ipairs{"prompt", "negative_prompt", "steps", "guidance", "seed", "scheduler", "eta",
    "width", "height", "batch_size", "clip_skip", "long_prompt", "weighting"} do
    info[k] = p[k]
  end
  info.scheduler_options = p.scheduler_options
  info.karras = p.scheduler_options.use_karras_sigmas or nil
  return info
end

-- The body shared by txt2img and img2img: embeddings, the scheduler, then `start(scheduler,
-- generator)` gives the initial latents and the timesteps to run, then the loop and the decode.
-- precision = "f32"|"bf16" sets sd.precision for the call only; info.precision records what
-- the matrix products used ("bf16" only where the CPU has AVX512_BF16).
function Pipeline:generate(p, args, info, start)
  local previous = core.precision()
  local _ <close> = setmetatable({}, {__close = function() core.precision(previous) end})
  if p.precision then core.precision(p.precision) end
  info.precision = select(2, core.precision()) and "bf16" or "f32"
  local t_start = clock()
  local cond, context = self:embeddings(p, args)
  info.encode_seconds = clock() - t_start
  local scheduler = self:make_scheduler(p)
  scheduler:set_timesteps(p.steps)
  local generator = args.generator or core.rng.torch(p.seed)
  local latents, timesteps = start(scheduler, generator)
  local t0 = clock()
  latents = self:denoise(p, scheduler, timesteps, latents, cond, context, generator, info)
  info.sampling_seconds = clock() - t0
  t0 = clock()
  -- the U-Net's pooled blocks and kernel workspaces are of no use to the VAE decoder, nor the
  -- decoder's to the next generation (or to an idle REPL): give them back at both hand-overs
  -- (the peak RSS of a generation is the decoder's)
  core.memory_trim()
  local image = self:decode(latents)
  core.memory_trim()
  info.decode_seconds = clock() - t0
  info.latents = latents
  info.total_seconds = clock() - t_start
  return image, info
end

-- txt2img{prompt, negative_prompt, steps=20, guidance=7.5, seed, scheduler, scheduler_options,
-- eta, width, height, batch_size=1, latents, on_step, clip_skip, long_prompt, weighting,
-- sampler, precision} -> image (B, 3, H, W) in [0, 1], info
function Pipeline:txt2img(args)
  local p = self:resolve(args, "txt2img")
  local shape = {p.batch_size, self.unet_config.out_channels or 4, p.height // 8, p.width // 8}
  if p.latents then
    local s = p.latents.shape
    check(#s == 4 and s[1] == shape[1] and s[2] == shape[2] and s[3] == shape[3] and s[4] == shape[4],
      "latents must have shape (%d, %d, %d, %d), got (%s)", shape[1], shape[2], shape[3], shape[4], table.concat(s, ", "))
  end
  return self:generate(p, args, new_info(self, p, "txt2img"), function(scheduler, generator)
    -- as diffusers: the given or drawn noise, times the scheduler's initial sigma
    local noise = p.latents and p.latents:to("f32") or generator:randn(shape)
    local latents = noise * scheduler.init_noise_sigma
    if not rawequal(noise, p.latents) then noise:release() end
    return latents, scheduler.timesteps
  end)
end

-- The init image as the VAE wants it: (1, 3, H, W) in [-1, 1].
local function prepare_image(image)
  if type(image) == "string" then image = require("sd.image").load(image) end
  check(T.is_tensor(image), "image must be a (1, 3, H, W) tensor in [0, 1] or a PNG path, got %s", type(image))
  local s = image.shape
  check(#s == 4 and s[1] == 1 and s[2] == 3, "image must have shape (1, 3, H, W), got (%s)", table.concat(s, ", "))
  check(s[3] % 8 == 0 and s[4] % 8 == 0, "image height and width must be multiples of 8, got %dx%d", s[4], s[3])
  return image:to("f32") * 2 - 1
end

-- img2img{image, strength=0.8, ...txt2img's arguments} -> image, info
function Pipeline:img2img(args)
  check(type(args) == "table", "img2img expects a table of arguments")
  check(args.image ~= nil, "img2img needs image= (a (1, 3, H, W) tensor in [0, 1] or a PNG path)")
  local init = prepare_image(args.image)
  local a = {}
  for k, v in pairs(args) do a[k] = v end
  a.width, a.height = a.width or init.shape[4], a.height or init.shape[3]
  local p = self:resolve(a, "img2img")
  check(p.width == init.shape[4] and p.height == init.shape[3], "width/height (%dx%d) differ from the image (%dx%d)",
    p.width, p.height, init.shape[4], init.shape[3])
  local strength = args.strength or 0.8
  check(type(strength) == "number" and strength >= 0 and strength <= 1, "strength must be in [0, 1], got %s", tostring(strength))
  p.strength = strength
  local info = new_info(self, p, "img2img")
  info.strength = strength
  return self:generate(p, args, info, function(scheduler, generator)
    -- as diffusers: skip the first (1 - strength) of the schedule, encode the image (first
    -- draw of the generator), noise it to the first remaining timestep (second draw)
    local init_timestep = math.min(math.floor(p.steps * strength), p.steps)
    local t_begin = math.max(p.steps - init_timestep, 0)
    local order = scheduler.order or 1
    local timesteps = table.move(scheduler.timesteps, t_begin * order + 1, #scheduler.timesteps, 1, {})
    check(#timesteps > 0, "strength %g leaves no denoising steps out of %d", strength, p.steps)
    if scheduler.set_begin_index then scheduler:set_begin_index(t_begin * order) end
    local _, _, dist = self.vae:encode(init)
    local init_latents = dist:sample(generator) * self.scaling_factor
    if p.batch_size > 1 then
      local s = init_latents.shape
      init_latents = init_latents:expand{p.batch_size, s[2], s[3], s[4]}:contiguous()
    end
    local noise = generator:randn(init_latents.shape)
    return scheduler:add_noise(init_latents, noise, {timesteps[1]}), timesteps
  end)
end

local M = {Pipeline = Pipeline, new = Pipeline.new}

-- sd.load(path, opts): a checkpoint (single file or diffusers folder) -> pipeline.
function M.load(path, opts)
  return Pipeline.new(require("sd.loader").open(path, opts), opts)
end

return M
