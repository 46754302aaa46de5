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
  C.init_alpha_scheduler(self, self.config.set_alpha_to_one)
  if self.config.eta < 0 then C.bad(self.name, "eta", self.config.eta, "a number >= 0") end
end

DDIM.set_timesteps = C.set_int_timesteps
DDIM.alpha_at = C.alpha_at

function DDIM:step(model_output, t, x, generator)
  self:check_ready()
  local cfg = self.config
  t = math.tointeger(C.tnum(t)) or error("ddim scheduler: timestep must be an integer", 2)
  local prev_t = t - cfg.num_train_timesteps // self.num_inference_steps
  local a, a_prev = self:alpha_at(t), self:alpha_at(prev_t)
  local b = fround(1 - a)
  local x0, eps = C.alpha_pred(cfg.prediction_type, model_output, x, a)
  x0 = C.clip_x0(cfg, x0, model_output)
  local b_prev = fround(1 - a_prev)
  local variance = fround(fround(b_prev / b) * fround(1 - fround(a / a_prev)))
  local std = fround(cfg.eta * fround(sqrt(variance)))
  if cfg.use_clipped_model_output then
    local clipped_eps = C.sub_scaled_div(x, x0, fround(sqrt(a)), fround(sqrt(b)))
    C.release_unless(eps, model_output)
    eps = clipped_eps
  end
  local prev = C.lincomb(x0, fround(sqrt(a_prev)), eps, fround(sqrt(fround(fround(1 - a_prev) - fround(std * std)))))
  C.release_unless(eps, model_output)
  if cfg.eta > 0 then
    if not generator then error("ddim scheduler: eta > 0 needs a generator", 2) end
    local noise = generator:randn(model_output.shape)
    prev:add_(noise:mul_(std))
    noise:release()
  end
  self.step_index = (self.step_index or 0) + 1
  return prev, x0
end

DDIM.add_noise = C.add_noise_alpha

return DDIM
