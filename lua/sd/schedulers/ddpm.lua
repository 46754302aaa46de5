-- DDPM (DDPMScheduler): ancestral sampling of Ho et al. 2020 with the posterior variance
-- (variance_type fixed_small by default). Draws noise on every step whose t > 0.
local C = require "sd.schedulers.common"
local fround = C.fround
local sqrt, log, exp = math.sqrt, math.log, math.exp

local DDPM = C.class{
  name = "ddpm",
  defaults = {
    variance_type = "fixed_small",
    clip_sample = true,
    clip_sample_range = 1.0,
    thresholding = false,
    dynamic_thresholding_ratio = 0.995,
    sample_max_value = 1.0,
    timestep_spacing = "leading",
    rescale_betas_zero_snr = false,
  },
  choices = {variance_type = {"fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"}},
}

function DDPM:init()
  C.init_alpha_scheduler(self, true) -- DDPM: alpha_prod past the last step is always 1
end

DDPM.set_timesteps = C.set_int_timesteps

function DDPM:previous_timestep(t)
  return t - self.config.num_train_timesteps // self.num_inference_steps
end

DDPM.alpha_at = C.alpha_at

-- the variance (or, for the *_log types, the standard deviation) of the step's noise
function DDPM:noise_std(t)
  local a, a_prev = self:alpha_at(t), self:alpha_at(self:previous_timestep(t))
  local beta_t = fround(1 - fround(a / a_prev))
  local var = fround(fround(fround(1 - a_prev) / fround(1 - a)) * beta_t)
  if var < 1e-20 then var = 1e-20 end
  local vt = self.config.variance_type
  if vt == "fixed_small" then return fround(sqrt(var))
  elseif vt == "fixed_small_log" then return fround(exp(0.5 * fround(log(var))))
  elseif vt == "fixed_large" then return fround(sqrt(beta_t))
  else return fround(exp(0.5 * fround(log(beta_t)))) end
end

function DDPM:step(model_output, t, x, generator)
  self:check_ready()
  local cfg = self.config
  t = math.tointeger(C.tnum(t)) or error("ddpm scheduler: timestep must be an integer", 2)
  local prev_t = self:previous_timestep(t)
  local a, a_prev = self:alpha_at(t), self:alpha_at(prev_t)
  local b, b_prev = fround(1 - a), fround(1 - a_prev)
  local cur_alpha = fround(a / a_prev)
  local cur_beta = fround(1 - cur_alpha)
  local x0 = C.x0_from_output(cfg.prediction_type, model_output, x, C.alpha_scalings(a))
  x0 = C.clip_x0(cfg, x0, model_output)
  local c0 = fround(fround(fround(sqrt(a_prev)) * cur_beta) / b)
  local cx = fround(fround(fround(sqrt(cur_alpha)) * b_prev) / b)
  local prev = C.lincomb(x0, c0, x, cx)
  if t > 0 then
    local noise = C.step_noise(self, generator, model_output.shape)
    prev:add_(noise:mul_(self:noise_std(t)))
    noise:release()
  end
  return prev, x0
end

DDPM.add_noise = C.add_noise_alpha

return DDPM
