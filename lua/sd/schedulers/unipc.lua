-- UniPC (UniPCMultistepScheduler): unified predictor-corrector (Zhao et al. 2023). Each step
-- first corrects the previous step's result with the new model output (UniC), then predicts
-- the next sample (UniP), both of order up to solver_order, in log-SNR time.
local C = require "sd.schedulers.common"
local DPM = require "sd.schedulers.dpmsolver"
local fround = C.fround
local alpha_sigma, lambda_of = C.alpha_sigma, C.lambda_of

local UniPC = C.class{
  name = "unipc",
  defaults = {
    solver_order = 2,
    prediction_type = "epsilon",
    thresholding = false,
    dynamic_thresholding_ratio = 0.995,
    sample_max_value = 1.0,
    predict_x0 = true,
    solver_type = "bh2",
    lower_order_final = true,
    disable_corrector = {},
    use_karras_sigmas = false,
    timestep_spacing = "linspace",
  },
  choices = {solver_type = {"bh1", "bh2", "midpoint", "heun", "logrho"}},
}

function UniPC:init()
  local cfg = self.config
  if cfg.solver_type ~= "bh1" and cfg.solver_type ~= "bh2" then cfg.solver_type = "bh2" end
  if math.type(cfg.solver_order) ~= "integer" or cfg.solver_order < 1 then
    C.bad(self.name, "solver_order", cfg.solver_order, "an integer >= 1")
  end
  if type(cfg.disable_corrector) ~= "table" then
    C.bad(self.name, "disable_corrector", cfg.disable_corrector, "a list of step indices (0-based)")
  end
  self.disabled = {}
  for _, v in ipairs(cfg.disable_corrector) do self.disabled[v] = true end
  C.init_betas(self)
  C.init_multistep(self)
  self:reset()
end

function UniPC:reset()
  C.release_all(self.model_outputs)
  C.free(self.last_sample)
  self.model_outputs = {}
  self.lower_order_nums = 0
  self.last_sample = nil
  self.this_order = nil
end

function UniPC:set_timesteps(n)
  local cfg = self.config
  local N = cfg.num_train_timesteps
  n = C.check_steps(self.name, n, N)
  local ts = C.multistep_timesteps(cfg.timestep_spacing, n, N, cfg.steps_offset, N)
  local train = C.train_sigmas(self.alphas_cumprod)
  local sigmas = {}
  if cfg.use_karras_sigmas then
    local logs = C.log_f32(train)
    local sig = C.karras_sigmas(train[1], train[N], n)
    ts = {}
    for i = 1, #sig do
      ts[i] = math.tointeger(C.round_half_even(C.sigma_to_t(sig[i], logs)))
      sigmas[i] = fround(sig[i])
    end
    sigmas[#sigmas + 1] = sigmas[#sigmas]
  else
    for i = 1, #ts do sigmas[i] = fround(C.interp_index(ts[i], train)) end
    sigmas[#sigmas + 1] = train[1]
  end
  self.timesteps, self.sigmas = ts, sigmas
  self.num_inference_steps = #ts
  self:reset()
  self.step_index, self.begin_index = nil, nil
end

function UniPC:convert_model_output(mo, x)
  local cfg = self.config
  local a, s = alpha_sigma(self.sigmas[self.step_index])
  local pt = cfg.prediction_type
  if cfg.predict_x0 then
    local x0 = C.x0_from_output(pt, mo, x, a, s)
    if cfg.thresholding then x0 = C.clip_x0(cfg, x0, mo) end
    return x0
  else
    return C.eps_from_output(pt, mo, x, a, s)
  end
end

-- Solves the small dense system R x = b (Gaussian elimination with partial pivoting).
local function solve(R, b)
  local n = #b
  local A = {}
  for i = 1, n do
    A[i] = {}
    for j = 1, n do A[i][j] = R[i][j] end
    A[i][n + 1] = b[i]
  end
  for c = 1, n do
    local p = c
    for r = c + 1, n do if math.abs(A[r][c]) > math.abs(A[p][c]) then p = r end end
    A[c], A[p] = A[p], A[c]
    for r = c + 1, n do
      local f = A[r][c] / A[c][c]
      for k = c, n + 1 do A[r][k] = A[r][k] - f * A[c][k] end
    end
  end
  local x = {}
  for i = n, 1, -1 do
    local s = A[i][n + 1]
    for k = i + 1, n do s = s - A[i][k] * x[k] end
    x[i] = s / A[i][i]
  end
  return x
end

-- The B(h) coefficient system shared by predictor and corrector: R[i][k] = rks[k]^(i-1),
-- b[i] = h_phi_i * i! / B_h.
function UniPC:coefficients(hh, rks, order)
  local h_phi_1 = math.exp(hh) - 1 -- expm1 (hh is not tiny here)
  if math.abs(hh) < 1e-5 then h_phi_1 = hh + hh * hh / 2 + hh * hh * hh / 6 end
  local h_phi_k = h_phi_1 / hh - 1
  local fact = 1
  local B_h = self.config.solver_type == "bh1" and hh or h_phi_1
  local R, b = {}, {}
  for i = 1, order do
    R[i] = {}
    for k = 1, #rks do R[i][k] = rks[k] ^ (i - 1) end
    b[i] = h_phi_k * fact / B_h
    fact = fact * (i + 1)
    h_phi_k = h_phi_k / hh - 1 / fact
  end
  return R, b, h_phi_1, B_h
end

-- The history of a step from sigmas[c] (where the newest model output m0 is) to sigmas[c + 1]:
-- m0, alpha/sigma at both ends, h = lambda_t - lambda_0, and for the k = 1 .. order-1 older
-- outputs (at sigmas[c - k]) the ratios r_k = (lambda_k - lambda_0) / h and D1_k = (m_k - m0) / r_k;
-- rks ends with 1.
function UniPC:step_history(c, order)
  local sg = self.sigmas
  local mos = self.model_outputs
  local m0 = mos[#mos]
  local at, st = alpha_sigma(sg[c + 1])
  local a0, s0 = alpha_sigma(sg[c])
  local lt, l0 = lambda_of(at, st), lambda_of(a0, s0)
  local h = fround(lt - l0)
  local rks, D1s = {}, {}
  for k = 1, order - 1 do
    local ak, sk = alpha_sigma(sg[c - k])
    local rk = fround(fround(lambda_of(ak, sk) - l0) / h)
    rks[#rks + 1] = rk
    D1s[#D1s + 1] = (mos[#mos - k] - m0):div_(rk)
  end
  rks[#rks + 1] = 1.0
  return m0, at, st, a0, s0, h, rks, D1s
end

-- sum_k D1s[k] * rhos[k] (float32 rhos) as a new tensor, or nil when there are no D1s.
local function weighted_sum(D1s, rhos)
  local sum
  for k = 1, #D1s do
    local term = D1s[k] * fround(rhos[k])
    if sum then
      sum:add_(term)
      term:release()
    else
      sum = term
    end
  end
  return sum
end

-- The UniP/UniC update from x (at sigma_0) to sigma_t: the first-order step, minus the
-- higher-order correction res (if any) scaled by B(h).
local function multistep_update(pred_x0, x, m0, res, at, st, a0, s0, h_phi_1, B_h)
  local cx, c0, cres
  if pred_x0 then
    cx, c0, cres = fround(st / s0), fround(at * h_phi_1), fround(at * B_h)
  else
    cx, c0, cres = fround(at / a0), fround(st * h_phi_1), fround(st * B_h)
  end
  if res then return C.lincomb(x, cx, m0, -c0, res, -cres) end
  return C.lincomb(x, cx, m0, -c0)
end

-- Predictor (UniP-B(h)): from sample x at step_index to step_index + 1.
function UniPC:predictor(x, order)
  local m0, at, st, a0, s0, h, rks, D1s = self:step_history(self.step_index, order)
  local pred_x0 = self.config.predict_x0
  local hh = pred_x0 and -h or h
  local R, b, h_phi_1, B_h = self:coefficients(hh, rks, order)
  local pred_res
  if #D1s > 0 then
    local rhos
    if order == 2 then rhos = {0.5}
    else
      local Rs, bs = {}, {}
      for r = 1, order - 1 do
        Rs[r] = {}
        for c = 1, order - 1 do Rs[r][c] = R[r][c] end
        bs[r] = b[r]
      end
      rhos = solve(Rs, bs)
    end
    pred_res = weighted_sum(D1s, rhos)
  end
  local x_t = multistep_update(pred_x0, x, m0, pred_res, at, st, a0, s0, h_phi_1, B_h)
  C.free(pred_res)
  C.release_all(D1s)
  return x_t
end

-- Corrector (UniC-B(h)): refines this_sample (the result of the last predictor step, at
-- step_index) using model_t, the converted model output at it.
function UniPC:corrector(model_t, last_sample, this_sample, order)
  local m0, at, st, a0, s0, h, rks, D1s = self:step_history(self.step_index - 1, order)
  local pred_x0 = self.config.predict_x0
  local hh = pred_x0 and -h or h
  local R, b, h_phi_1, B_h = self:coefficients(hh, rks, order)
  local rhos
  if order == 1 then rhos = {0.5} else rhos = solve(R, b) end
  local corr = weighted_sum(D1s, rhos)
  C.release_all(D1s)
  local D1_t = (model_t - m0):mul_(fround(rhos[#rhos]))
  local tail = corr and corr:add_(D1_t) or D1_t
  local x_t = multistep_update(pred_x0, last_sample, m0, tail, at, st, a0, s0, h_phi_1, B_h)
  C.free(D1_t, corr)
  return x_t
end

function UniPC:step(model_output, t, x)
  self:check_ready()
  local cfg = self.config
  local i = C.init_step_index(self, t)
  local use_corrector = i > 1 and not self.disabled[i - 2] and self.last_sample ~= nil
  local m = self:convert_model_output(model_output, x)
  local last = self.last_sample
  if use_corrector then
    x = self:corrector(m, last, x, self.this_order)
  end
  C.free(last)
  local mos = self.model_outputs
  mos[#mos + 1] = rawequal(m, model_output) and C.keep(m) or m
  while #mos > cfg.solver_order do table.remove(mos, 1):release() end
  local this_order = cfg.solver_order
  if cfg.lower_order_final then this_order = math.min(cfg.solver_order, #self.timesteps - i + 1) end
  this_order = math.min(this_order, self.lower_order_nums + 1)
  self.this_order = this_order
  -- the corrected x is ours: kept as it is; the caller's x is copied
  self.last_sample = use_corrector and x or C.keep(x)
  local prev = self:predictor(x, this_order)
  if self.lower_order_nums < cfg.solver_order then self.lower_order_nums = self.lower_order_nums + 1 end
  self.step_index = i + 1
  -- x0 is the caller's: a copy of m, which stays in the history
  local x0
  if cfg.predict_x0 then
    x0 = C.keep(m)
  else
    local a, s = alpha_sigma(self.sigmas[i])
    x0 = C.sub_scaled_div(x, m, s, a)
  end
  return prev, x0
end

UniPC.add_noise = DPM.add_noise

return UniPC
