-- The pipeline goldens (reference README section 6) as the tests replay them: the cases, and one
-- case run through a pipeline with the golden's own configuration.
local sd = require "sd"
local cjson = require "cjson"

local M = {}

M.cases = {"txt2img_pndm", "txt2img_euler_a", "txt2img_dpmpp_2m_karras", "txt2img_ddim",
  "img2img_pndm", "img2img_euler_a", "negprompt_cfg1", "negprompt_cfg7.5"}

-- golden file -> tensors, its decoded config, its suggested tolerance
function M.load(path)
  local g, meta = sd.safetensors.load(path)
  return g, cjson.decode(meta.config), tonumber(meta.suggested_abs_tolerance)
end

-- Runs the golden's generation on pipe; `extra` adds or overrides arguments (on_step, precision).
function M.run(pipe, g, config, extra)
  local args = {prompt = config.prompt, negative_prompt = config.negative, guidance = config.guidance,
    steps = config.steps, seed = config.seed, width = 128, height = 128, eta = config.eta,
    scheduler = require("sd.schedulers").class_names[config.scheduler_class],
    scheduler_options = config.scheduler_overrides}
  for k, v in pairs(extra or {}) do args[k] = v end
  if config.mode == "img2img" then
    args.image = (g.init_image + 1) / 2
    args.strength = config.strength or 0.6
    return pipe:img2img(args)
  end
  return pipe:txt2img(args)
end

function M.maxdiff(a, b)
  return (a - b):abs():max():item()
end

-- The 8-bit image against the golden's: how many values differ, and by how much at most.
function M.u8_diff(img, g)
  local d = (sd.core.image.to_u8(img[1]):to("f32") - g.image_u8_hwc:to("f32")):abs()
  return d:clamp(0, 1):sum():item(), d:max():item()
end

return M
