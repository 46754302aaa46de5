-- PNDM (PNDMScheduler): pseudo numerical methods (Liu et al. 2022). With skip_prk_steps (the
-- Stable Diffusion setting) this is PLMS: a linear multistep method over past model outputs,
-- N+1 model calls for N steps (s.timesteps repeats its second entry). Without it, the first
-- steps are Runge-Kutta (PRK) steps.
local C = require "sd.schedulers.common"
local fround = C.fround
local sqrt = math.sqrt

local PNDM = C.class{
  name = "pndm",
  defaults = {
    skip_prk_steps = false,
    set_alpha_to_one = false,
    timestep_spacing = "leading",
  },
  choices = {prediction_type = {"epsilon", "v_prediction"}},
}

function PNDM:init()
  C.init_alpha_scheduler(self, self.config.set_alpha_to_one)
  self.pndm_order = 4
  self:reset()
end

function PNDM:reset()
  C.release_all(self.ets)
  C.free(self.cur_model_output, self.cur_sample)
  self.ets = {}
  self.counter = 0
  self.cur_model_output = nil
  self.cur_sample = nil
end

function PNDM:set_timesteps(n)
  local cfg = self.config
  local N = cfg.num_train_timesteps
  n = C.check_steps(self.name, n, N)
  self.num_inference_steps = n
  -- ascending base timesteps
  local base = C.reverse(C.int_timesteps(cfg.timestep_spacing, n, N, cfg.steps_offset))
  local prk, plms = {}, {}
  if cfg.skip_prk_steps then
    -- base[1..n-1], base[n-1], base[n], reversed
    local l = {}
    for i = 1, n - 1 do l[#l + 1] = base[i] end
    if n >= 2 then l[#l + 1] = base[n - 1] end
    l[#l + 1] = base[n]
    plms = C.reverse(l)
  else
    if n < self.pndm_order then
      error(string.format("pndm scheduler: set_timesteps(%d): PRK steps need at least %d steps", n, self.pndm_order), 2)
    end
    -- the last pndm_order base timesteps, each with a half step added after it
    local half = N // n // 2
    local r = {}
    for i = n - self.pndm_order + 1, n do
      r[#r + 1] = base[i]
      r[#r + 1] = base[i] + half
    end
    -- drop the last, repeat each, drop first and last, reverse
    local rr = {}
    for i = 1, #r - 1 do rr[#rr + 1] = r[i]; rr[#rr + 1] = r[i] end
    local inner = {}
    for i = 2, #rr - 1 do inner[#inner + 1] = rr[i] end
    prk = C.reverse(inner)
    for i = n - 3, 1, -1 do plms[#plms + 1] = base[i] end
  end
  self.prk_timesteps, self.plms_timesteps = prk, plms
  local ts = {}
  for _, v in ipairs(prk) do ts[#ts + 1] = v end
  for _, v in ipairs(plms) do ts[#ts + 1] = v end
  self.timesteps = ts
  self:reset()
  self.step_index, self.begin_index = nil, nil
end

PNDM.alpha_at = C.alpha_at

-- x_{t-delta} from x_t and a (combined) eps (formula (9) of the PNDM paper)
function PNDM:prev_sample(x, t, prev_t, eps)
  local a, a_prev = self:alpha_at(t), self:alpha_at(prev_t)
  local b, b_prev = fround(1 - a), fround(1 - a_prev)
  local v = self.config.prediction_type == "v_prediction"
  if v then eps = C.lincomb(eps, fround(sqrt(a)), x, fround(sqrt(b))) end
  local sample_coeff = fround(sqrt(fround(a_prev / a)))
  local denom = fround(fround(a * fround(sqrt(b_prev))) + fround(sqrt(fround(fround(a * b) * a_prev))))
  local prev = C.lincomb(x, sample_coeff, eps, -fround(fround(a_prev - a) / denom))
  if v then eps:release() end
  return prev
end

function PNDM:step(model_output, t, x)
  self:check_ready()
  t = math.tointeger(C.tnum(t)) or error("pndm scheduler: timestep must be an integer", 2)
  local prev
  if self.counter < #self.prk_timesteps and not self.config.skip_prk_steps then
    prev = self:step_prk(model_output, t, x)
  else
    prev = self:step_plms(model_output, t, x)
  end
  self.step_index = (self.step_index or 0) + 1
  return prev
end

function PNDM:step_prk(mo, t, x)
  local N, n = self.config.num_train_timesteps, self.num_inference_steps
  local diff = (self.counter % 2 == 1) and 0 or N // n // 2
  local prev_t = t - diff
  t = self.prk_timesteps[self.counter // 4 * 4 + 1]
  local c = self.counter % 4
  local combined -- the last RK stage's eps, ours to release
  if c == 0 then
    self.cur_model_output = mo * (1 / 6)
    self.ets[#self.ets + 1] = C.keep(mo)
    C.free(self.cur_sample)
    self.cur_sample = C.keep(x)
  else
    -- cur_model_output + mo * w, in place (cur_model_output is the scheduler's own)
    local term = mo * (c == 3 and 1 / 6 or 1 / 3)
    self.cur_model_output:add_(term)
    term:release()
    if c == 3 then
      combined, mo = self.cur_model_output, self.cur_model_output
      self.cur_model_output = nil
    end
  end
  local cur = self.cur_sample or x
  self.counter = self.counter + 1
  local prev = self:prev_sample(cur, t, prev_t, mo)
  if combined then combined:release() end
  return prev
end

function PNDM:step_plms(mo, t, x)
  local N, n = self.config.num_train_timesteps, self.num_inference_steps
  if not self.config.skip_prk_steps and #self.ets < 3 then
    error("pndm scheduler: PLMS needs 3 PRK steps first (run every timestep of s.timesteps)", 3)
  end
  local prev_t = t - N // n
  local ets = self.ets
  if self.counter ~= 1 then
    while #ets > 3 do table.remove(ets, 1):release() end
    ets[#ets + 1] = C.keep(mo)
  else
    prev_t = t
    t = t + N // n
  end
  local e = #ets
  local combined, sample -- temporaries of this step (the combined eps, the stored sample used up)
  if e == 1 and self.counter == 0 then
    self.cur_sample = C.keep(x)
  elseif e == 1 and self.counter == 1 then
    combined = (mo + ets[e]):div_(2)
    sample, self.cur_sample = self.cur_sample, nil
    x = sample
  elseif e == 2 then
    combined = C.lincomb(ets[e], 3, ets[e - 1], -1):div_(2)
  elseif e == 3 then
    combined = C.lincomb(ets[e], 23, ets[e - 1], -16, ets[e - 2], 5):div_(12)
  else
    combined = C.lincomb(ets[e], 55, ets[e - 1], -59, ets[e - 2], 37, ets[e - 3], -9):mul_(1 / 24)
  end
  self.counter = self.counter + 1
  local prev = self:prev_sample(x, t, prev_t, combined or mo)
  C.free(combined, sample)
  return prev
end

PNDM.add_noise = C.add_noise_alpha

return PNDM
