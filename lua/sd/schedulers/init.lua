-- Noise schedulers. sd.scheduler(name, config) == require("sd.schedulers").new(name, config).
-- Each name matches one diffusers scheduler class; config takes the keys of diffusers'
-- scheduler_config.json (see docs/schedulers.md).
local M = {}

-- name -> {module, diffusers class, config values the name implies}
local registry = {
  ddim = {"sd.schedulers.ddim", "DDIMScheduler"},
  ddpm = {"sd.schedulers.ddpm", "DDPMScheduler"},
  pndm = {"sd.schedulers.pndm", "PNDMScheduler"},
  lms = {"sd.schedulers.lms", "LMSDiscreteScheduler"},
  euler = {"sd.schedulers.euler", "EulerDiscreteScheduler"},
  euler_a = {"sd.schedulers.euler_a", "EulerAncestralDiscreteScheduler"},
  heun = {"sd.schedulers.heun", "HeunDiscreteScheduler"},
  dpm2 = {"sd.schedulers.dpm2", "KDPM2DiscreteScheduler"},
  dpmpp_2m = {"sd.schedulers.dpmsolver", "DPMSolverMultistepScheduler",
    {algorithm_type = "dpmsolver++", solver_order = 2}},
  dpmpp_2m_sde = {"sd.schedulers.dpmsolver", "DPMSolverMultistepScheduler",
    {algorithm_type = "sde-dpmsolver++", solver_order = 2}},
  unipc = {"sd.schedulers.unipc", "UniPCMultistepScheduler"},
  lcm = {"sd.schedulers.lcm", "LCMScheduler"},
}

-- The scheduler names, in a stable order.
M.names = {"ddim", "ddpm", "pndm", "lms", "euler", "euler_a", "heun", "dpm2", "dpmpp_2m", "dpmpp_2m_sde",
  "unipc", "lcm"}

-- diffusers class name -> our name (for configs that carry _class_name).
M.class_names = {}
for _, name in ipairs(M.names) do
  local c = registry[name][2]
  if not M.class_names[c] then M.class_names[c] = name end
end

-- The names AUTOMATIC1111 shows (and writes into image parameters as "Sampler:").
M.ui_names = {
  ddim = "DDIM", ddpm = "DDPM", pndm = "PLMS", lms = "LMS", euler = "Euler", euler_a = "Euler a",
  heun = "Heun", dpm2 = "DPM2", dpmpp_2m = "DPM++ 2M", dpmpp_2m_sde = "DPM++ 2M SDE", unipc = "UniPC",
  lcm = "LCM",
}

-- new(name, config) -> scheduler object. config: a table of scheduler_config.json keys (may be
-- nil). The values a name implies (dpmpp_2m: algorithm_type "dpmsolver++", solver_order 2;
-- dpmpp_2m_sde: "sde-dpmsolver++", 2) are laid over the config.
function M.new(name, config)
  local entry = type(name) == "string" and registry[name]
  if not entry then
    error(string.format("unknown scheduler %s (known: %s)", type(name) == "string" and string.format("%q", name)
      or tostring(name), table.concat(M.names, ", ")), 2)
  end
  if config ~= nil and type(config) ~= "table" then
    error(string.format("sd.scheduler(%q, config): config must be a table, got %s", name, type(config)), 2)
  end
  local cfg = {}
  for k, v in pairs(config or {}) do cfg[k] = v end
  for k, v in pairs(entry[3] or {}) do cfg[k] = v end
  local cls = require(entry[1])
  local s = cls.new(cfg, name)
  return s
end

return M
