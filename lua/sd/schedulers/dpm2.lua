-- DPM2 (KDPM2DiscreteScheduler): k-diffusion's sample_dpm_2, a 2nd-order method whose midpoint
-- is the geometric mean of consecutive sigmas. Two model calls a step: s.timesteps alternates
-- the schedule's timesteps with the midpoints' (fractional) timesteps.
local C = require "sd.schedulers.common"
local fround = C.fround
local log, exp = math.log, math.exp

local DPM2 = C.class{
  name = "dpm2",
  defaults = {
    prediction_type = "epsilon",
    use_karras_sigmas = false,
    timestep_spacing = "linspace",
  },
}

function DPM2:init()
  C.init_betas(self)
  C.require_eps_or_v(self)
  self.order = 2
  C.k_init_full(self)
end

-- torch.lerp(a, b, 0.5) in float32 (for w >= 0.5 torch computes b - (b - a) * (1 - w))
local function lerp_half(a, b)
  return fround(b - fround(fround(b - a) * 0.5))
end

function DPM2:set_timesteps(n)
  n = C.check_steps(self.name, n, self.config.num_train_timesteps)
  local ts, sig, logs = C.k_schedule(self, n)
  local sigmas = C.k_sigmas_f32(sig)
  -- midpoints: exp(lerp(log sigma_i, log sigma_{i-1}, 0.5)); the first one is NaN (unused)
  local interpol = {}
  local m = #sigmas
  for i = 1, m do
    local prev = sigmas[i == 1 and m or i - 1]
    local a = fround(log(sigmas[i]))
    local b = fround(log(prev))
    local v = lerp_half(a, b)
    interpol[i] = v ~= v and v or fround(exp(v))
  end
  local function rep(list) -- [x1, x2, x2, ..., xm, xm, xm]
    local out = {list[1]}
    for i = 2, #list do out[#out + 1] = list[i]; out[#out + 1] = list[i] end
    out[#out + 1] = list[#list]
    return out
  end
  self.sigmas = rep(sigmas)
  self.sigmas_interpol = rep(interpol)
  -- timesteps: t1, t_mid2, t2, t_mid3, t3, ...
  local out = {ts[1]}
  for i = 2, #ts do
    out[#out + 1] = fround(C.sigma_to_t(interpol[i], logs, true))
    out[#out + 1] = ts[i]
  end
  self.timesteps = out
  C.k_finish_timesteps(self, n)
  C.free(self.sample) -- a run stopped between the two halves
  self.sample = nil
end

function DPM2:scale_model_input(x, t)
  local i = C.init_step_index(self, t)
  local sigma = self.sample == nil and self.sigmas[i] or self.sigmas_interpol[i]
  return x / C.k_input_scale(sigma)
end

function DPM2:step(model_output, t, x)
  self:check_ready()
  local i = C.init_step_index(self, t)
  local first = self.sample == nil
  local sigma, sigma_interpol, sigma_next
  if first then
    sigma, sigma_interpol, sigma_next = self.sigmas[i], self.sigmas_interpol[i + 1], self.sigmas[i + 1]
  else
    sigma, sigma_interpol, sigma_next = self.sigmas[i - 1], self.sigmas_interpol[i], self.sigmas[i]
  end
  local sigma_hat = sigma
  local x0 = C.k_pred_x0(self.config.prediction_type, model_output, x, first and sigma_hat or sigma_interpol)
  -- x + (x - x0) / sigma * dt, in place on the derivative (from the stored sample in the second half)
  local prev
  if first then
    self.sample = C.keep(x)
    prev = (x - x0):div_(sigma_hat):mul_(fround(sigma_interpol - sigma_hat)):add_(x)
  else
    prev = (x - x0):div_(sigma_interpol):mul_(fround(sigma_next - sigma_hat)):add_(self.sample)
    self.sample:release()
    self.sample = nil
  end
  self.step_index = i + 1
  return prev, x0
end

DPM2.add_noise = require("sd.schedulers.euler").add_noise

return DPM2
