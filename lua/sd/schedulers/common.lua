-- Shared pieces of the noise schedulers: float32 rounding, the beta/alpha/sigma schedules,
-- timestep spacing, Karras sigmas, sigma <-> timestep interpolation, config checking,
-- step-index bookkeeping and the prediction_type conversions.
--
-- Schedule arrays are plain Lua lists (1-based) of numbers. diffusers (the reference) builds
-- them partly in float32 torch and partly in float64 numpy; every place where it rounds to
-- float32 is reproduced here with fround(), so that timesteps and sigmas come out as the same
-- float32 values.
local C = {}

local sqrt, log, exp, floor, abs = math.sqrt, math.log, math.exp, math.floor, math.abs
local spack, sunpack = string.pack, string.unpack

-- Rounds a Lua number (a double) to the nearest float32 (ties to even), as a double.
local function fround(x)
  if x ~= x or x == math.huge or x == -math.huge then return x end
  return (sunpack("<f", spack("<f", x)))
end
C.fround = fround

-- numpy's round(): halves go to the even neighbour.
function C.round_half_even(x)
  local f = floor(x)
  local d = x - f
  if d > 0.5 then return f + 1 end
  if d < 0.5 then return f end
  return (f % 2 == 0) and f or f + 1
end
local rne = C.round_half_even

---------------------------------------------------------------------------------------------
-- Ranges

-- torch.linspace(a, b, n, dtype=float32) on CPU, value for value. The kernel computes a float32
-- step; the first half is a + step*i and the second half b - step*(n-1-i), each as one fused
-- multiply-add; the vectorised loop (8 floats a vector, two vectors an iteration) then adds
-- j*step (j = 0..7) to the vector's first value in float32.
function C.torch_linspace_f32(a, b, n)
  a, b = fround(a), fround(b)
  if n == 1 then return {a} end
  local step = fround(fround(b - a) / (n - 1))
  local half = n // 2
  local out = {}
  local function base(i) -- fused multiply-add: the product i*step is exact in a double
    if i < half then return fround(a + step * i) end
    return fround(b - step * (n - 1 - i))
  end
  local V = 8
  local idx = 0
  while idx + 2 * V <= n do
    for _ = 1, 2 do
      local v0 = base(idx)
      for j = 0, V - 1 do out[idx + j + 1] = fround(v0 + fround(j * step)) end
      idx = idx + V
    end
  end
  while idx < n do
    out[idx + 1] = base(idx)
    idx = idx + 1
  end
  return out
end

-- numpy.linspace(a, b, n, endpoint) in float64.
function C.np_linspace(a, b, n, endpoint)
  if endpoint == nil then endpoint = true end
  local out = {}
  if n <= 0 then return out end
  local div = endpoint and (n - 1) or n
  if div == 0 then out[1] = a; return out end
  local step = (b - a) / div
  for i = 0, n - 1 do out[i + 1] = i * step + a end
  if endpoint and n > 1 then out[n] = b end
  return out
end

-- numpy.arange(start, stop, step) in float64 (start + i*step, ceil((stop-start)/step) values).
function C.np_arange(start, stop, step)
  local n = math.ceil((stop - start) / step)
  local out = {}
  for i = 0, n - 1 do out[i + 1] = start + i * step end
  return out
end

function C.reverse(list)
  local out, n = {}, #list
  for i = 1, n do out[i] = list[n + 1 - i] end
  return out
end

-- numpy.interp(x, [0, 1, ..., #fp-1], fp) for one x (float64).
function C.interp_index(x, fp)
  local n = #fp
  if x ~= x then return x end
  if x <= 0 then return fp[1] end
  if x >= n - 1 then return fp[n] end
  local j = floor(x) -- xp[j] <= x < xp[j+1], xp 0-based
  local slope = (fp[j + 2] - fp[j + 1]) / 1.0
  local r = slope * (x - j) + fp[j + 1]
  if r ~= r then r = slope * (x - (j + 1)) + fp[j + 2] end
  return r
end

---------------------------------------------------------------------------------------------
-- Beta / alpha / sigma schedules (float32 like diffusers' torch tensors)

-- Glide cosine schedule ("squaredcos_cap_v2"), computed in float64 then stored as float32.
local function betas_for_alpha_bar(n, max_beta)
  max_beta = max_beta or 0.999
  local function alpha_bar(t) return math.cos((t + 0.008) / 1.008 * math.pi / 2) ^ 2 end
  local out = {}
  for i = 0, n - 1 do
    local t1, t2 = i / n, (i + 1) / n
    out[i + 1] = fround(math.min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
  end
  return out
end

-- "Common Diffusion Noise Schedules and Sample Steps are Flawed" (rescale_betas_zero_snr):
-- shifts and scales sqrt(alphas_cumprod) so that the last timestep has zero SNR.
local function rescale_zero_terminal_snr(betas)
  local n = #betas
  local ab_sqrt, acc = {}, 1.0
  for i = 1, n do
    acc = acc * fround(1 - betas[i])
    ab_sqrt[i] = fround(sqrt(fround(acc)))
  end
  local a0, aT = ab_sqrt[1], ab_sqrt[n]
  for i = 1, n do
    ab_sqrt[i] = fround(fround(ab_sqrt[i] - aT) * fround(a0 / fround(a0 - aT)))
  end
  local out = {}
  local prev
  for i = 1, n do
    local ab = fround(ab_sqrt[i] * ab_sqrt[i])
    local alpha = (i == 1) and ab or fround(ab / prev)
    out[i] = fround(1 - alpha)
    prev = ab
  end
  return out
end

-- The betas a config describes: trained_betas, or beta_schedule over num_train_timesteps.
function C.make_betas(cfg)
  local n = cfg.num_train_timesteps
  local betas
  if cfg.trained_betas then
    betas = {}
    for i, v in ipairs(cfg.trained_betas) do betas[i] = fround(v) end
  elseif cfg.beta_schedule == "linear" then
    betas = C.torch_linspace_f32(cfg.beta_start, cfg.beta_end, n)
  elseif cfg.beta_schedule == "scaled_linear" then
    local r = C.torch_linspace_f32(cfg.beta_start ^ 0.5, cfg.beta_end ^ 0.5, n)
    betas = {}
    for i = 1, n do betas[i] = fround(r[i] * r[i]) end
  elseif cfg.beta_schedule == "squaredcos_cap_v2" then
    betas = betas_for_alpha_bar(n)
  else
    error(string.format("scheduler config: beta_schedule = %q is not one of linear, scaled_linear, squaredcos_cap_v2",
      tostring(cfg.beta_schedule)), 0)
  end
  if cfg.rescale_betas_zero_snr then betas = rescale_zero_terminal_snr(betas) end
  return betas
end

-- alphas = 1 - betas (float32); torch.cumprod accumulates in double and stores float32.
function C.alphas_cumprod(betas)
  local out, acc = {}, 1.0
  for i = 1, #betas do
    acc = acc * fround(1 - betas[i])
    out[i] = fround(acc)
  end
  return out
end

-- Fills s.betas, s.alphas_cumprod (lists indexed by timestep + 1).
function C.init_betas(s)
  s.betas = C.make_betas(s.config)
  s.alphas_cumprod = C.alphas_cumprod(s.betas)
end

-- After rescale_betas_zero_snr the last alphas_cumprod is 0 (infinite sigma); the sigma-based
-- schedulers replace it by 2^-24 as diffusers does.
function C.bump_zero_snr(s)
  if s.config.rescale_betas_zero_snr then s.alphas_cumprod[#s.alphas_cumprod] = fround(2 ^ -24) end
end

-- ((1 - ac) / ac) ** 0.5 in float32, one per train timestep.
function C.train_sigmas(ac)
  local out = {}
  for i = 1, #ac do out[i] = fround(sqrt(fround(fround(1 - ac[i]) / ac[i]))) end
  return out
end

-- float32 fused multiply-add a*b + c with one rounding (a, b, c float32 values: the product
-- is exact in a double; the sum's rounding error is carried to break float32 ties).
local function fma_f32(a, b, c)
  local p = a * b
  local s = p + c
  local bb = s - p
  local err = (p - (s - bb)) + (c - bb)
  local r = fround(s)
  if err ~= 0 and r ~= s then
    local other = fround(r + (s - r) * 2) -- the float32 neighbour on s's side
    if s - r == other - s then -- s is a tie: the exact value decides
      if (err > 0) == (other > r) then r = other end
    end
  end
  return r
end

-- numpy's float32 log (the AVX2/AVX512F kernel of numpy 1.2x, which diffusers' np.log of a
-- float32 sigma array runs): mantissa in [sqrt(1/2), sqrt(2)), a 5/5 rational polynomial in
-- m - 1 evaluated with float32 FMAs, plus e*ln2. Up to ~4 ulp from the exact log.
local function fbits(b) return (sunpack("<f", spack("<I4", b))) end
local LOG_P = {0.0, 9.999999999999998702752e-01, 2.112677543073053063722e+00, 1.480000633576506585156e+00,
  3.808837741388407920751e-01, 2.589979117907922693523e-02}
local LOG_Q = {1.0, 2.612677543073109236779e+00, 2.453006071784736363091e+00, 9.864942958519418960339e-01,
  1.546476374983906719538e-01, 5.875095403124574342950e-03}
for i = 1, 6 do LOG_P[i], LOG_Q[i] = fround(LOG_P[i]), fround(LOG_Q[i]) end
local LN2_F, SQRT1_2_F = fbits(0x3F317218), fbits(0x3F3504F3)

function C.np_log_f32(v)
  v = fround(v)
  if v ~= v or v < 0 then return 0 / 0 end
  if v == 0 then return -math.huge end
  if v == math.huge then return v end
  local b = sunpack("<I4", spack("<f", v))
  local e = (b >> 23) - 126
  if b < 0x00800000 then -- subnormal: scale by 2^100 first
    b = sunpack("<I4", spack("<f", v * 2.0 ^ 100))
    e = (b >> 23) - 126 - 100
  end
  local m = fbits((b & 0x7fffff) | (126 << 23))
  if m <= SQRT1_2_F then m = m + m; e = e - 1 end
  local x = fround(m - 1)
  local num, den = LOG_P[6], LOG_Q[6]
  for i = 5, 1, -1 do
    num = fma_f32(num, x, LOG_P[i])
    den = fma_f32(den, x, LOG_Q[i])
  end
  return fma_f32(e, LN2_F, fround(num / den))
end

-- np.log of a float32 array (float32 results).
function C.log_f32(list)
  local out = {}
  for i = 1, #list do out[i] = C.np_log_f32(list[i]) end
  return out
end

-- Karras et al. (2022) noise levels: n sigmas from sigma_max down to sigma_min, evenly spaced in
-- sigma^(1/rho) (float64).
function C.karras_sigmas(sigma_min, sigma_max, n, rho)
  rho = rho or 7.0
  local ramp = C.np_linspace(0, 1, n)
  local min_inv, max_inv = sigma_min ^ (1 / rho), sigma_max ^ (1 / rho)
  local out = {}
  for i = 1, n do out[i] = (max_inv + ramp[i] * (min_inv - max_inv)) ^ rho end
  return out
end

-- The fractional train timestep whose (log) sigma is `sigma`: linear interpolation in
-- log sigma between the two neighbouring train timesteps (diffusers' _sigma_to_t).
-- log_sigmas: float32 logs of the train sigmas (ascending in t). f32: do the arithmetic in
-- float32 (as diffusers does when sigma is a float32 tensor).
function C.sigma_to_t(sigma, log_sigmas, f32)
  local r = f32 and fround or function(x) return x end
  local ls = f32 and C.np_log_f32(math.max(sigma, 1e-10)) or log(math.max(sigma, 1e-10))
  local n = #log_sigmas
  if ls ~= ls then return ls end
  -- low_idx = number of log_sigmas <= ls, minus one (cumsum(dists >= 0).argmax), clipped
  local count = 0
  for i = 1, n do if ls - log_sigmas[i] >= 0 then count = count + 1 end end
  local low = count > 0 and (count - 1) or 0
  -- argmax of the cumulative count is its first maximum: the last index with dists >= 0
  if low > n - 2 then low = n - 2 end
  local high = low + 1
  local lo, hi = log_sigmas[low + 1], log_sigmas[high + 1]
  local w = r(r(lo - ls) / r(lo - hi))
  if w < 0 then w = 0 elseif w > 1 then w = 1 end
  return r(r((1 - w) * low) + r(w * high))
end

---------------------------------------------------------------------------------------------
-- Timestep spacing

-- Integer timesteps, descending, as DDIM/DDPM/LCM(-like) schedulers space them:
-- leading: (0..n-1)*(N//n) + steps_offset; linspace: round(linspace(0, N-1, n));
-- trailing: round(arange(N, 0, -N/n)) - 1.
function C.int_timesteps(spacing, n, N, steps_offset)
  local out = {}
  if spacing == "leading" then
    local ratio = N // n
    for i = n - 1, 0, -1 do out[#out + 1] = i * ratio + steps_offset end
  elseif spacing == "linspace" then
    local l = C.np_linspace(0, N - 1, n)
    for i = n, 1, -1 do out[#out + 1] = rne(l[i]) end
  elseif spacing == "trailing" then
    local a = C.np_arange(N, 0, -N / n)
    for i = 1, #a do out[i] = rne(a[i]) - 1 end
  end
  return out
end

-- Float32 timesteps of the k-diffusion style schedulers (Euler, LMS, Heun, DPM2, Euler a).
function C.float_timesteps(spacing, n, N, steps_offset)
  local out = {}
  if spacing == "linspace" then
    local l = C.np_linspace(0, N - 1, n)
    for i = n, 1, -1 do out[#out + 1] = fround(l[i]) end
  elseif spacing == "leading" then
    local ratio = N // n
    for i = n - 1, 0, -1 do out[#out + 1] = fround(i * ratio) + steps_offset end
  elseif spacing == "trailing" then
    local a = C.np_arange(N, 0, -N / n)
    for i = 1, #a do out[i] = fround(rne(a[i])) - 1 end
  end
  return out
end

-- Integer timesteps of the multistep solvers (DPM-Solver++, UniPC): n+1 points, last dropped.
function C.multistep_timesteps(spacing, n, N, steps_offset, last_timestep)
  last_timestep = last_timestep or N
  local out = {}
  if spacing == "linspace" then
    local l = C.np_linspace(0, last_timestep - 1, n + 1)
    for i = n + 1, 2, -1 do out[#out + 1] = rne(l[i]) end
  elseif spacing == "leading" then
    local ratio = last_timestep // (n + 1)
    for i = n, 1, -1 do out[#out + 1] = i * ratio + steps_offset end
  elseif spacing == "trailing" then
    local a = C.np_arange(last_timestep, 0, -N / n)
    for i = 1, #a do out[i] = rne(a[i]) - 1 end
  end
  return out
end

---------------------------------------------------------------------------------------------
-- Config

-- Keys any scheduler family knows: a config written for one scheduler (e.g. a model's PNDM
-- scheduler_config.json) can be handed to another without warnings about the other's keys.
C.all_known_keys = {}
local all_known = C.all_known_keys
for _, k in ipairs{
  "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
  "timestep_spacing", "steps_offset", "clip_sample", "clip_sample_range", "set_alpha_to_one",
  "skip_prk_steps", "use_karras_sigmas", "solver_order", "algorithm_type", "solver_type",
  "lower_order_final", "thresholding", "dynamic_thresholding_ratio", "sample_max_value", "eta",
  "use_clipped_model_output", "s_churn", "s_tmin", "s_tmax", "s_noise", "interpolation_type",
  "timestep_type", "original_inference_steps", "timestep_scaling", "rescale_betas_zero_snr",
  "variance_type", "euler_at_final", "use_lu_lambdas", "final_sigmas_type", "lambda_min_clipped",
  "predict_x0", "disable_corrector", "solver_p", "sigma_min", "sigma_max", "lms_order",
  "clip_denoised", "use_exponential_sigmas", "use_beta_sigmas", "shift", "use_dynamic_shifting",
  "rho", "sigma_data", "karras_diffusion", "noise_sampler_seed", "time_shift_type",
} do all_known[k] = true end

-- Keys every scheduler takes, with diffusers' defaults.
C.base_defaults = {
  num_train_timesteps = 1000,
  beta_start = 0.0001,
  beta_end = 0.02,
  beta_schedule = "linear",
  trained_betas = false, -- false = none (JSON null)
  prediction_type = "epsilon",
  steps_offset = 0,
}

-- Allowed values of the enumerated keys.
C.choices = {
  beta_schedule = {"linear", "scaled_linear", "squaredcos_cap_v2"},
  prediction_type = {"epsilon", "v_prediction", "sample"},
  timestep_spacing = {"leading", "trailing", "linspace"},
}

-- JSON null: nil, or lua-cjson's cjson.null (a light userdata) when a config was decoded
-- without normalising.
local function is_null(v)
  if v == nil then return true end
  if type(v) == "userdata" then
    local ok, cjson = package.loaded.cjson ~= nil, package.loaded.cjson
    if ok and v == cjson.null then return true end
  end
  return false
end

local function describe(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

-- Builds the resolved config of a scheduler: its own defaults, then `user` laid over them.
-- spec = {name=, defaults={key=value}, choices={key={...}}}. A default of false for a key
-- whose diffusers default is None means "unset". Unknown keys: "_..." keys and keys of other
-- scheduler families are ignored silently; anything else is ignored with one warning on stderr.
-- Wrong values are errors naming the key, the value and what is allowed.
function C.resolve_config(spec, user, name)
  if name and name ~= spec.name then
    local s2 = setmetatable({name = name}, {__index = spec})
    spec = s2
  end
  local cfg = {}
  for k, v in pairs(C.base_defaults) do cfg[k] = v end
  for k, v in pairs(spec.defaults or {}) do cfg[k] = v end
  local choices = {}
  for k, v in pairs(C.choices) do choices[k] = v end
  for k, v in pairs(spec.choices or {}) do choices[k] = v end
  local unknown = {}
  if user ~= nil and type(user) ~= "table" then
    error(string.format("%s scheduler: config must be a table, got %s", spec.name, type(user)), 0)
  end
  for k, v in pairs(user or {}) do
    if type(k) ~= "string" then
      error(string.format("%s scheduler: config keys must be strings, got %s", spec.name, describe(k)), 0)
    end
    if cfg[k] ~= nil then
      if is_null(v) then
        -- JSON null: "unset" for keys that can be unset, else the default stays
        if k == "trained_betas" or (spec.nullable or {})[k] ~= nil then cfg[k] = false end
      else
        -- JSON decoders may give 2.0 for 2: integer keys get integers
        if math.type(v) == "float" and v == floor(v) and math.type(cfg[k]) == "integer" then
          v = math.tointeger(v)
        end
        cfg[k] = v
      end
    elseif k:sub(1, 1) == "_" or all_known[k] then
      -- another scheduler's key (or metadata such as _class_name): not used here
    else
      unknown[#unknown + 1] = k
    end
  end
  if #unknown > 0 then
    table.sort(unknown)
    io.stderr:write(string.format("warning: %s scheduler: ignoring unknown config key%s %s\n", spec.name,
      #unknown > 1 and "s" or "", table.concat(unknown, ", ")))
  end
  -- type and value checks
  local defaults = spec.defaults or {}
  for k, v in pairs(cfg) do
    local allowed = choices[k]
    if allowed and not (v == false and (spec.nullable or {})[k] ~= nil) then
      local ok = false
      for _, a in ipairs(allowed) do if a == v then ok = true end end
      if not ok then
        local list = {}
        for _, a in ipairs(allowed) do list[#list + 1] = describe(a) end
        error(string.format("%s scheduler: config %s = %s is not allowed (allowed: %s)", spec.name, k, describe(v),
          table.concat(list, ", ")), 0)
      end
    else
      local d = defaults[k]
      if d == nil then d = C.base_defaults[k] end
      local want = type(d)
      if k == "trained_betas" then
        if v ~= false and type(v) ~= "table" then
          error(string.format("%s scheduler: config trained_betas = %s must be a list of numbers", spec.name,
            describe(v)), 0)
        end
      elseif want == "boolean" and d == false and (spec.nullable or {})[k] ~= nil then
        local t = spec.nullable[k]
        if v ~= false and type(v) ~= t then
          error(string.format("%s scheduler: config %s = %s must be a %s or null", spec.name, k, describe(v), t), 0)
        end
      elseif want == "number" or want == "boolean" or want == "string" then
        if type(v) ~= want then
          error(string.format("%s scheduler: config %s = %s must be a %s", spec.name, k, describe(v), want), 0)
        end
      end
    end
  end
  if math.type(cfg.num_train_timesteps) == "float" and cfg.num_train_timesteps == floor(cfg.num_train_timesteps) then
    cfg.num_train_timesteps = math.tointeger(cfg.num_train_timesteps)
  end
  if math.type(cfg.num_train_timesteps) ~= "integer" or cfg.num_train_timesteps < 2 then
    error(string.format("%s scheduler: config num_train_timesteps = %s must be an integer >= 2", spec.name,
      describe(cfg.num_train_timesteps)), 0)
  end
  if math.type(cfg.steps_offset) ~= "integer" then
    error(string.format("%s scheduler: config steps_offset = %s must be an integer", spec.name,
      describe(cfg.steps_offset)), 0)
  end
  if cfg.trained_betas and #cfg.trained_betas ~= cfg.num_train_timesteps then
    error(string.format("%s scheduler: config trained_betas has %d values, num_train_timesteps is %d", spec.name,
      #cfg.trained_betas, cfg.num_train_timesteps), 0)
  end
  return cfg
end

function C.check_steps(name, n, N)
  if math.type(n) == "float" and n == floor(n) then n = math.tointeger(n) end
  if math.type(n) ~= "integer" or n < 1 then
    error(string.format("%s scheduler: set_timesteps(%s): the number of steps must be a positive integer", name,
      describe(n)), 3)
  end
  if N and n > N then
    error(string.format("%s scheduler: set_timesteps(%d): more steps than num_train_timesteps (%d)", name, n, N), 3)
  end
  return n
end

---------------------------------------------------------------------------------------------
-- Step index bookkeeping (diffusers' index_for_timestep / _init_step_index / begin_index)

-- t as a plain number (accepts a one-element tensor too).
function C.tnum(t)
  if type(t) == "number" then return t end
  if type(t) == "userdata" or type(t) == "table" then
    local ok, v = pcall(function() return t:item() end)
    if ok and type(v) == "number" then return v end
  end
  error("scheduler: timestep must be a number, got " .. type(t), 3)
end

-- 1-based position of t in the list `schedule`; when t occurs more than once, the second
-- occurrence (diffusers does so, so that img2img never skips a Heun/DPM2 half step).
-- A t that is not exactly in the list matches the nearest entry within 1e-4 (relative).
function C.index_for_timestep(schedule, t, name)
  local hits = {}
  for i = 1, #schedule do if schedule[i] == t then hits[#hits + 1] = i end end
  if #hits == 0 then
    local best, bd = nil, math.huge
    for i = 1, #schedule do
      local d = abs(schedule[i] - t)
      if d < bd then best, bd = i, d end
    end
    if best and bd <= 1e-4 * math.max(1, abs(t)) then
      for i = 1, #schedule do if abs(schedule[i] - schedule[best]) == 0 then hits[#hits + 1] = i end end
    else
      error(string.format("%s scheduler: timestep %s is not one of s.timesteps (call set_timesteps first?)",
        name or "", tostring(t)), 3)
    end
  end
  return hits[#hits > 1 and 2 or 1]
end

-- Sets s.step_index (1-based) on the first call of a run.
function C.init_step_index(s, t)
  if s.step_index == nil then
    if s.begin_index == nil then
      s.step_index = C.index_for_timestep(s.timesteps, C.tnum(t), s.name)
    else
      s.step_index = s.begin_index + 1
    end
  end
  return s.step_index
end

---------------------------------------------------------------------------------------------
-- Tensor helpers

-- A tensor of shape {B, 1, 1, ...} (rank like `like`) holding one value per batch item.
function C.per_batch(T, values, like)
  local shape = like.shape
  local bshape = {#values}
  for i = 2, #shape do bshape[i] = 1 end
  return T.from(values, bshape)
end

-- The list of timesteps of add_noise: a number, a list, or a tensor; one per batch item
-- (a single one is used for the whole batch).
function C.timestep_list(timesteps, batch)
  local list
  if type(timesteps) == "number" then list = {timesteps}
  elseif type(timesteps) == "table" and getmetatable(timesteps) == nil then list = timesteps
  else
    local ok, tl = pcall(function() return timesteps:totable() end)
    if not ok then error("add_noise: timesteps must be a number, a list or a tensor", 3) end
    list = type(tl) == "table" and tl or {tl}
    if type(list[1]) == "table" then
      local flat = {}
      for _, v in ipairs(list) do flat[#flat + 1] = type(v) == "table" and v[1] or v end
      list = flat
    end
  end
  if #list == 1 and batch > 1 then
    local v = list[1]
    list = {}
    for i = 1, batch do list[i] = v end
  end
  if #list ~= batch then
    error(string.format("add_noise: %d timesteps for a batch of %d", #list, batch), 3)
  end
  return list
end

-- alphas_cumprod-based forward process: sqrt(ac[t]) * x0 + sqrt(1 - ac[t]) * noise (DDPM, DDIM,
-- PNDM, LCM). t are train timesteps (integers).
function C.add_noise_ac(s, original, noise, timesteps)
  local ts = C.timestep_list(timesteps, original.shape[1])
  local a, b = {}, {}
  for i, t in ipairs(ts) do
    local ti = math.tointeger(floor(t + 0.5))
    local ac = s.alphas_cumprod[ti + 1]
    if ac == nil then
      error(string.format("%s scheduler: add_noise: timestep %s is outside 0..%d", s.name, tostring(t),
        #s.alphas_cumprod - 1), 2)
    end
    a[i] = fround(sqrt(ac))
    b[i] = fround(sqrt(fround(1 - ac)))
  end
  return C.mix_per_batch(original, a, noise, b)
end

-- original * a + noise * b, with a and b lists of one value per batch item (a nil:
-- original + noise * b), on one new tensor.
function C.mix_per_batch(original, a, noise, b)
  local T = C.T()
  local pb = C.per_batch(T, b, original)
  local out = noise * pb
  pb:release()
  if not a then return out:add_(original) end
  local pa = C.per_batch(T, a, original)
  local scaled = original * pa
  pa:release()
  scaled:add_(out)
  out:release()
  return scaled
end

-- The step indices add_noise uses with a sigma schedule (diffusers semantics): each t's
-- position in s.timesteps, or the current/begin index when one is set (img2img).
function C.noise_step_indices(s, ts)
  local idx = {}
  for i, t in ipairs(ts) do
    if s.begin_index == nil then
      idx[i] = C.index_for_timestep(s.timesteps, t, s.name)
    elseif s.step_index ~= nil then
      idx[i] = s.step_index
    else
      idx[i] = s.begin_index + 1
    end
  end
  return idx
end

-- Dynamic thresholding (Imagen): per batch item, s = the `ratio` quantile of |x0|, clamped to
-- [1, max_value]; x0 is clamped to [-s, s] and divided by s.
function C.threshold(T, x, ratio, max_value)
  local shape = x.shape
  local B = shape[1]
  local n = 1
  for i = 2, #shape do n = n * shape[i] end
  local rows = x:contiguous():view{B, n}:totable()
  local out = {}
  for b = 1, B do
    local row = rows[b]
    local absv = {}
    for i = 1, n do absv[i] = abs(row[i]) end
    table.sort(absv)
    local pos = ratio * (n - 1)
    local lo = floor(pos)
    local q = absv[lo + 1]
    if lo + 1 < n then q = q + (absv[lo + 2] - q) * (pos - lo) end
    local sv = math.min(math.max(q, 1), max_value)
    for i = 1, n do
      local v = row[i]
      if v > sv then v = sv elseif v < -sv then v = -sv end
      out[#out + 1] = v / sv
    end
  end
  return T.from(out, shape)
end

-- Fresh noise for a step (generator:randn(shape)); without a generator, an error that blames
-- the caller of step().
function C.step_noise(s, generator, shape)
  if not generator then error(s.name .. " scheduler: step() needs a generator (sd.rng.torch(seed))", 3) end
  return generator:randn(shape)
end

-- A copy of a caller's tensor that the scheduler keeps for a later step (pipelines may
-- release their latents and model outputs once step() returns).
function C.keep(x)
  return x:clone()
end

-- Memory: step() never releases its arguments (the caller's) nor what it returns or keeps, and
-- releases every other tensor it made as soon as it is dead; a kept tensor (a multistep
-- history entry, a stored sample) is released when the scheduler drops it. So a sampling loop
-- leaves nothing to the garbage collector (tests/lua/test_memory.lua).

-- Releases the temporary x unless it is one of the tensors given after it (a prediction can
-- be the model output itself, e.g. prediction_type "sample").
function C.release_unless(x, ...)
  for i = 1, select("#", ...) do
    if rawequal(x, select(i, ...)) then return end
  end
  x:release()
end

-- Releases each tensor given that is not nil (sd.nn.free).
function C.free(...)
  return require("sd.nn").free(...)
end

-- Releases every tensor of a list (a history being dropped); nil is an empty list.
function C.release_all(list)
  for _, x in ipairs(list or {}) do x:release() end
end

-- t1 * c1 + t2 * c2 + ... (left to right) on one new tensor, with exactly the float operations
-- of the expression written out: a - t * c is computed as a + t * (-c), which rounds the same.
function C.lincomb(t1, c1, ...)
  local out = t1 * c1
  for i = 1, select("#", ...), 2 do
    local t, c = select(i, ...)
    local term = t * c
    out:add_(term)
    term:release()
  end
  return out
end

-- x - y * c (c a number) on one new tensor: y * -c is exactly -(y * c), and adding x to it is
-- exactly x - y * c, so the floats are those of the two-step form without its temporary.
function C.sub_scaled(x, y, c)
  return (y * -c):add_(x)
end

-- (x - y * c) / d on one new tensor.
function C.sub_scaled_div(x, y, c, d)
  return C.sub_scaled(x, y, c):div_(d)
end

-- Copy of a scheduler object: tables are copied (lists of tensors too), and so are tensors: a
-- scheduler releases what it drops from its history, so a copy must own its own.
function C.clone(obj)
  local T = C.T()
  local seen = {}
  local function copy(v)
    if T.is_tensor(v) then return v:clone() end
    if type(v) ~= "table" then return v end
    local mt = getmetatable(v)
    if mt and mt.__name then return v end -- a userdata-like object with a named metatable
    if seen[v] then return seen[v] end
    local out = {}
    seen[v] = out
    for k, x in pairs(v) do out[k] = copy(x) end
    return setmetatable(out, mt)
  end
  return copy(obj)
end

---------------------------------------------------------------------------------------------
-- Setup and methods shared by the alphas_cumprod schedulers (DDIM, DDPM, PNDM, LCM)

-- The train timesteps N-1 .. 0 (a scheduler's s.timesteps before set_timesteps).
function C.train_timesteps(N)
  local out = {}
  for i = 1, N do out[i] = N - i end
  return out
end

-- betas, alphas_cumprod, final_alpha_cumprod (the alpha_prod past the last step: 1 when
-- set_alpha_to_one, else alphas_cumprod at t = 0), init_noise_sigma 1, order 1 and the full
-- train schedule.
function C.init_alpha_scheduler(s, set_alpha_to_one)
  C.init_betas(s)
  s.final_alpha_cumprod = set_alpha_to_one and 1.0 or s.alphas_cumprod[1]
  s.init_noise_sigma = 1.0
  s.order = 1
  s.timesteps = C.train_timesteps(s.config.num_train_timesteps)
end

-- Method: alpha_prod at train timestep t; t < 0 (past the last step) is final_alpha_cumprod.
function C.alpha_at(s, t)
  if t >= 0 then return s.alphas_cumprod[t + 1] end
  return s.final_alpha_cumprod
end

-- Method: set_timesteps(n) with integer timesteps spaced per config (DDIM, DDPM).
function C.set_int_timesteps(s, n)
  local cfg = s.config
  n = C.check_steps(s.name, n, cfg.num_train_timesteps)
  s.timesteps = C.int_timesteps(cfg.timestep_spacing, n, cfg.num_train_timesteps, cfg.steps_offset)
  s.num_inference_steps = n
  s.step_index, s.begin_index = nil, nil
end

-- Method: add_noise(original, noise, timesteps) by alphas_cumprod (see add_noise_ac).
function C.add_noise_alpha(s, original, noise, timesteps)
  return C.add_noise_ac(s, original, noise, timesteps)
end

---------------------------------------------------------------------------------------------
-- Pieces of the multistep solvers in log-SNR time (DPM-Solver, UniPC)

-- alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha_t (float32)
function C.alpha_sigma(sigma)
  local a = fround(1 / fround(sqrt(fround(fround(sigma * sigma) + 1))))
  return a, fround(sigma * a)
end

-- lambda_t = log(alpha_t) - log(sigma_t) (float32)
function C.lambda_of(a, s)
  return fround(fround(log(a)) - fround(log(s)))
end

-- After init_betas: alpha_t, sigma_t, lambda_t of the train timesteps (float32),
-- init_noise_sigma 1, order 1, the full train schedule and its sigmas.
function C.init_multistep(s)
  s.alpha_t, s.sigma_t, s.lambda_t = {}, {}, {}
  for i, ac in ipairs(s.alphas_cumprod) do
    local a, sg = fround(sqrt(ac)), fround(sqrt(fround(1 - ac)))
    s.alpha_t[i], s.sigma_t[i] = a, sg
    s.lambda_t[i] = C.lambda_of(a, sg)
  end
  s.init_noise_sigma = 1.0
  s.order = 1
  s.timesteps = C.train_timesteps(s.config.num_train_timesteps)
  s.sigmas = C.train_sigmas(s.alphas_cumprod)
end

---------------------------------------------------------------------------------------------
-- The k-diffusion style schedulers (Euler, Euler a, LMS, Heun, DPM2)

-- Sigma schedule of the k-diffusion style schedulers (Euler, Euler a, LMS, Heun, DPM2):
-- float32 timesteps spaced per config, sigmas interpolated from the train sigmas (float64),
-- or Karras sigmas with the timesteps they correspond to. Returns timesteps (float32 values),
-- sigmas (float64 values, without the final 0) and the float32 log train sigmas.
function C.k_schedule(s, n, opts)
  opts = opts or {}
  local cfg = s.config
  local N = cfg.num_train_timesteps
  local ts = C.float_timesteps(cfg.timestep_spacing, n, N, cfg.steps_offset)
  local train = C.train_sigmas(s.alphas_cumprod)
  local logs = C.log_f32(train)
  local sig
  if cfg.interpolation_type == "log_linear" then
    local l = C.torch_linspace_f32(log(train[#train]), log(train[1]), n + 1)
    sig = {}
    for i = 1, #l do sig[i] = fround(exp(l[i])) end
  else
    sig = {}
    for i = 1, #ts do sig[i] = C.interp_index(ts[i], train) end
  end
  if cfg.use_karras_sigmas then
    local smin = (opts.sigma_min ~= nil and opts.sigma_min) or sig[#sig]
    local smax = (opts.sigma_max ~= nil and opts.sigma_max) or sig[1]
    sig = C.karras_sigmas(smin, smax, n)
    ts = {}
    for i = 1, #sig do ts[i] = fround(C.sigma_to_t(sig[i], logs)) end
  end
  return ts, sig, logs
end

-- The full train schedule a sigma-based scheduler has before set_timesteps (add_noise at
-- training time): timesteps N-1 .. 0 and their sigmas, then 0.
function C.k_init_full(s)
  local N = s.config.num_train_timesteps
  local train = C.train_sigmas(s.alphas_cumprod)
  s.timesteps, s.sigmas = {}, {}
  for i = 1, N do
    s.timesteps[i] = N - i
    s.sigmas[i] = train[N + 1 - i]
  end
  s.sigmas[N + 1] = 0.0
  s.num_inference_steps = nil
  s.init_noise_sigma = C.k_init_noise_sigma(s)
end

-- max(sigmas), or sqrt(max^2 + 1) for "leading" spacing (diffusers' init_noise_sigma of the
-- sigma-based schedulers).
function C.k_init_noise_sigma(s)
  local m = 0
  for i = 1, #s.sigmas do if s.sigmas[i] > m then m = s.sigmas[i] end end
  local sp = s.config.timestep_spacing
  if sp == "linspace" or sp == "trailing" then return m end
  return fround(sqrt(fround(fround(m * m) + 1)))
end

-- 1 / sqrt(sigma^2 + 1) scaling of the model input (float32 scalar math).
function C.k_input_scale(sigma)
  return fround(sqrt(fround(fround(sigma * sigma) + 1)))
end

-- Method: scale_model_input(x, t) = x / sqrt(sigma^2 + 1) at t's step (Euler, Euler a, LMS, Heun).
function C.k_scale_model_input(s, x, t)
  local i = C.init_step_index(s, t)
  return x / C.k_input_scale(s.sigmas[i])
end

-- The sigmas of k_schedule as float32 values, then the final 0.
function C.k_sigmas_f32(sig)
  local sigmas = {}
  for i = 1, #sig do sigmas[i] = fround(sig[i]) end
  sigmas[#sigmas + 1] = 0.0
  return sigmas
end

-- The end of set_timesteps(n) once s.sigmas is set: the step count, init_noise_sigma, and a
-- fresh run (no step or begin index).
function C.k_finish_timesteps(s, n)
  s.num_inference_steps = n
  s.init_noise_sigma = C.k_init_noise_sigma(s)
  s.step_index, s.begin_index = nil, nil
end

-- x0 from a sigma-parameterised model output (Euler, LMS, Heun, DPM2, Euler a).
function C.k_pred_x0(prediction_type, model_output, sample, sigma)
  if prediction_type == "epsilon" then
    return C.sub_scaled(sample, model_output, sigma)
  elseif prediction_type == "v_prediction" then
    local s2 = fround(fround(sigma * sigma) + 1)
    local scaled = sample / s2
    local x0 = (model_output * fround(-sigma / fround(sqrt(s2)))):add_(scaled)
    scaled:release()
    return x0
  else
    return model_output
  end
end

-- x0 from a model output under x_t = alpha x0 + sigma eps (alpha, sigma float32 scalars).
function C.x0_from_output(prediction_type, model_output, x, alpha, sigma)
  if prediction_type == "epsilon" then
    return C.sub_scaled_div(x, model_output, sigma, alpha)
  elseif prediction_type == "sample" then
    return model_output
  else -- v_prediction
    return C.lincomb(x, alpha, model_output, -sigma)
  end
end

-- eps from a model output under x_t = alpha x0 + sigma eps (alpha, sigma float32 scalars).
function C.eps_from_output(prediction_type, model_output, x, alpha, sigma)
  if prediction_type == "epsilon" then
    return model_output
  elseif prediction_type == "sample" then
    return C.sub_scaled_div(x, model_output, alpha, sigma)
  else -- v_prediction
    return C.lincomb(model_output, alpha, x, sigma)
  end
end

-- The alphas_cumprod parameterisation (DDIM, DDPM, PNDM, LCM): x_t = sqrt(a) x0 +
-- sqrt(1 - a) eps, a = alpha_prod_t (float32). alpha_scalings(a) -> sqrt(a), sqrt(1 - a);
-- alpha_pred -> x0 and eps from a model output.
function C.alpha_scalings(a)
  return fround(sqrt(a)), fround(sqrt(fround(1 - a)))
end

function C.alpha_pred(prediction_type, model_output, x, a)
  local sa, sb = C.alpha_scalings(a)
  return C.x0_from_output(prediction_type, model_output, x, sa, sb),
    C.eps_from_output(prediction_type, model_output, x, sa, sb)
end

-- clip_sample / thresholding of a predicted x0 (DDIM, DDPM, LCM, DPM-Solver, UniPC). A clipped
-- copy replaces x0, which is released unless it is the model output `mo` (the caller's).
function C.clip_x0(cfg, x0, mo)
  local out = x0
  if cfg.thresholding then
    out = C.threshold(C.T(), x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
  elseif cfg.clip_sample then
    out = x0:clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
  end
  if not rawequal(out, x0) then C.release_unless(x0, mo) end
  return out
end

---------------------------------------------------------------------------------------------
-- Object plumbing shared by every scheduler

-- The tensor module, looked up at call time (schedule code runs without touching tensors).
function C.T()
  return require("sd").tensor
end

-- Methods every scheduler object has; `cls` adds or overrides its own.
local Base = {}

function Base:clone() return C.clone(self) end

-- img2img (diffusers semantics): i = how many leading entries of s.timesteps are skipped, so
-- the first step() runs s.timesteps[i + 1]. Call after set_timesteps.
function Base:set_begin_index(i)
  if math.type(i) == "float" and i == floor(i) then i = math.tointeger(i) end
  if math.type(i) ~= "integer" or i < 0 then
    error(string.format("%s scheduler: set_begin_index(%s): expected an integer >= 0", self.name, tostring(i)), 2)
  end
  if self.num_inference_steps and i >= #self.timesteps then
    error(string.format("%s scheduler: set_begin_index(%d): only %d timesteps", self.name, i, #self.timesteps), 2)
  end
  self.begin_index = i
end

function Base:scale_model_input(x, t) return x end

function Base:check_ready()
  if not self.timesteps or #self.timesteps == 0 or not self.num_inference_steps then
    error(self.name .. " scheduler: call set_timesteps(n) before step()", 3)
  end
end

-- Makes a scheduler class: cls.new(config, name) resolves the config with `spec` and calls
-- cls.init(self); the object gets Base's methods unless cls has its own.
function C.class(spec)
  local cls = {}
  cls.__index = function(_, k) return rawget(cls, k) or Base[k] end
  function cls.new(user, name)
    local self = setmetatable({name = name or spec.name}, cls)
    self.config = C.resolve_config(spec, user, self.name)
    if spec.check then spec.check(self.config) end
    cls.init(self)
    return self
  end
  cls.spec = spec
  return cls
end

-- Error helper for invalid combinations found after resolving.
function C.bad(name, key, value, allowed)
  error(string.format("%s scheduler: config %s = %s is not allowed (allowed: %s)", name, key, describe(value), allowed), 0)
end

-- Config check of the schedulers that take only epsilon or v_prediction model outputs (Euler a, DPM2).
function C.require_eps_or_v(s)
  if s.config.prediction_type == "sample" then
    C.bad(s.name, "prediction_type", "sample", '"epsilon", "v_prediction"')
  end
end

return C
