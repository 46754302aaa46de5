-- Euler (EulerDiscreteScheduler): k-diffusion's Euler method on the sigma schedule (Karras et
-- al. 2022, Algorithm 2), optionally with Karras sigmas ("Euler Karras") and "churn" noise.
local C = require "sd.schedulers.common"
local fround = C.fround

local Euler = C.class{
  name = "euler",
  defaults = {
    prediction_type = "epsilon",
    interpolation_type = "linear",
    use_karras_sigmas = false,
    sigma_min = false, sigma_max = false, -- unset: from the schedule
    timestep_spacing = "linspace",
    timestep_type = "discrete",
    rescale_betas_zero_snr = false,
    -- step() arguments of diffusers, config keys here
    s_churn = 0.0, s_tmin = 0.0, s_tmax = math.huge, s_noise = 1.0,
  },
  nullable = {sigma_min = "number", sigma_max = "number"},
  choices = {
    interpolation_type = {"linear", "log_linear"},
    timestep_type = {"discrete", "continuous"},
  },
}

function Euler:init()
  C.init_betas(self)
  C.bump_zero_snr(self)
  self.order = 1
  C.k_init_full(self)
end

function Euler:set_timesteps(n)
  local cfg = self.config
  n = C.check_steps(self.name, n, cfg.num_train_timesteps)
  local ts, sig = C.k_schedule(self, n, {
    sigma_min = cfg.sigma_min or nil, sigma_max = cfg.sigma_max or nil,
  })
  local sigmas = C.k_sigmas_f32(sig)
  if cfg.timestep_type == "continuous" and cfg.prediction_type == "v_prediction" then
    ts = {}
    for i = 1, #sig do ts[i] = fround(0.25 * fround(math.log(sigmas[i]))) end
  end
  self.timesteps, self.sigmas = ts, sigmas
  C.k_finish_timesteps(self, n)
end

Euler.scale_model_input = C.k_scale_model_input

function Euler:step(model_output, t, x, generator)
  self:check_ready()
  local cfg = self.config
  local i = C.init_step_index(self, t)
  local sigma = self.sigmas[i]
  local gamma = 0.0
  if cfg.s_tmin <= sigma and sigma <= cfg.s_tmax then
    gamma = math.min(cfg.s_churn / (#self.sigmas - 1), 2 ^ 0.5 - 1)
  end
  -- diffusers draws this noise on every step, used or not: it advances the generator
  local noise = generator and generator:randn(model_output.shape) or nil
  local sigma_hat = fround(sigma * (gamma + 1))
  if gamma > 0 then
    if not noise then error("euler scheduler: s_churn > 0 needs a generator", 2) end
    -- x + noise * s_noise * c, as noise * s_noise * c + x (the same sum) in the noise's storage
    x = noise:mul_(cfg.s_noise):mul_(fround(math.sqrt(fround(sigma_hat * sigma_hat - sigma * sigma)))):add_(x)
  end
  local x0 = C.k_pred_x0(cfg.prediction_type, model_output, x, sigma_hat)
  local dt = fround(self.sigmas[i + 1] - sigma_hat)
  -- x + (x - x0) / sigma_hat * dt, in place on the derivative
  local prev = (x - x0):div_(sigma_hat):mul_(dt):add_(x)
  if noise then noise:release() end -- (the churned x too)
  self.step_index = i + 1
  return prev, x0
end

function Euler:add_noise(original, noise, timesteps)
  local ts = C.timestep_list(timesteps, original.shape[1])
  local idx = C.noise_step_indices(self, ts)
  local sig = {}
  for k, j in ipairs(idx) do sig[k] = self.sigmas[j] end
  return C.mix_per_batch(original, nil, noise, sig)
end

return Euler
