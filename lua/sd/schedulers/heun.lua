-- Heun (HeunDiscreteScheduler): Heun's 2nd-order method on the sigma schedule (Karras et al.
-- 2022, Algorithm 1 without churn). Two model calls a step: s.timesteps repeats every
-- timestep after the first; the object alternates between the Euler predictor and the
-- trapezoidal corrector.
local C = require "sd.schedulers.common"
local fround = C.fround

local Heun = C.class{
  name = "heun",
  defaults = {
    prediction_type = "epsilon",
    use_karras_sigmas = false,
    clip_sample = false,
    clip_sample_range = 1.0,
    timestep_spacing = "linspace",
  },
}

function Heun:init()
  C.init_betas(self)
  self.order = 2
  C.k_init_full(self)
end

-- [a1, a2, a2, a3, a3, ...]: every entry after the first twice
local function interleave(list, keep_last_single)
  local out = {list[1]}
  local last = keep_last_single and #list - 1 or #list
  for i = 2, last do out[#out + 1] = list[i]; out[#out + 1] = list[i] end
  if keep_last_single then out[#out + 1] = list[#list] end
  return out
end

function Heun:set_timesteps(n)
  n = C.check_steps(self.name, n, self.config.num_train_timesteps)
  local ts, sig = C.k_schedule(self, n)
  self.sigmas = interleave(C.k_sigmas_f32(sig), true)
  self.timesteps = interleave(ts)
  C.k_finish_timesteps(self, n)
  C.free(self.prev_derivative, self.sample) -- a run stopped between the two halves
  self.prev_derivative, self.dt, self.sample = nil, nil, nil
end

function Heun:state_in_first_order() return self.dt == nil end

Heun.scale_model_input = C.k_scale_model_input

function Heun:step(model_output, t, x)
  self:check_ready()
  local cfg = self.config
  local i = C.init_step_index(self, t)
  local first = self.dt == nil
  local sigma, sigma_next
  if first then
    sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
  else
    sigma, sigma_next = self.sigmas[i - 1], self.sigmas[i]
  end
  local sigma_hat = sigma -- no churn (gamma = 0)
  local x0 = C.k_pred_x0(cfg.prediction_type, model_output, x, first and sigma_hat or sigma_next)
  if cfg.clip_sample then x0 = C.clip_x0(cfg, x0, model_output) end
  local prev
  if first then
    local derivative = (x - x0):div_(sigma_hat)
    local dt = fround(sigma_next - sigma_hat)
    self.prev_derivative, self.dt, self.sample = derivative, dt, C.keep(x)
    prev = (derivative * dt):add_(x)
  else
    -- x + ((x - x0) / sigma_next + prev_derivative) / 2 * dt from the stored sample, in place
    prev = (x - x0):div_(sigma_next):add_(self.prev_derivative):div_(2):mul_(self.dt):add_(self.sample)
    self.prev_derivative:release()
    self.sample:release()
    self.prev_derivative, self.dt, self.sample = nil, nil, nil
  end
  self.step_index = i + 1
  return prev, x0
end

Heun.add_noise = require("sd.schedulers.euler").add_noise

return Heun
