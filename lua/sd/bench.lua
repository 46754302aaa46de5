-- sd.bench: `make bench-sd`, the whole-pipeline benchmark on the full-size SD 1.5 stand-in
-- (random weights, exact shapes; docs/performance.md, "make bench-sd").
--
--   sdlua lua/sd/bench.lua [--no-docs] [--quick]
--
-- Writes the stand-in once (build/bench/sd15-f16.safetensors, `sdlua make-checkpoint --arch sd15
-- --random --dtype f16`), then runs each measurement in a process of its own, so that each peak
-- RSS is that of one job:
--   * txt2img 512x512 with CFG (2 steps) and 256x256 with CFG (3 steps), f16 weights: load time,
--     text encoding, seconds per step, VAE decode, peak RSS, the tensor-heap peak of every step
--     (sd.memory), and for the U-Net and the VAE decoder the GFLOP/s counted by the profiler
--     (sd.profile: FLOPs from the layer shapes) over their wall time, as a ratio to cblas_sgemm
--     (T.matmul of 2048^3 f32, best of 5, measured in the same process before and after);
--   * the same 512x512 run with precision = "bf16" (when the CPU has AVX512_BF16): seconds per step
--     over the f32 floor (the issue's 922 GFLOP per sample / the same-run sgemm rate);
--   * the same 512x512 run from an f32 stand-in (written once too; 1 step): peak RSS;
--   * a 1024x1024 decode (VAE tiling, 64-latent tiles): peak RSS and time.
-- Prints one table and puts it (with the machine) into docs/performance.md between the
-- bench-sd markers. The sgemm rate is measured between the steps too (see `ratios`). --quick skips the f32 and 1024x1024 runs. Timings are those of one run on
-- a possibly busy machine: read the ratios, not the seconds.
local core = require "sd.core"
local T = core.tensor
local clock = core.clock
local cli = require "sd.cli"

local M = {}

M.CHECKPOINT = "build/bench/sd15-f16.safetensors"
-- the SD 1.5 U-Net's FLOPs per sample at 512x512 as the issue counts them (the f32 floor of the
-- bf16 target); sdlua's own count, from the layer shapes, is printed beside it
M.UNET_FLOPS_512 = 922e9
M.CHECKPOINT_F32 = "build/bench/sd15-f32.safetensors"
M.PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"
M.NEGATIVE = "blurry, low quality"
M.DOCS = "docs/performance.md"
M.BEGIN = "<!-- bench-sd: begin (written by `make bench-sd`) -->"
M.END = "<!-- bench-sd: end -->"

local GB = 1e9

-- ---------------------------------------------------------------------------------------------
-- results travel from a child process to the parent as one line of Lua table constructor

local function serialize(v)
  local t = type(v)
  if t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    if v ~= v then return "0/0" end
    if v == math.huge or v == -math.huge then return v > 0 and "1/0" or "-1/0" end
    return string.format("%.17g", v)
  elseif t == "string" then
    return string.format("%q", v):gsub("\n", "n")
  elseif t == "boolean" then
    return tostring(v)
  elseif t == "table" then
    local parts = {}
    for k, x in pairs(v) do
      local key = type(k) == "string" and string.format("[%q]", k) or "[" .. tostring(k) .. "]"
      parts[#parts + 1] = key .. "=" .. serialize(x)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return "nil"
end

-- best rate of C = A B on n x n f32 matrices (GFLOP/s)
function M.sgemm_rate(n, reps)
  n, reps = n or 2048, reps or 5
  local profiling = core.profile().enabled
  if profiling then core.profile(false) end -- not part of what is measured
  local precision = core.precision()
  core.precision("f32") -- cblas_sgemm even inside a bf16 run
  local g = core.rng.torch(1)
  local a, b = T.randn({n, n}, g), T.randn({n, n}, g)
  local best = math.huge
  for _ = 1, reps do
    local t0 = clock()
    local c = a:matmul(b)
    local dt = clock() - t0
    c:release()
    if dt < best then best = dt end
  end
  a:release(); b:release()
  core.precision(precision)
  if profiling then core.profile(true) end
  return 2 * n * n * n / best / 1e9
end

local function peak_rss()
  return core.memory().peak_rss or 0
end

-- Wraps obj[name] so that every call adds its wall time and its counted FLOPs to acc, and
-- records each call's own (seconds, flops) in acc.each.
local function meter(obj, name, acc)
  local f = obj[name]
  acc.seconds, acc.flops, acc.calls, acc.each = 0, 0, 0, {}
  obj[name] = function(...)
    local f0 = core.profile().flops
    local t0 = clock()
    local r = table.pack(f(...))
    local dt, df = clock() - t0, core.profile().flops - f0
    acc.seconds = acc.seconds + dt
    acc.flops = acc.flops + df
    acc.calls = acc.calls + 1
    acc.each[acc.calls] = {seconds = dt, flops = df}
    return table.unpack(r, 1, r.n)
  end
end

-- The sgemm rate is measured before the first U-Net call, after each step (on_step: outside the
-- step's time) and after the decode, so that every measured call has one measurement on each side.
-- A call's ratio is its GFLOP/s over the mean of those two; on a machine whose load changes
-- during the run this is fairer than one figure for the whole run.
local function ratios(acc, sgemm, first)
  local out = {}
  for i, c in ipairs(acc.each) do
    local a, b = sgemm[first + i - 1], sgemm[first + i]
    out[i] = c.flops / c.seconds / 1e9 / ((a + b) / 2)
  end
  return out
end

local function vocab_folder()
  local ref = os.getenv("SDLUA_REFERENCE") or "../shared/reference"
  local f = io.open(ref .. "/tokenizer/vocab.json", "rb")
  if f then f:close(); return ref .. "/tokenizer" end
  return nil
end

-- ---------------------------------------------------------------------------------------------
-- child jobs

-- txt2img (or only a decode) in this process; returns the measurements.
--   job = {path, width, height, steps, guidance, dtype (nil or "f32"), precision (nil or "bf16"),
--          decode_only}
function M.run_job(job)
  local r = {}
  core.memory_reset_peak()
  local t0 = clock()
  local pipe = require("sd.pipeline").load(job.path, {dtype = job.dtype, vocab = vocab_folder(), quiet = true})
  r.load_seconds = clock() - t0
  r.load_peak_rss = peak_rss()
  core.memory_reset_peak() -- the generation's peak RSS apart from the load's
  local max_rss = 0
  core.profile(true)
  core.profile_reset()
  local unet, vae = {}, {}
  meter(pipe.unet, "forward", unet)
  meter(pipe.vae, "decode", vae)
  local sgemm = {}
  if job.decode_only then
    local g = core.rng.torch(0)
    local z = g:randn{1, 4, job.height // 8, job.width // 8}
    sgemm[1] = M.sgemm_rate(nil, 3)
    max_rss = math.max(max_rss, peak_rss())
    core.memory_reset_peak()
    local img = pipe:decode(z)
    r.decode_seconds = vae.seconds
    img:release()
    z:release()
    max_rss = math.max(max_rss, peak_rss())
    sgemm[2] = M.sgemm_rate(nil, 3)
    r.vae_ratios = ratios(vae, sgemm, 1)
  else
    local ok = pcall(function() pipe:get_tokenizer() end)
    local args = {prompt = M.PROMPT, negative_prompt = M.NEGATIVE, steps = job.steps, guidance = job.guidance,
      seed = 1, scheduler = "euler", width = job.width, height = job.height, precision = job.precision}
    if not ok then
      -- no vocabulary: fixed token ids (BOS, a few words, EOS padding), the encoder timed alone
      local ids = {49406, 320, 1125, 539, 550, 18376, 6765, 320, 2887, 49407}
      for i = #ids + 1, 77 do ids[i] = 49407 end
      local t1 = clock()
      local te = pipe.text_encoder
      args.prompt_embeds = te:forward(T.from(ids, {1, 77}))
      args.negative_prompt_embeds = te:forward(T.from(ids, {1, 77}))
      r.encode_seconds = clock() - t1
      args.prompt, args.negative_prompt = nil, nil
    end
    local step_peaks = {}
    local started = false
    local forward = pipe.unet.forward
    pipe.unet.forward = function(...)
      if not started then
        started = true
        max_rss = math.max(max_rss, peak_rss())
        sgemm[1] = M.sgemm_rate(nil, 3)
        core.memory_reset_peak()
      end
      return forward(...)
    end
    args.on_step = function(i)
      local m = core.memory()
      step_peaks[i] = m.peak
      max_rss = math.max(max_rss, m.peak_rss or 0)
      sgemm[i + 1] = M.sgemm_rate(nil, 3)
      core.memory_reset_peak()
    end
    local img, info = pipe:txt2img(args)
    img:release()
    max_rss = math.max(max_rss, peak_rss())
    sgemm[#sgemm + 1] = M.sgemm_rate(nil, 3)
    r.unet_ratios = ratios(unet, sgemm, 1)
    r.vae_ratios = ratios(vae, sgemm, #sgemm - 1)
    r.encode_seconds = r.encode_seconds or info.encode_seconds
    r.step_seconds = info.step_seconds
    r.decode_seconds = info.decode_seconds
    r.step_heap_peaks = step_peaks
    r.precision = info.precision
  end
  r.peak_rss = math.max(max_rss, peak_rss())
  r.unet = unet
  r.vae = vae
  local prof = core.profile()
  r.kinds = prof.kinds
  r.report = core.profile_report()
  core.profile(false)
  r.sgemm_all = sgemm
  local lo, hi = math.huge, 0
  for _, v in ipairs(sgemm) do lo, hi = math.min(lo, v), math.max(hi, v) end
  r.sgemm_lo, r.sgemm_hi = lo, hi
  return r
end

-- ---------------------------------------------------------------------------------------------
-- the parent

local function sdlua_bin()
  local i, bin = -1, nil
  while arg and arg[i] do bin = arg[i]; i = i - 1 end
  return bin or "bin/sdlua"
end

local function child(job)
  local cmd = sdlua_bin() .. " lua/sd/bench.lua --child " .. cli.shell_quote(serialize(job))
  io.stderr:write("bench-sd: ", job.label, " ...\n")
  local t0 = clock()
  local p = assert(io.popen(cmd, "r"))
  local result
  for line in p:lines() do
    local payload = line:match("^BENCHRESULT (.*)$")
    if payload then result = assert(load("return " .. payload, "=result", "t", {}))() end
  end
  p:close()
  if not result then error("bench-sd: the " .. job.label .. " job failed (see above)", 0) end
  result.wall = clock() - t0
  io.stderr:write(string.format("bench-sd: %s done in %.0f s\n", job.label, result.wall))
  return result
end

local function ensure_checkpoint(path, dtype)
  local f = io.open(path, "rb")
  if f then f:close(); return end
  cli.mkdir_p(cli.dirname(path))
  local cmd = string.format("%s make-checkpoint --arch sd15 --random --dtype %s -o %s", sdlua_bin(), dtype or "f16",
    cli.shell_quote(path))
  io.stderr:write("bench-sd: writing the SD 1.5 stand-in once: ", cmd, "\n")
  local ok = os.execute(cmd)
  if not ok then error("bench-sd: make-checkpoint failed", 0) end
end

local function fmt_list(list, f)
  local out = {}
  for i, v in ipairs(list) do out[i] = f(v) end
  return table.concat(out, " / ")
end

local function machine()
  local model = "?"
  local p = io.popen("lscpu 2>/dev/null")
  if p then
    for line in p:lines() do
      local m = line:match("^Model name:%s*(.-)%s*$")
      if m then model = m end
    end
    p:close()
  end
  local mem = "?"
  local f = io.open("/proc/meminfo")
  if f then
    local kb = f:read("a"):match("MemTotal:%s*(%d+)")
    f:close()
    if kb then mem = string.format("%.0f GB RAM", tonumber(kb) / 1e6) end
  end
  return string.format("%s, %d threads, %s; %s", model, core.threads(), mem, core.cpu())
end

-- The table (Markdown) from the results of the jobs.
function M.table(res)
  local big, small = res.r512, res.r256
  local rows = {}
  local function row(name, a, b) rows[#rows + 1] = string.format("| %s | %s | %s |", name, a, b) end
  local function both(f) return f(big), f(small) end
  local function s(v) return string.format("%.2f s", v) end
  local function gbytes(v) return string.format("%.2f GB", v / GB) end
  rows[#rows + 1] = "| | 512×512, CFG 7.5 | 256×256, CFG 7.5 |"
  rows[#rows + 1] = "|---|---:|---:|"
  row("steps (euler)", #big.step_seconds, #small.step_seconds)
  row("load (sd.load, page cache warm)", both(function(r) return s(r.load_seconds) end))
  row("peak RSS during load", both(function(r) return gbytes(r.load_peak_rss) end))
  row("text encoding (prompt + negative)", both(function(r) return s(r.encode_seconds) end))
  row("seconds per step (each step)", both(function(r) return fmt_list(r.step_seconds, function(v) return string.format("%.2f", v) end) end))
  row("VAE decode", both(function(r) return s(r.decode_seconds) end))
  row("**peak RSS** of the generation (target ≤ 3 GB at 512²)", both(function(r) return "**" .. gbytes(r.peak_rss) .. "**" end))
  row("tensor heap peak per step (sd.memory)", both(function(r)
    return fmt_list(r.step_heap_peaks, function(v) return string.format("%.0f MB", v / 1e6) end) end))
  row("cblas_sgemm 2048³ during the run (min–max)", both(function(r)
    return string.format("%.0f–%.0f GFLOP/s", r.sgemm_lo, r.sgemm_hi) end))
  row("U-Net counted GFLOP per sample", both(function(r)
    return string.format("%.0f", r.unet.flops / 1e9 / (r.unet.calls * 2)) end))
  row("U-Net GFLOP/s", both(function(r) return string.format("%.0f", r.unet.flops / r.unet.seconds / 1e9) end))
  local function rl(list) return fmt_list(list, function(v) return string.format("%.2f", v) end) end
  row("**U-Net / sgemm**, each call (target ≥ 0.8 at 512²)", both(function(r)
    return "**" .. rl(r.unet_ratios) .. "**" end))
  row("VAE decoder counted GFLOP", both(function(r) return string.format("%.0f", r.vae.flops / 1e9) end))
  row("VAE decoder GFLOP/s", both(function(r) return string.format("%.0f", r.vae.flops / r.vae.seconds / 1e9) end))
  row("**VAE decoder / sgemm** (target ≥ 0.75)", both(function(r)
    return "**" .. rl(r.vae_ratios) .. "**" end))
  local lines = {table.concat(rows, "\n")}
  if res.f32 then
    lines[#lines + 1] = string.format("\n* 512×512 from the f32 stand-in (`build/bench/sd15-f32.safetensors`, 4.27 GB, mapped; 1 step, CFG): **peak RSS %.2f GB** (target ≤ 5 GB), load %.2f s.",
      res.f32.peak_rss / GB, res.f32.load_seconds)
  end
  if res.bf16 then
    local r = res.bf16
    local floors, own = {}, {}
    local per_sample = r.unet.flops / (r.unet.calls * 2)
    for i, t in ipairs(r.step_seconds) do
      local rate = (r.sgemm_all[i] + r.sgemm_all[i + 1]) / 2 * 1e9
      floors[i] = t / (2 * M.UNET_FLOPS_512 / rate)
      own[i] = t / (2 * per_sample / rate)
    end
    lines[#lines + 1] = string.format("* precision bf16 (AVX512_BF16 dot products in convolutions, linear layers and attention), 512×512, CFG, f16 weights: seconds per step %s; **step / f32 floor %s** (target ≤ 0.6; floor = 2 × %.0f GFLOP, the issue's count per sample, ÷ the sgemm rate measured around that step; by sdlua's own count of %.0f GFLOP: %s); U-Net %.0f GFLOP/s; VAE decode %.2f s; peak RSS %.2f GB.",
      fmt_list(r.step_seconds, function(v) return string.format("%.2f", v) end),
      fmt_list(floors, function(v) return string.format("%.2f", v) end), M.UNET_FLOPS_512 / 1e9, per_sample / 1e9,
      fmt_list(own, function(v) return string.format("%.2f", v) end), r.unet.flops / r.unet.seconds / 1e9,
      r.decode_seconds, r.peak_rss / GB)
  end
  if res.d1024 then
    lines[#lines + 1] = string.format("* 1024×1024 decode (tiled: 64×64-latent tiles, overlap 16), f16 weights: peak RSS %.2f GB, %.1f s (%.0f GFLOP counted, %.2f of sgemm).",
      res.d1024.peak_rss / GB, res.d1024.decode_seconds, res.d1024.vae.flops / 1e9, res.d1024.vae_ratios[1])
  end
  return table.concat(lines, "\n")
end

local function kinds_table(r)
  local order = {"conv", "linear", "attention", "norm", "elementwise", "conversion", "resample", "concat", "reduce",
    "create", "view", "other"}
  local total = 0
  for _, k in ipairs(order) do total = total + r.kinds[k].seconds end
  local out = {"| kind | calls | seconds | share | GFLOP/s |", "|---|---:|---:|---:|---:|"}
  for _, k in ipairs(order) do
    local c = r.kinds[k]
    if c.calls > 0 then
      out[#out + 1] = string.format("| %s | %d | %.2f | %.1f %% | %s |", k, c.calls, c.seconds, 100 * c.seconds / total,
        c.flops > 0 and string.format("%.0f", c.flops / c.seconds / 1e9) or "")
    end
  end
  return table.concat(out, "\n")
end

local function update_docs(text)
  local f = io.open(M.DOCS, "rb")
  if not f then return false end
  local doc = f:read("a")
  f:close()
  local b, e = doc:find(M.BEGIN, 1, true)
  local section = M.BEGIN .. "\n" .. text .. "\n" .. M.END
  if b then
    local _, e2 = doc:find(M.END, e, true)
    if not e2 then error("bench-sd: " .. M.DOCS .. " has the begin marker but not the end marker", 0) end
    doc = doc:sub(1, b - 1) .. section .. doc:sub(e2 + 1)
  else
    doc = doc:gsub("\n*$", "\n") .. "\n## Latest `make bench-sd`\n\n" .. section .. "\n"
  end
  local tmp = M.DOCS .. ".tmp"
  local w = assert(io.open(tmp, "wb"))
  w:write(doc)
  w:close()
  assert(os.rename(tmp, M.DOCS))
  return true
end

function M.main(args)
  local docs, quick = true, false
  for _, a in ipairs(args) do
    if a == "--no-docs" then docs = false
    elseif a == "--quick" then quick = true
    else error("bench-sd: unknown option " .. a .. " (known: --no-docs, --quick)", 0) end
  end
  local t0 = clock()
  ensure_checkpoint(M.CHECKPOINT)
  local res = {}
  res.r256 = child{label = "txt2img 256x256 CFG, 3 steps", path = M.CHECKPOINT, width = 256, height = 256, steps = 3, guidance = 7.5}
  res.r512 = child{label = "txt2img 512x512 CFG, 2 steps", path = M.CHECKPOINT, width = 512, height = 512, steps = 2, guidance = 7.5}
  local precision = core.precision()
  local has_bf16 = select(2, core.precision("bf16")) -- AVX512_BF16 present (and not capped)
  core.precision(precision)
  if has_bf16 then
    res.bf16 = child{label = "txt2img 512x512 CFG, 2 steps, precision bf16", path = M.CHECKPOINT, width = 512,
      height = 512, steps = 2, guidance = 7.5, precision = "bf16"}
    if res.bf16.precision ~= "bf16" then res.bf16 = nil end
  end
  if not quick then
    ensure_checkpoint(M.CHECKPOINT_F32, "f32")
    res.f32 = child{label = "txt2img 512x512 CFG, 1 step, f32 weights", path = M.CHECKPOINT_F32, width = 512,
      height = 512, steps = 1, guidance = 7.5}
    res.d1024 = child{label = "decode 1024x1024 (tiled)", path = M.CHECKPOINT, width = 1024, height = 1024, decode_only = true}
  end
  local text = M.table(res)
  local when = os.date("!%Y-%m-%d %H:%M UTC")
  local out = table.concat({
    string.format("Machine: %s. Run on %s (%.0f s in all). SD 1.5 stand-in: random f16 weights, the exact shapes of v1-5-pruned-emaonly (2.13 GB).", machine(), when, clock() - t0),
    "",
    text,
    "",
    "Where the time of the 512×512 run goes (SDLUA_PROFILE's kinds, whole run including load and decode):",
    "",
    kinds_table(res.r512),
  }, "\n")
  print(out)
  print()
  print(res.r512.report)
  if docs and update_docs(out) then io.stderr:write("bench-sd: updated ", M.DOCS, "\n") end
  return res
end

-- as a script: sdlua lua/sd/bench.lua [options]
local modname = ...
if modname ~= "sd.bench" and arg and arg[0] and arg[0]:match("bench%.lua$") then
  if arg[1] == "--child" then
    local job = assert(load("return " .. arg[2], "=job", "t", {}))()
    local r = M.run_job(job)
    print("BENCHRESULT " .. serialize(r))
    os.exit(0)
  end
  M.main({table.unpack(arg, 1)})
end

return M
