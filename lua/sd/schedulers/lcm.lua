-- LCM (LCMScheduler): latent consistency models (Luo et al. 2023). Each step maps x_t to a
-- denoised estimate with the consistency boundary condition, then re-noises it to the next
-- timestep (fresh noise on every step but the last). Meant for LCM-distilled models, 2-8 steps.
local C = require "sd.schedulers.common"
local fround = C.fround
local sqrt = math.sqrt

local LCM = C.class{
  name = "lcm",
  defaults = {
    original_inference_steps = 50,
    clip_sample = false,
    clip_sample_range = 1.0,
    set_alpha_to_one = true,
    thresholding = false,
    dynamic_thresholding_ratio = 0.995,
    sample_max_value = 1.0,
    timestep_spacing = "leading",
    timestep_scaling = 10.0,
    rescale_betas_zero_snr = false,
  },
}

function LCM:init()
  C.init_alpha_scheduler(self, self.config.set_alpha_to_one)
end

-- n steps picked evenly from the original_inference_steps-step LCM schedule
-- ((1..orig) * (N // orig) - 1, descending); strength < 1 uses the schedule's low-noise part.
function LCM:set_timesteps(n, strength)
  local cfg = self.config
  local N = cfg.num_train_timesteps
  n = C.check_steps(self.name, n, N)
  strength = strength or 1.0
  local orig = cfg.original_inference_steps
  if orig > N then
    error(string.format("lcm scheduler: original_inference_steps (%d) > num_train_timesteps (%d)", orig, N), 2)
  end
  if n > orig then
    error(string.format("lcm scheduler: set_timesteps(%d): more steps than original_inference_steps (%d)", n, orig), 2)
  end
  local k = N // orig
  local origin = {}
  for i = math.floor(orig * strength), 1, -1 do origin[#origin + 1] = i * k - 1 end
  if #origin // n < 1 then
    error(string.format("lcm scheduler: set_timesteps(%d) with strength %g leaves only %d timesteps", n, strength,
      #origin), 2)
  end
  local idx = C.np_linspace(0, #origin, n, false)
  local ts = {}
  for i = 1, n do ts[i] = origin[math.floor(idx[i]) + 1] end
  self.timesteps = ts
  self.num_inference_steps = n
  self.step_index, self.begin_index = nil, nil
end

LCM.alpha_at = C.alpha_at

-- c_skip, c_out of the consistency parameterisation at train timestep t
function LCM:boundary_scalings(t)
  local sigma_data = 0.5
  local st = fround(t * self.config.timestep_scaling)
  local d = fround(fround(st * st) + sigma_data * sigma_data)
  return fround(sigma_data * sigma_data / d), fround(st / fround(sqrt(d)))
end

function LCM:step(model_output, t, x, generator)
  self:check_ready()
  local cfg = self.config
  local i = C.init_step_index(self, t)
  t = math.tointeger(C.tnum(t)) or error("lcm scheduler: timestep must be an integer", 2)
  local prev_t = self.timesteps[i + 1] or t
  local a, a_prev = self:alpha_at(t), self:alpha_at(prev_t)
  local c_skip, c_out = self:boundary_scalings(t)
  local x0 = C.x0_from_output(cfg.prediction_type, model_output, x, C.alpha_scalings(a))
  x0 = C.clip_x0(cfg, x0, model_output)
  local denoised = C.lincomb(x0, c_out, x, c_skip)
  C.release_unless(x0, model_output)
  local prev
  if i ~= self.num_inference_steps then
    local noise = C.step_noise(self, generator, model_output.shape)
    prev = C.lincomb(denoised, fround(sqrt(a_prev)), noise, fround(sqrt(fround(1 - a_prev))))
    noise:release()
  else
    prev = denoised
  end
  self.step_index = i + 1
  return prev, denoised
end

LCM.add_noise = C.add_noise_alpha

return LCM
