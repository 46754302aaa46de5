-- LMS (LMSDiscreteScheduler): linear multistep method on the sigma schedule. The coefficient
-- of each past derivative is the integral of its Lagrange basis polynomial over
-- [sigma_i, sigma_i+1], computed exactly here (diffusers integrates numerically).
local C = require "sd.schedulers.common"

local LMS = C.class{
  name = "lms",
  defaults = {
    prediction_type = "epsilon",
    use_karras_sigmas = false,
    timestep_spacing = "linspace",
    lms_order = 4, -- diffusers' step(order=4) argument
  },
}

function LMS:init()
  C.init_betas(self)
  self.order = 1
  if math.type(self.config.lms_order) ~= "integer" or self.config.lms_order < 1 then
    C.bad(self.name, "lms_order", self.config.lms_order, "an integer >= 1")
  end
  C.k_init_full(self)
  self.derivatives = {}
end

function LMS:set_timesteps(n)
  n = C.check_steps(self.name, n, self.config.num_train_timesteps)
  local ts, sig = C.k_schedule(self, n)
  self.timesteps, self.sigmas = ts, C.k_sigmas_f32(sig)
  C.k_finish_timesteps(self, n)
  C.release_all(self.derivatives)
  self.derivatives = {}
end

LMS.scale_model_input = C.k_scale_model_input

-- Polynomial helpers: coefficient lists, p[k] = coefficient of tau^(k-1).
local function poly_mul_linear(p, a, b) -- p * (a*tau + b)
  local out = {}
  for k = 1, #p + 1 do out[k] = 0 end
  for k = 1, #p do
    out[k] = out[k] + p[k] * b
    out[k + 1] = out[k + 1] + p[k] * a
  end
  return out
end

local function poly_integral(p, lo, hi)
  local s = 0
  for k = 1, #p do s = s + p[k] * (hi ^ k - lo ^ k) / k end
  return s
end

-- integral over [sigma(i), sigma(i+1)] of prod_{k ~= cur} (tau - sigma(i-k)) / (sigma(i-cur) - sigma(i-k))
-- (i is 1-based here; k and cur count back from the current step)
function LMS:lms_coefficient(order, i, cur)
  local sg = self.sigmas
  local p = {1.0}
  for k = 0, order - 1 do
    if k ~= cur then
      local d = sg[i - cur] - sg[i - k]
      p = poly_mul_linear(p, 1 / d, -sg[i - k] / d)
    end
  end
  return poly_integral(p, sg[i], sg[i + 1])
end

function LMS:step(model_output, t, x)
  self:check_ready()
  local i = C.init_step_index(self, t)
  local sigma = self.sigmas[i]
  local x0 = C.k_pred_x0(self.config.prediction_type, model_output, x, sigma)
  local ders = self.derivatives
  ders[#ders + 1] = (x - x0):div_(sigma)
  if #ders > self.config.lms_order then table.remove(ders, 1):release() end
  local order = math.min(i, self.config.lms_order)
  -- x + d1 * c1 + d2 * c2 + ..., the first sum as d1 * c1 + x (the same float)
  local prev = (ders[#ders] * self:lms_coefficient(order, i, 0)):add_(x)
  for cur = 1, order - 1 do
    local term = ders[#ders - cur] * self:lms_coefficient(order, i, cur)
    prev:add_(term)
    term:release()
  end
  self.step_index = i + 1
  return prev, x0
end

LMS.add_noise = require("sd.schedulers.euler").add_noise

return LMS
