-- Euler a (EulerAncestralDiscreteScheduler): Euler steps to a lower noise level sigma_down,
-- then fresh noise up to the next sigma (ancestral sampling). Draws noise on every step.
local C = require "sd.schedulers.common"
local fround = C.fround
local sqrt = math.sqrt

local EulerA = C.class{
  name = "euler_a",
  defaults = {
    prediction_type = "epsilon",
    timestep_spacing = "linspace",
    rescale_betas_zero_snr = false,
  },
}

function EulerA:init()
  C.init_betas(self)
  C.bump_zero_snr(self)
  C.require_eps_or_v(self)
  self.order = 1
  C.k_init_full(self)
end

function EulerA:set_timesteps(n)
  local cfg = self.config
  n = C.check_steps(self.name, n, cfg.num_train_timesteps)
  local ts, sig = C.k_schedule(self, n)
  self.timesteps, self.sigmas = ts, C.k_sigmas_f32(sig)
  C.k_finish_timesteps(self, n)
end

EulerA.scale_model_input = C.k_scale_model_input

function EulerA:step(model_output, t, x, generator)
  self:check_ready()
  if not generator then error("euler_a scheduler: step() needs a generator (sd.rng.torch(seed))", 2) end
  local i = C.init_step_index(self, t)
  local sigma = self.sigmas[i]
  local x0 = C.k_pred_x0(self.config.prediction_type, model_output, x, sigma)
  local sf, st = sigma, self.sigmas[i + 1]
  local sf2, st2 = fround(sf * sf), fround(st * st)
  local sigma_up = fround(sqrt(fround(fround(st2 * fround(sf2 - st2)) / sf2)))
  local sigma_down = fround(sqrt(fround(st2 - fround(sigma_up * sigma_up))))
  local dt = fround(sigma_down - sigma)
  -- x + (x - x0) / sigma * dt + noise * sigma_up, in place on the derivative
  local prev = (x - x0):div_(sigma):mul_(dt):add_(x)
  local noise = generator:randn(model_output.shape)
  prev:add_(noise:mul_(sigma_up))
  noise:release()
  self.step_index = i + 1
  return prev, x0
end

EulerA.add_noise = require("sd.schedulers.euler").add_noise

return EulerA
