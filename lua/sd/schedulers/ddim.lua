-- DDIM (DDIMScheduler): denoising diffusion implicit models (Song et al. 2020). eta = 0 is the
-- deterministic sampler; eta > 0 adds noise (eta = 1 is DDPM-like). eta and
-- use_clipped_model_output, arguments of diffusers' step(), are config keys here.
local C = require "sd.schedulers.common"
local fround = C.fround
local sqrt = math.sqrt

local DDIM = C.class{
  name = "ddim",
  defaults = {
    clip_sample = true,
    clip_sample_range = 1.0,
    set_alpha_to_one = true,
    thresholding = false,
    dynamic_thresholding_ratio = 0.995,
    sample_max_value = 1.0,
    timestep_spacing = "leading",
    rescale_betas_zero_snr = false,
    eta = 0.0,
    use_clipped_model_output = false,
  },
}

function DDIM:init()
  C.init_betas(self)
  self.final_alpha_cumprod = self.config.set_alpha_to_one and 1.0 or self.alphas_cumprod[1]
  self.init_noise_sigma = 1.0
  self.order = 1
  local N = self.config.num_train_timesteps
  self.timesteps = {}
  for i = 1, N do self.timesteps[i] = N - i end
  if self.config.eta < 0 then C.bad(self.name, "eta", self.config.eta, "a number >= 0") end
end

function DDIM:set_timesteps(n)
  local cfg = self.config
  n = C.check_steps(self.name, n, cfg.num_train_timesteps)
  self.timesteps = C.int_timesteps(cfg.timestep_spacing, n, cfg.num_train_timesteps, cfg.steps_offset)
  self.num_inference_steps = n
  self.step_index, self.begin_index = nil, nil
end

function DDIM:alpha_at(t)
  if t >= 0 then return self.alphas_cumprod[t + 1] end
  return self.final_alpha_cumprod
end

function DDIM:step(model_output, t, x, generator)
  self:check_ready()
  local cfg = self.config
  t = math.tointeger(C.tnum(t)) or error("ddim scheduler: timestep must be an integer", 2)
  local prev_t = t - cfg.num_train_timesteps // self.num_inference_steps
  local a, a_prev = self:alpha_at(t), self:alpha_at(prev_t)
  local b = fround(1 - a)
  local x0, eps = C.alpha_pred(cfg.prediction_type, model_output, x, a)
  if cfg.thresholding or cfg.clip_sample then
    x0 = C.clip_x0(cfg, x0)
  end
  local b_prev = fround(1 - a_prev)
  local variance = fround(fround(b_prev / b) * fround(1 - fround(a / a_prev)))
  local std = fround(cfg.eta * fround(sqrt(variance)))
  if cfg.use_clipped_model_output then
    eps = (x - x0 * fround(sqrt(a))) / fround(sqrt(b))
  end
  local dir = eps * fround(sqrt(fround(fround(1 - a_prev) - fround(std * std))))
  local prev = x0 * fround(sqrt(a_prev)) + dir
  if cfg.eta > 0 then
    if not generator then error("ddim scheduler: eta > 0 needs a generator", 2) end
    prev = prev + generator:randn(model_output.shape) * std
  end
  self.step_index = (self.step_index or 0) + 1
  return prev, x0
end

function DDIM:add_noise(original, noise, timesteps)
  return C.add_noise_ac(self, C.T(), original, noise, timesteps)
end

return DDIM
