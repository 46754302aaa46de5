-- Scheduler tests: schedules and whole sampling trajectories against the diffusers goldens in
-- reference/schedulers/ (README section 5), add_noise, config errors.
local test = require "test"
local sd = require "sd"
local schedulers = require "sd.schedulers"
local C = require "sd.schedulers.common"
local T = sd.tensor
local fround = C.fround

-- A small JSON reader for the golden metadata (which also has -Infinity / NaN). JSON null
-- becomes nil (the key is left out), which our configs read as "unset".
local function json_decode(s)
  local pos = 1
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local value
  local function str()
    local out = {}
    pos = pos + 1
    while true do
      local c = s:sub(pos, pos)
      if c == '"' then pos = pos + 1; break end
      if c == "\\" then
        local e = s:sub(pos + 1, pos + 1)
        local map = {n = "\n", t = "\t", r = "\r", b = "\b", f = "\f", ['"'] = '"', ["\\"] = "\\", ["/"] = "/"}
        if e == "u" then
          out[#out + 1] = utf8.char(tonumber(s:sub(pos + 2, pos + 5), 16)); pos = pos + 6
        else
          out[#out + 1] = map[e]; pos = pos + 2
        end
      else
        out[#out + 1] = c; pos = pos + 1
      end
    end
    return table.concat(out)
  end
  function value()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      local obj = {}
      pos = pos + 1; ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1; return obj end
      while true do
        ws(); local k = str(); ws(); pos = pos + 1 -- ':'
        obj[k] = value(); ws()
        local d = s:sub(pos, pos); pos = pos + 1
        if d == "}" then return obj end
      end
    elseif c == "[" then
      local arr = {}
      pos = pos + 1; ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1; return arr end
      while true do
        arr[#arr + 1] = value(); ws()
        local d = s:sub(pos, pos); pos = pos + 1
        if d == "]" then return arr end
      end
    elseif c == '"' then return str()
    elseif s:sub(pos, pos + 3) == "true" then pos = pos + 4; return true
    elseif s:sub(pos, pos + 4) == "false" then pos = pos + 5; return false
    elseif s:sub(pos, pos + 3) == "null" then pos = pos + 4; return nil
    elseif s:sub(pos, pos + 2) == "NaN" then pos = pos + 3; return 0 / 0
    elseif s:sub(pos, pos + 7) == "Infinity" then pos = pos + 8; return math.huge
    elseif s:sub(pos, pos + 8) == "-Infinity" then pos = pos + 9; return -math.huge
    else
      local num = s:match("^-?[%d.eE+-]+", pos)
      pos = pos + #num
      return math.tointeger(tonumber(num)) or tonumber(num)
    end
  end
  return value()
end

local flat = test.flat

local function maxdiff(a, b)
  local fa, fb = flat(a), flat(b)
  assert(#fa == #fb, string.format("size mismatch %d vs %d", #fa, #fb))
  local m = 0
  for i = 1, #fa do
    local d = math.abs(fa[i] - fb[i])
    if d ~= d then return math.huge end
    if d > m then m = d end
  end
  return m
end

-- Max abs difference of two lists; with `rel`, each difference is first divided by
-- max(1, |want|) (float32 values above 1 are spaced wider than 1e-6).
local function list_maxdiff(got, want, skip_nan, rel)
  local m = 0
  if #got ~= #want then error(string.format("length %d, expected %d", #got, #want), 2) end
  for i = 1, #want do
    if not (skip_nan and want[i] ~= want[i]) then
      local d = math.abs(got[i] - want[i])
      if rel then d = d / math.max(1, math.abs(want[i])) end
      if d ~= d then d = math.huge end
      if d > m then m = d end
    end
  end
  return m
end

-- Scheduler name for a golden's diffusers class + config.
local function name_for(class_name, cfg)
  if class_name == "DPMSolverMultistepScheduler" then
    return cfg.algorithm_type == "sde-dpmsolver++" and "dpmpp_2m_sde" or "dpmpp_2m"
  end
  return assert(schedulers.class_names[class_name], class_name)
end

local golden_files = {"ddim", "ddim_v", "ddpm", "pndm", "lms", "euler", "euler_v", "euler_karras", "euler_a", "heun",
  "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_2m_sde", "unipc", "lcm", "dpm2"}

-- Float schedule values: within 1e-6, relative above 1 (i.e. about 8 float32 ulps). Most
-- come out bit-identical; the Karras and DPM2 midpoint timesteps go through logs/exps that
-- torch (Sleef) and numpy do not round exactly, so a few are 1-2 ulps off (the README's
-- float32-vs-float64 floor for them is ~1e-3).
local TS_TOL = 1e-6
local SIGMA_TOL = 1e-6

for _, file in ipairs(golden_files) do
  test.golden("scheduler golden " .. file, "schedulers/" .. file .. ".safetensors", function(path)
    local w, meta = sd.safetensors.load(path)
    local info = json_decode(meta.config)
    local tol = tonumber(meta.suggested_abs_tolerance)
    local cfg = info.resolved_config
    for k, v in pairs(info.step_kwargs or {}) do cfg[k] = v end
    local name = name_for(info.class_name, cfg)
    local s = sd.scheduler(name, cfg)
    local n = info.num_inference_steps
    s:set_timesteps(n)

    -- schedule
    local want_ts = flat(w.timesteps)
    local integer = info.timesteps_dtype == "torch.int64"
    if integer then
      for i, t in ipairs(s.timesteps) do test.truthy(math.type(t) == "integer" or t == math.floor(t), "integer timestep") end
      test.eq(list_maxdiff(s.timesteps, want_ts), 0, name .. " timesteps")
    else
      test.within(list_maxdiff(s.timesteps, want_ts, false, true), TS_TOL, file .. " timesteps (rel. above 1)")
    end
    test.eq(s.order, info.order, "order")
    if w.sigmas then
      test.within(list_maxdiff(s.sigmas, flat(w.sigmas), false, true), SIGMA_TOL, file .. " sigmas (rel. above 1)")
    end
    if w.sigmas_interpol then
      test.within(list_maxdiff(s.sigmas_interpol, flat(w.sigmas_interpol), true, true), SIGMA_TOL,
        file .. " sigmas_interpol (rel. above 1)")
    end
    test.eq(list_maxdiff(s.betas, flat(w.betas)), 0, "betas")
    test.eq(list_maxdiff(s.alphas_cumprod, flat(w.alphas_cumprod)), 0, "alphas_cumprod")
    test.within(math.abs(s.init_noise_sigma - flat(w.init_noise_sigma)[1]), SIGMA_TOL, file .. " init_noise_sigma")

    -- trajectory: one generator, x_T first, then the steps' noise
    local g = sd.rng.torch(info.seed)
    local xT = g:randn{1, 4, 8, 8}
    test.within(maxdiff(xT, w.x_T), 1e-5, file .. " x_T (torch RNG)")
    local x = xT * s.init_noise_sigma
    local worst, worst_x0, have_x0 = 0, 0, false
    for k, t in ipairs(s.timesteps) do
      local key = string.format("step%02d.", k - 1)
      local xin = s:scale_model_input(x, t)
      local tc = fround(0.05 * fround(math.cos(fround(fround(t) / 37))))
      local mo = xin:tanh() * 0.5 + tc
      local prev, x0 = s:step(mo, t, x, g)
      if w[key .. "prev_sample"] then worst = math.max(worst, maxdiff(prev, w[key .. "prev_sample"])) end
      local wx0 = w[key .. "pred_original_sample"] or w[key .. "denoised"]
      if wx0 then
        test.truthy(x0 ~= nil, "step() returns the predicted x0")
        worst_x0, have_x0 = math.max(worst_x0, maxdiff(x0, wx0)), true
      end
      x = prev
    end
    test.eq(#s.timesteps, #flat(w.timesteps), "number of steps")
    test.within(worst, tol, file .. " every step's prev_sample")
    if have_x0 then test.within(worst_x0, tol, file .. " every step's pred_original_sample") end
    test.within(maxdiff(x, w.final), tol, file .. " final sample")

    -- add_noise (training-side forward process)
    if w["add_noise.noisy"] then
      local s2 = sd.scheduler(name, cfg)
      if s2.sigmas then s2:set_timesteps(n) end
      local ts = flat(w["add_noise.timesteps"])
      local noisy = s2:add_noise(w["add_noise.original"], w["add_noise.noise"], ts)
      test.within(maxdiff(noisy, w["add_noise.noisy"]), tol, file .. " add_noise")
    end
  end)
end

test.case("scheduler names and errors", function()
  test.eq(#schedulers.names, 12, "number of names")
  for _, name in ipairs(schedulers.names) do
    local s = sd.scheduler(name, {beta_schedule = "scaled_linear", beta_start = 0.00085, beta_end = 0.012})
    s:set_timesteps(4)
    test.truthy(#s.timesteps >= 4, name .. " has timesteps")
    test.truthy(type(s.init_noise_sigma) == "number", name .. " init_noise_sigma")
  end
  local err = test.raises(function() sd.scheduler("eulerr", {}) end, "unknown scheduler")
  for _, name in ipairs(schedulers.names) do test.truthy(err:find(name, 1, true), "error lists " .. name) end
  err = test.raises(function() sd.scheduler("ddim", {beta_schedule = "cosine"}) end, "beta_schedule")
  test.truthy(err:find("cosine", 1, true) and err:find("scaled_linear", 1, true), "value and allowed values")
  err = test.raises(function() sd.scheduler("euler", {prediction_type = "eps"}) end, "prediction_type")
  test.truthy(err:find("eps", 1, true) and err:find("v_prediction", 1, true), "value and allowed values")
  test.raises(function() sd.scheduler("dpmpp_2m", {timestep_spacing = "even"}) end, "timestep_spacing")
  test.raises(function() sd.scheduler("unipc", {solver_type = "bh3"}) end, "solver_type")
  test.raises(function() sd.scheduler("ddim", {num_train_timesteps = "many"}) end, "num_train_timesteps")
  test.raises(function() sd.scheduler("euler"):set_timesteps(0) end, "set_timesteps")
  -- keys of other schedulers and _metadata are accepted silently
  sd.scheduler("euler", {_class_name = "PNDMScheduler", skip_prk_steps = true, set_alpha_to_one = false})
  -- JSON decoders give 2.0 for 2 and cjson.null for null
  local s = sd.scheduler("dpmpp_2m", {solver_order = 2.0, num_train_timesteps = 1000.0, steps_offset = 1.0,
    _class_name = "DPMSolverMultistepScheduler"})
  s:set_timesteps(5)
  test.eq(math.type(s.timesteps[1]), "integer", "integer timesteps")
  local u = sd.scheduler("unipc", {disable_corrector = {1.0}})
  u:set_timesteps(5)
  local ok, cjson = pcall(require, "cjson")
  if ok then
    local d = sd.scheduler("ddim", {trained_betas = cjson.null, variance_type = cjson.null})
    test.eq(d.config.trained_betas, false, "null trained_betas")
  end
  test.raises(function() sd.scheduler("ddim", {steps_offset = 0.5}) end, "steps_offset")
  test.raises(function() sd.scheduler("ddim", {clip_sample = "yes"}) end, "clip_sample")
  test.raises(function() sd.scheduler("dpmpp_2m", {final_sigmas_type = "none"}) end, "final_sigmas_type")
end)

test.case("scheduler default spacing and clone", function()
  local sd15 = {beta_schedule = "scaled_linear", beta_start = 0.00085, beta_end = 0.012, steps_offset = 1,
    num_train_timesteps = 1000}
  local ddim = sd.scheduler("ddim", sd15)
  ddim:set_timesteps(10)
  test.eq(ddim.timesteps[1], 901, "ddim leading first timestep")
  test.eq(ddim.timesteps[10], 1, "ddim leading last timestep")
  local euler = sd.scheduler("euler", sd15)
  euler:set_timesteps(10)
  test.eq(euler.timesteps[1], 999, "euler linspace first timestep")
  local trailing = sd.scheduler("ddim", {timestep_spacing = "trailing"})
  trailing:set_timesteps(10)
  test.eq(trailing.timesteps[1], 999, "trailing first")
  test.eq(trailing.timesteps[10], 99, "trailing last")
  -- clone keeps multistep state apart
  local s = sd.scheduler("dpmpp_2m", sd15)
  s:set_timesteps(5)
  local x = T.zeros{1, 4, 8, 8} + 1
  local a = s:step(x * 0.1, s.timesteps[1], x)
  local c = s:clone()
  local b1 = s:step(x * 0.2, s.timesteps[2], a)
  local b2 = c:step(x * 0.2, c.timesteps[2], a)
  test.eq(maxdiff(b1, b2), 0, "clone continues identically")
  -- img2img: begin index
  local e = sd.scheduler("euler", sd15)
  e:set_timesteps(10)
  e:set_begin_index(3)
  local noisy = e:add_noise(x, x, e.timesteps[4])
  test.near(flat(noisy)[1], 1 + e.sigmas[4], 1e-5, "add_noise at begin index")
end)

test.case("scheduler add_noise with a number", function()
  local s = sd.scheduler("ddpm", {})
  local x, n = T.zeros{2, 4, 2, 2} + 1, T.zeros{2, 4, 2, 2}
  local y = s:add_noise(x, n, 0)
  test.near(flat(y)[1], math.sqrt(s.alphas_cumprod[1]), 1e-6, "sqrt(alphas_cumprod[0])")
  local y2 = s:add_noise(x, n, {999, 0})
  test.near(flat(y2)[1], math.sqrt(s.alphas_cumprod[1000]), 1e-6, "per batch item")
end)

-- Every scheduler under many option combinations: runs, stays finite, and reruns identically
-- after a fresh set_timesteps (state fully reset).
test.case("scheduler option combinations run and reset", function()
  local sd15 = {beta_schedule = "scaled_linear", beta_start = 0.00085, beta_end = 0.012, steps_offset = 1,
    num_train_timesteps = 1000, clip_sample = false, set_alpha_to_one = false, skip_prk_steps = true}
  local variants = {
    ddim = {{}, {prediction_type = "v_prediction"}, {eta = 1.0}, {timestep_spacing = "trailing"},
      {clip_sample = true}, {thresholding = true}, {use_clipped_model_output = true, eta = 0.5},
      {rescale_betas_zero_snr = true, timestep_spacing = "trailing", prediction_type = "v_prediction"}},
    ddpm = {{}, {prediction_type = "sample"}, {variance_type = "fixed_large"}, {variance_type = "fixed_small_log"},
      {timestep_spacing = "linspace"}},
    pndm = {{}, {skip_prk_steps = false}, {prediction_type = "v_prediction"}, {timestep_spacing = "trailing"}},
    lms = {{}, {use_karras_sigmas = true}, {prediction_type = "v_prediction"}, {timestep_spacing = "leading"}},
    euler = {{}, {use_karras_sigmas = true}, {s_churn = 1.0}, {timestep_spacing = "trailing"},
      {interpolation_type = "log_linear"}, {prediction_type = "sample"},
      {prediction_type = "v_prediction", timestep_type = "continuous"}},
    euler_a = {{}, {prediction_type = "v_prediction"}, {timestep_spacing = "leading"}},
    heun = {{}, {use_karras_sigmas = true}, {prediction_type = "v_prediction"}, {clip_sample = true}},
    dpm2 = {{}, {use_karras_sigmas = true}, {timestep_spacing = "leading"}},
    dpmpp_2m = {{}, {use_karras_sigmas = true}, {solver_type = "heun"}, {solver_order = 3}, {use_lu_lambdas = true},
      {prediction_type = "v_prediction"}, {final_sigmas_type = "sigma_min"}, {timestep_spacing = "leading"},
      {timestep_spacing = "trailing"}, {thresholding = true, prediction_type = "sample"}},
    dpmpp_2m_sde = {{}, {use_karras_sigmas = true}, {solver_type = "heun"}},
    unipc = {{}, {solver_order = 3}, {solver_type = "bh1"}, {predict_x0 = false}, {use_karras_sigmas = true},
      {disable_corrector = {0, 1}}, {lower_order_final = false}},
    lcm = {{}, {original_inference_steps = 100}, {prediction_type = "v_prediction"}},
  }
  local g0 = sd.rng.torch(7)
  local x0 = g0:randn{1, 4, 8, 8}
  for _, name in ipairs(schedulers.names) do
    for vi, opts in ipairs(variants[name]) do
      local cfg = {}
      for k, v in pairs(sd15) do cfg[k] = v end
      for k, v in pairs(opts) do cfg[k] = v end
      local s = sd.scheduler(name, cfg)
      local function run(steps)
        s:set_timesteps(steps)
        local g = sd.rng.torch(11)
        local x = x0 * s.init_noise_sigma
        for _, t in ipairs(s.timesteps) do
          local xin = s:scale_model_input(x, t)
          local mo = xin:tanh() * 0.5 + 0.05 * math.cos(t / 37)
          x = s:step(mo, t, x, g)
        end
        return x
      end
      for _, steps in ipairs{1, 2, 3, 7, 25} do
        if opts.skip_prk_steps == false and steps < 4 then goto continue end -- PRK needs 4 (as diffusers)
        local ok, a = pcall(run, steps)
        if not ok then error(string.format("%s variant %d, %d steps: %s", name, vi, steps, a), 0) end
        local fa = flat(a)
        for _, v in ipairs(fa) do
          if v ~= v or math.abs(v) > 1e4 then
            error(string.format("%s variant %d, %d steps: non-finite or huge output %s", name, vi, steps, v), 0)
          end
        end
        local b = run(steps)
        test.eq(maxdiff(a, b), 0, string.format("%s variant %d, %d steps: rerun", name, vi, steps))
        ::continue::
      end
    end
  end
end)

return test
