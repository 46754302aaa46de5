-- DPM-Solver multistep (DPMSolverMultistepScheduler): DPM-Solver / DPM-Solver++ (Lu et al.
-- 2022), 1st to 3rd order multistep in log-SNR time, and their SDE variants. Names:
-- dpmpp_2m (algorithm_type "dpmsolver++", solver_order 2; with use_karras_sigmas = true it is
-- "DPM++ 2M Karras") and dpmpp_2m_sde ("sde-dpmsolver++", draws noise on every step).
local C = require "sd.schedulers.common"
local fround = C.fround
local sqrt, exp = math.sqrt, math.exp

local DPM = C.class{
  name = "dpmsolver",
  defaults = {
    solver_order = 2,
    prediction_type = "epsilon",
    thresholding = false,
    dynamic_thresholding_ratio = 0.995,
    sample_max_value = 1.0,
    algorithm_type = "dpmsolver++",
    solver_type = "midpoint",
    lower_order_final = true,
    euler_at_final = false,
    use_karras_sigmas = false,
    use_lu_lambdas = false,
    final_sigmas_type = "zero",
    lambda_min_clipped = -math.huge,
    variance_type = false, -- unset (None)
    timestep_spacing = "linspace",
    rescale_betas_zero_snr = false,
  },
  nullable = {variance_type = "string"},
  choices = {
    algorithm_type = {"dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++", "deis"},
    solver_type = {"midpoint", "heun", "logrho", "bh1", "bh2"},
    final_sigmas_type = {"zero", "sigma_min"},
    variance_type = {"learned", "learned_range"},
  },
}

function DPM:init()
  local cfg = self.config
  if cfg.algorithm_type == "deis" then cfg.algorithm_type = "dpmsolver++" end
  if cfg.solver_type ~= "midpoint" and cfg.solver_type ~= "heun" then cfg.solver_type = "midpoint" end
  if math.type(cfg.solver_order) ~= "integer" or cfg.solver_order < 1 or cfg.solver_order > 3 then
    C.bad(self.name, "solver_order", cfg.solver_order, "1, 2, 3")
  end
  if cfg.algorithm_type:find("^sde") and cfg.solver_order == 3 then
    C.bad(self.name, "solver_order", 3, "1, 2 with algorithm_type " .. cfg.algorithm_type)
  end
  if (cfg.algorithm_type == "dpmsolver" or cfg.algorithm_type == "sde-dpmsolver") and cfg.final_sigmas_type == "zero" then
    C.bad(self.name, "final_sigmas_type", "zero", '"sigma_min" with algorithm_type ' .. cfg.algorithm_type)
  end
  C.init_betas(self)
  C.bump_zero_snr(self)
  C.init_multistep(self)
  self.model_outputs = {}
  self.lower_order_nums = 0
end

function DPM:set_timesteps(n)
  local cfg = self.config
  local N = cfg.num_train_timesteps
  n = C.check_steps(self.name, n, N)
  -- timesteps whose lambda is below lambda_min_clipped are not used (cosine schedules)
  local clipped = 0
  for i = N, 1, -1 do -- searchsorted on the flipped (ascending) lambdas
    if self.lambda_t[i] < cfg.lambda_min_clipped then clipped = clipped + 1 else break end
  end
  local last = N - clipped
  local ts = C.multistep_timesteps(cfg.timestep_spacing, n, N, cfg.steps_offset, last)
  local train = C.train_sigmas(self.alphas_cumprod)
  local logs = C.log_f32(train)
  local sig
  if cfg.use_karras_sigmas then
    sig = C.karras_sigmas(train[1], train[N], n)
    ts = {}
    for i = 1, #sig do ts[i] = C.round_half_even(C.sigma_to_t(sig[i], logs)) end
  elseif cfg.use_lu_lambdas then
    local lmin, lmax = -logs[N], -logs[1] -- lambda = -log(sigma)
    local lambdas = C.np_linspace(lmin, lmax, n)
    sig = {}
    ts = {}
    for i = 1, n do
      sig[i] = exp(-lambdas[i])
      ts[i] = C.round_half_even(C.sigma_to_t(sig[i], logs))
    end
  else
    sig = {}
    for i = 1, #ts do sig[i] = C.interp_index(ts[i], train) end
  end
  local sigmas = {}
  for i = 1, #sig do sigmas[i] = fround(sig[i]) end
  if cfg.final_sigmas_type == "sigma_min" then
    sigmas[#sigmas + 1] = train[1]
  else
    sigmas[#sigmas + 1] = 0.0
  end
  for i = 1, #ts do ts[i] = math.tointeger(ts[i]) or ts[i] end
  self.timesteps, self.sigmas = ts, sigmas
  self.num_inference_steps = #ts
  C.release_all(self.model_outputs)
  self.model_outputs = {}
  self.lower_order_nums = 0
  self.step_index, self.begin_index = nil, nil
end

local alpha_sigma, lambda_of = C.alpha_sigma, C.lambda_of
DPM.alpha_sigma = alpha_sigma

-- the model output as x0 (dpmsolver++ types) or eps (dpmsolver types)
function DPM:convert_model_output(mo, x)
  local cfg = self.config
  local a, s = alpha_sigma(self.sigmas[self.step_index])
  local pt = cfg.prediction_type
  if cfg.algorithm_type == "dpmsolver++" or cfg.algorithm_type == "sde-dpmsolver++" then
    local x0 = C.x0_from_output(pt, mo, x, a, s)
    if cfg.thresholding then x0 = C.clip_x0(cfg, x0, mo) end
    return x0
  else
    local eps = C.eps_from_output(pt, mo, x, a, s)
    if cfg.thresholding then
      local x0 = C.clip_x0(cfg, C.sub_scaled_div(x, eps, s, a))
      C.release_unless(eps, mo)
      eps = C.sub_scaled_div(x, x0, a, s)
      x0:release()
    end
    return eps
  end
end

function DPM:first_order(m0, x, noise)
  local i = self.step_index
  local at, st = alpha_sigma(self.sigmas[i + 1])
  local as, ss = alpha_sigma(self.sigmas[i])
  local h = fround(lambda_of(at, st) - lambda_of(as, ss))
  local alg = self.config.algorithm_type
  if alg == "dpmsolver++" then
    return C.lincomb(x, fround(st / ss), m0, -fround(at * fround(exp(-h) - 1)))
  elseif alg == "dpmsolver" then
    return C.lincomb(x, fround(at / as), m0, -fround(st * fround(exp(h) - 1)))
  elseif alg == "sde-dpmsolver++" then
    return C.lincomb(x, fround(fround(st / ss) * fround(exp(-h))), m0, fround(at * fround(1 - fround(exp(-2 * h)))),
      noise, fround(st * fround(sqrt(fround(1 - fround(exp(-2 * h)))))))
  else -- sde-dpmsolver
    return C.lincomb(x, fround(at / as), m0, -fround(2 * fround(st * fround(exp(h) - 1))),
      noise, fround(st * fround(sqrt(fround(fround(exp(2 * h)) - 1)))))
  end
end

function DPM:second_order(x, noise)
  local i = self.step_index
  local sg = self.sigmas
  local at, st = alpha_sigma(sg[i + 1])
  local a0, s0 = alpha_sigma(sg[i])
  local a1, s1 = alpha_sigma(sg[i - 1])
  local lt, l0, l1 = lambda_of(at, st), lambda_of(a0, s0), lambda_of(a1, s1)
  local mos = self.model_outputs
  local m0, m1 = mos[#mos], mos[#mos - 1]
  local h, h0 = fround(lt - l0), fround(l0 - l1)
  local r0 = fround(h0 / h)
  local D0, D1 = m0, (m0 - m1):mul_(fround(1 / r0))
  local alg, st_type = self.config.algorithm_type, self.config.solver_type
  local emh, eh = fround(exp(-h)), fround(exp(h))
  -- each update is x * cx + D0 * c0 + D1 * c1 (+ noise * cn), differences as negative terms
  local prev
  if alg == "dpmsolver++" then
    local c = fround(at * fround(emh - 1))
    local c1 = st_type == "midpoint" and -fround(0.5 * c) or fround(at * fround(fround(fround(emh - 1) / h) + 1))
    prev = C.lincomb(x, fround(st / s0), D0, -c, D1, c1)
  elseif alg == "dpmsolver" then
    local c = fround(st * fround(eh - 1))
    local c1 = st_type == "midpoint" and fround(0.5 * c) or fround(st * fround(fround(fround(eh - 1) / h) - 1))
    prev = C.lincomb(x, fround(at / a0), D0, -c, D1, -c1)
  elseif alg == "sde-dpmsolver++" then
    local e2 = fround(exp(-2 * h))
    local c = fround(at * fround(1 - e2))
    local c1 = st_type == "midpoint" and fround(0.5 * c) or fround(at * fround(fround(fround(1 - e2) / fround(-2 * h)) + 1))
    prev = C.lincomb(x, fround(fround(st / s0) * emh), D0, c, D1, c1, noise, fround(st * fround(sqrt(fround(1 - e2)))))
  else -- sde-dpmsolver
    local c = fround(st * fround(eh - 1))
    local c1 = st_type == "midpoint" and c or fround(2 * fround(st * fround(fround(fround(eh - 1) / h) - 1)))
    prev = C.lincomb(x, fround(at / a0), D0, -fround(2 * c), D1, -c1, noise,
      fround(st * fround(sqrt(fround(fround(exp(2 * h)) - 1)))))
  end
  D1:release()
  return prev
end

function DPM:third_order(x)
  local i = self.step_index
  local sg = self.sigmas
  local at, st = alpha_sigma(sg[i + 1])
  local a0, s0 = alpha_sigma(sg[i])
  local a1, s1 = alpha_sigma(sg[i - 1])
  local a2, s2 = alpha_sigma(sg[i - 2])
  local lt, l0, l1, l2 = lambda_of(at, st), lambda_of(a0, s0), lambda_of(a1, s1), lambda_of(a2, s2)
  local mos = self.model_outputs
  local m0, m1, m2 = mos[#mos], mos[#mos - 1], mos[#mos - 2]
  local h, h0, h1 = lt - l0, l0 - l1, l1 - l2
  local r0, r1 = h0 / h, h1 / h
  local D0 = m0
  local D1_0, D1_1 = (m0 - m1):mul_(1 / r0), (m1 - m2):mul_(1 / r1)
  local diff = D1_0 - D1_1
  local D1 = (diff * (r0 / (r0 + r1))):add_(D1_0)
  local D2 = diff:mul_(1 / (r0 + r1))
  local prev
  if self.config.algorithm_type == "dpmsolver++" then
    local e = exp(-h) - 1
    prev = C.lincomb(x, st / s0, D0, -(at * e), D1, at * (e / h + 1), D2, -(at * ((e + h) / (h * h) - 0.5)))
  else
    local e = exp(h) - 1
    prev = C.lincomb(x, at / a0, D0, -(st * e), D1, -(st * (e / h - 1)), D2, -(st * ((e - h) / (h * h) - 0.5)))
  end
  C.free(D1_0, D1_1, D1, D2)
  return prev
end

function DPM:step(model_output, t, x, generator)
  self:check_ready()
  local cfg = self.config
  local i = C.init_step_index(self, t)
  local n = #self.timesteps
  local lower_final = (i == n) and (cfg.euler_at_final or (cfg.lower_order_final and n < 15)
    or cfg.final_sigmas_type == "zero")
  local lower_second = (i == n - 1) and cfg.lower_order_final and n < 15
  local m = self:convert_model_output(model_output, x)
  local mos = self.model_outputs
  mos[#mos + 1] = rawequal(m, model_output) and C.keep(m) or m
  while #mos > cfg.solver_order do table.remove(mos, 1):release() end
  local noise
  if cfg.algorithm_type:find("^sde") then
    noise = C.step_noise(self, generator, model_output.shape)
  end
  local prev
  if cfg.solver_order == 1 or self.lower_order_nums < 1 or lower_final then
    prev = self:first_order(m, x, noise)
  elseif cfg.solver_order == 2 or self.lower_order_nums < 2 or lower_second then
    prev = self:second_order(x, noise)
  else
    prev = self:third_order(x)
  end
  C.free(noise)
  if self.lower_order_nums < cfg.solver_order then self.lower_order_nums = self.lower_order_nums + 1 end
  self.step_index = i + 1
  -- x0 is the caller's: a copy of m, which stays in the history
  local x0
  if cfg.algorithm_type:find("%+%+$") then
    x0 = C.keep(m)
  else
    local a, sg = alpha_sigma(self.sigmas[i])
    x0 = C.sub_scaled_div(x, m, sg, a)
  end
  return prev, x0
end

function DPM:add_noise(original, noise, timesteps)
  local ts = C.timestep_list(timesteps, original.shape[1])
  local idx = C.noise_step_indices(self, ts)
  local a, s = {}, {}
  for k, j in ipairs(idx) do a[k], s[k] = alpha_sigma(self.sigmas[j]) end
  return C.mix_per_batch(original, a, noise, s)
end

return DPM
