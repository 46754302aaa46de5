-- Images: saving generations as PNG with their parameters (AUTOMATIC1111's "parameters" text),
-- reading PNGs back as tensors, and reading stored parameters.
local core = require "sd.core"
local T = core.tensor

local image = {}

-- The parameters text of a generation, in AUTOMATIC1111's format:
--   <prompt>\nNegative prompt: <negative>\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42,
--   Size: 512x512, Model hash: <hash>, Model: <name>[, Denoising strength: 0.75][, Clip skip: 2]
function image.parameters(info)
  local lines = {info.prompt or ""}
  if info.negative_prompt and info.negative_prompt ~= "" then
    lines[#lines + 1] = "Negative prompt: " .. info.negative_prompt
  end
  local sampler = require("sd.schedulers").ui_names[info.scheduler] or info.scheduler or "PLMS"
  if info.karras or (info.scheduler_options and info.scheduler_options.use_karras_sigmas) then
    sampler = sampler .. " Karras"
  end
  local fields = {
    {"Steps", info.steps}, {"Sampler", sampler}, {"CFG scale", info.guidance}, {"Seed", info.seed},
    {"Size", info.width and info.height and (info.width .. "x" .. info.height)},
    {"Model hash", info.model_hash}, {"Model", info.model},
    {"Denoising strength", info.strength}, {"Clip skip", info.clip_skip},
    {"Eta", info.eta ~= 0 and info.eta or nil},
  }
  -- sdlua's own settings, written only when not the default (so --from can repeat them)
  local extra = {
    {"Long prompt", info.long_prompt, "truncate"}, {"Weighting", info.weighting, "none"},
    {"VAE tiling", info.vae_tiling, false}, {"Precision", info.precision, "f32"},
  }
  for _, f in ipairs(extra) do
    if f[2] ~= nil and f[2] ~= f[3] then fields[#fields + 1] = {f[1], f[2]} end
  end
  local parts = {}
  for _, f in ipairs(fields) do
    if f[2] ~= nil then parts[#parts + 1] = f[1] .. ": " .. tostring(f[2]) end
  end
  lines[#lines + 1] = table.concat(parts, ", ")
  return table.concat(lines, "\n")
end

-- Parses a parameters text back into {prompt=, negative_prompt=, Steps=..., ...}: the inverse of
-- image.parameters for what sdlua writes, and tolerant of AUTOMATIC1111's extra fields.
function image.parse_parameters(text)
  local lines = {}
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do lines[#lines + 1] = line end
  local last = lines[#lines] or ""
  local fields = {}
  if last:match("^Steps: ") then
    table.remove(lines)
    for key, value in (last .. ","):gmatch("%s*([^:,]+):%s*([^,]*),") do fields[key] = value end
  end
  local prompt, negative = {}, nil
  for _, line in ipairs(lines) do
    local neg = line:match("^Negative prompt: (.*)$")
    if neg then negative = neg
    elseif negative then negative = negative .. "\n" .. line
    else prompt[#prompt + 1] = line end
  end
  fields.prompt = table.concat(prompt, "\n")
  fields.negative_prompt = negative or ""
  return fields
end

-- Saves img ((B,3,H,W) or (3,H,W) f32 in [0,1]) as PNG. With a batch, the path gets "-1", "-2"...
-- before ".png" for images after the first. info: the table txt2img returns (its parameters go
-- into the "parameters" text chunk). Written atomically. Returns the list of paths written.
function image.save(path, img, info)
  assert(type(path) == "string", "image.save: path must be a string")
  if not T.is_tensor(img) then error("image.save: expected an image tensor, got " .. type(img), 2) end
  local shape = img.shape
  if #shape == 3 then img = img:unsqueeze(1); shape = img.shape end
  if #shape ~= 4 or shape[2] < 1 or shape[2] > 4 then
    error(string.format("image.save: expected (B, C, H, W) or (C, H, W) with 1 to 4 channels, got %s",
      tostring(table.concat(shape, "x"))), 2)
  end
  if img.dtype ~= "f32" then img = img:to("f32") end
  local texts = info and {parameters = info.parameters or image.parameters(info)} or nil
  local written = {}
  for b = 1, shape[1] do
    local target = path
    if b > 1 then target = path:gsub("%.png$", "") .. "-" .. b .. ".png" end
    core.image.write_png(target, core.image.to_u8(img[b]), texts)
    written[#written + 1] = target
  end
  return written
end

-- Reads an image file as a (1, 3, H, W) f32 tensor in [0, 1].
function image.load(path)
  local px = core.image.read(path, 3)
  return (px:to("f32"):permute{3, 1, 2}:contiguous() / 255):unsqueeze(1)
end

-- The stored text chunks of a PNG ({parameters = ...}).
function image.text(path)
  return core.image.read_text(path)
end

return image
