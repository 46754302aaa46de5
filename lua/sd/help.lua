-- sd.help: documentation at the prompt. In the sdlua REPL `help(obj)` or `?obj` shows the doc of
-- a function, a module, a pipeline or a tensor; `help()` lists the topics.
--
--   help(sd.load)          -- the comment above `function M.load` in lua/sd/pipeline.lua
--   ?pipe:txt2img          -- the same as help(pipe.txt2img)
--   help("samplers")       -- a topic by name
--
-- Lua functions are documented by the comment block right above their definition in the
-- source (found through debug.getinfo), so the docs live next to the code. Functions written in
-- C carry their docs here, as data (C_DOCS). help.register(value, name, doc) adds others.
local help = {}

local registry = setmetatable({}, {__mode = "k"}) -- value -> {name=, doc=}

function help.register(value, name, doc)
  registry[value] = {name = name, doc = doc}
  return value
end

----------------------------------------------------------------------------------------------------
-- docs of the C functions (runtime/l*.c), by their name under `sd`

local C_DOCS = {
  ["sd.threads"] = "sd.threads([n]) -> count\nSets the number of threads of the kernels and OpenBLAS together (1..1024); returns the count in force.",
  ["sd.memory"] = "sd.memory() -> {current=, peak=, pooled=, rss=, peak_rss=}\nBytes: tensor heap now, at its peak, kept for reuse; the process's resident memory now and at its peak.",
  ["sd.memory_reset_peak"] = "sd.memory_reset_peak()\nResets `peak` (and `peak_rss` where Linux allows).",
  ["sd.memory_trim"] = "sd.memory_trim()\nReturns the pooled tensor blocks and the kernels' scratch buffers to the system.",
  ["sd.cpu"] = "sd.cpu() -> string\nThe instruction sets in use and the OpenBLAS core, e.g. \"avx2 fma f16c; OpenBLAS Haswell (OpenMP)\".",
  ["sd.clock"] = "sd.clock() -> seconds\nMonotonic time as a float.",
  ["sd.gunzip"] = "sd.gunzip(data [, max]) -> string\nDecompresses gzip data (several members are joined).",
  ["sd.crc32"] = "sd.crc32(data [, crc]) -> number\nCRC-32 as in zip and gzip; pass the previous value to continue.",
  ["sd.inflate_raw"] = "sd.inflate_raw(data, size) -> string\nA raw deflate stream (a zip entry) that must decompress to exactly `size` bytes.",
  ["sd.sha256"] = "sd.sha256(data) -> hex string\nSHA-256 digest of a string.",
  ["sd.hmac_sha256"] = "sd.hmac_sha256(key, message) -> hex string\nHMAC-SHA-256 of a message.",
  ["sd.rng.torch"] = "sd.rng.torch(seed) -> generator\nPyTorch's CPU generator: g:randn(shape) gives the numbers of torch.randn(shape, generator=g) after manual_seed(seed). Also g:rand, g:manual_seed, g:clone, g:get_state/set_state.",
  ["sd.tensor.zeros"] = "T.zeros(shape [, dtype]) -> tensor\nA new tensor of zeros (default f32). dtypes: f32 f16 bf16 i32 i64 u8.",
  ["sd.tensor.ones"] = "T.ones(shape [, dtype]) -> tensor\nA new tensor of ones (default f32).",
  ["sd.tensor.full"] = "T.full(shape, value [, dtype]) -> tensor\nEvery element `value`.",
  ["sd.tensor.empty"] = "T.empty(shape [, dtype]) -> tensor\nUninitialised contents.",
  ["sd.tensor.from"] = "T.from(list, shape [, dtype]) | T.from(nested_lists [, dtype]) -> tensor\nA tensor from Lua numbers.",
  ["sd.tensor.arange"] = "T.arange(start, stop [, step]) -> tensor\nstart, start+step, ... below stop (as torch.arange).",
  ["sd.tensor.linspace"] = "T.linspace(a, b, n) -> tensor\nn values from a to b (torch's float32 algorithm).",
  ["sd.tensor.randn"] = "T.randn(shape, gen) -> tensor\nNormal numbers from a generator (sd.rng.torch).",
  ["sd.tensor.rand"] = "T.rand(shape, gen) -> tensor\nUniform [0, 1) numbers from a generator.",
  ["sd.tensor.cat"] = "T.cat(list, dim) -> tensor\nJoins tensors along an existing dimension.",
  ["sd.tensor.stack"] = "T.stack(list, dim) -> tensor\nJoins tensors along a new dimension.",
  ["sd.tensor.where"] = "T.where(cond, a, b) -> tensor\n`a` where cond is non-zero, else `b` (broadcasting).",
  ["sd.tensor.attention"] = "T.attention(q, k, v [, {causal=false, scale=}]) -> tensor\nq (B,H,N,d), k (B,H,M,d), v (B,H,M,dv) -> (B,H,N,dv), scaled dot-product attention in tiles.",
  ["sd.tensor.is_tensor"] = "T.is_tensor(v) -> boolean",
  ["sd.safetensors.load"] = "sd.safetensors.load(path) -> tensors, metadata\nname -> tensor (memory-mapped, stored dtype) and the __metadata__ strings.",
  ["sd.safetensors.save"] = "sd.safetensors.save(path, tensors, metadata)\nWrites name -> tensor atomically; metadata values are strings.",
  ["sd.safetensors.header"] = "sd.safetensors.header(path) -> name -> {dtype=, shape=}, metadata\nReads only the header.",
}

-- Topics help() lists: {name shown, expression resolving the value or a doc string}.
local TOPICS = {
  {"sd.load(path [, opts])", "sd.load"},
  {"pipe:txt2img{...}", "pipe:txt2img"},
  {"pipe:img2img{...}", "pipe:img2img"},
  {"pipe:encode_prompt(prompt)", "pipe:encode_prompt"},
  {"sd.scheduler(name, config)", "sd.scheduler"},
  {"sd.image.save(path, img, info)", "sd.image.save"},
  {"sd.image.load(path)", "sd.image.load"},
  {"sd.time(f, ...)", "sd.time"},
  {"sd.rng.torch(seed)", "sd.rng.torch"},
  {"sd.tensor (T)", "sd.tensor"},
  {"sd.safetensors", "sd.safetensors"},
  {"sd.threads / sd.memory", "sd.memory"},
  {"samplers", "samplers"},
  {"cli", "cli"},
}

local TEXT_TOPICS = {
  samplers = [[
Samplers (schedulers): ddim, ddpm, pndm, lms, euler, euler_a, heun, dpm2, dpmpp_2m, dpmpp_2m_sde,
unipc, lcm; pipe:txt2img{scheduler = "dpmpp_2m", scheduler_options = {use_karras_sigmas = true}}.
Your own: pipe:txt2img{sampler = fn}; fn(ctx) receives ctx.pipe, ctx.scheduler (timesteps and
sigmas set), ctx.latents (already scaled by init_noise_sigma), ctx.timesteps, ctx.predict(x, t)
(the guided noise prediction), ctx.guidance, ctx.cond, ctx.context, ctx.generator,
ctx.on_step, ctx.step(i, t, x) (reports a step), and returns the final latents.
Walkthrough: docs/samplers.md.]],
  cli = [[
The command line: sdlua txt2img -p PROMPT -o out.png, sdlua img2img -i init.png, sdlua info
image.png, sdlua make-checkpoint --arch tiny --random -o tiny.safetensors; `--help` after
each. Exit status 0 done, 1 error, 2 usage error, 130 interrupted. See docs/cli.md.]],
}

----------------------------------------------------------------------------------------------------
-- source comments

local file_cache = {}

local function file_lines(path)
  local lines = file_cache[path]
  if lines == nil then
    lines = false
    local f = io.open(path, "rb")
    if f then
      lines = {}
      for l in f:lines() do lines[#lines + 1] = l end
      f:close()
    end
    file_cache[path] = lines
  end
  return lines or nil
end

-- The comment block right above line n (without the "-- "), and the line itself.
local function comment_above(lines, n)
  local doc = {}
  local i = n - 1
  while i >= 1 and lines[i]:match("^%s*%-%-") and not lines[i]:match("^%s*%-%-%-%-%-%-%-%-") do
    table.insert(doc, 1, (lines[i]:gsub("^%s*%-%-%s?", "")))
    i = i - 1
  end
  return table.concat(doc, "\n"), lines[n]
end

-- The leading comment of a Lua file (its module doc).
local function file_doc(path)
  local lines = file_lines(path)
  if not lines then return nil end
  local doc = {}
  for _, l in ipairs(lines) do
    if not l:match("^%-%-") then break end
    doc[#doc + 1] = (l:gsub("^%-%-%s?", ""))
  end
  return #doc > 0 and table.concat(doc, "\n") or nil
end

local function lua_source(f)
  local info = debug.getinfo(f, "S")
  if not info or info.what ~= "Lua" or not info.source:match("^@") then return nil end
  return info.source:sub(2), info.linedefined
end

-- Resolves a dotted / colon name ("sd.tensor.zeros", "pipe:txt2img") in the global table;
-- "pipe:x" also finds the Pipeline method when no global `pipe` exists.
local function resolve(name)
  local v = _G
  for part in name:gsub(":", "."):gmatch("[^.]+") do
    if type(v) ~= "table" and type(v) ~= "userdata" then return nil end
    local ok, x = pcall(function() return v[part] end)
    if not ok then return nil end
    v = x
    if v == nil then break end
  end
  if v == nil and name:match("^pipe:") then
    local ok, P = pcall(require, "sd.pipeline")
    if ok then v = P.Pipeline[name:match(":(.*)$")] end
  end
  if v == nil and name:match("^sd%.") then
    local ok, sd = pcall(require, "sd")
    if ok then
      v = sd
      for part in name:sub(4):gsub(":", "."):gmatch("[^.]+") do
        if type(v) ~= "table" then return nil end
        v = v[part]
      end
    end
  end
  return v
end

local c_by_value

local function c_docs()
  if c_by_value then return c_by_value end
  c_by_value = setmetatable({}, {__mode = "k"})
  for name, doc in pairs(C_DOCS) do
    local v = resolve(name)
    if v ~= nil then c_by_value[v] = {name = name, doc = doc} end
  end
  return c_by_value
end

-- The doc of a value, or nil: {name=, doc=, where=}
function help.doc(v)
  if registry[v] then return registry[v] end
  local c = c_docs()[v]
  if c then return c end
  if type(v) == "function" then
    local path, line = lua_source(v)
    if path then
      local lines = file_lines(path)
      if lines and lines[line] then
        local doc, def = comment_above(lines, line)
        return {doc = doc ~= "" and doc or nil, signature = def:gsub("^%s+", ""), where = path:gsub("^.*/lua/", "lua/") .. ":" .. line}
      end
    end
  end
  return nil
end

local function first_line(s) return s and s:match("^[^\n]*") or "" end

local function out(...) io.write(...) end

local function list_functions(t, prefix)
  local names = {}
  for k, v in pairs(t) do
    if type(k) == "string" and type(v) == "function" and not k:match("^_") then names[#names + 1] = k end
  end
  table.sort(names)
  for _, k in ipairs(names) do
    local d = help.doc(t[k])
    out(("  %-26s %s\n"):format(prefix .. k, d and first_line(d.doc or d.signature) or ""))
  end
  return #names
end

-- The file a table's functions come from (a module's own file), if any.
local function module_file(t)
  for _, v in pairs(t) do
    if type(v) == "function" then
      local path = lua_source(v)
      if path then return path end
    end
  end
  return nil
end

local function show_topics()
  out("help(obj) or ?obj (in the REPL) shows the documentation of a function, module, pipeline or tensor.\n")
  out("Topics (help(\"name\") or ?name):\n")
  for _, t in ipairs(TOPICS) do
    local summary
    if TEXT_TOPICS[t[2]] then summary = first_line(TEXT_TOPICS[t[2]])
    else
      local v = resolve(t[2])
      local d = v ~= nil and help.doc(v)
      summary = d and first_line(d.doc or d.signature) or (type(v) == "table" and "module" or "")
    end
    out(("  %-32s %s\n"):format(t[1], summary))
  end
  out("Docs: docs/api.md (Lua API), docs/samplers.md (your own sampler), docs/cli.md (command line).\n")
end

-- help(obj [, name]): prints the documentation of obj. name: how obj was written (for messages).
function help.help(v, name)
  if v == nil and name == nil then return show_topics() end
  if type(v) == "string" and name == nil then
    local topic = TEXT_TOPICS[v]
    if topic then out(topic, "\n"); return end
    for _, t in ipairs(TOPICS) do
      if t[2] == v or t[2]:match("[.:]([%w_]+)$") == v then
        if TEXT_TOPICS[t[2]] then out(TEXT_TOPICS[t[2]], "\n"); return end
        return help.help(resolve(t[2]), t[2])
      end
    end
    local ok, mod = pcall(require, v)
    if ok and type(mod) == "table" then return help.help(mod, v) end
    local r = resolve(v)
    if r ~= nil then return help.help(r, v) end
    out(("no help for %q; help() lists the topics\n"):format(v))
    return
  end
  local d = help.doc(v)
  if type(v) == "function" then
    if d then
      if d.name then out(d.name, "\n") end
      if d.signature then out(d.signature, "\n") end
      if d.doc then out(d.doc, "\n") end
      if d.where then out("(", d.where, ")\n") end
    else
      out(("%s: a function without documentation\n"):format(name or tostring(v)))
    end
    return
  end
  local ok_t, T = pcall(function() return require("sd.core").tensor end)
  if ok_t and T.is_tensor(v) then
    out(tostring(v), "\n")
    out("A tensor: x.shape, x.dtype, x:numel(), x:totable(), arithmetic (+ - * /), x:matmul(y), x:view{...},\n")
    out("x:permute{...}, x:to(dtype), x:mean(), x:release(). See docs/api.md, or help(sd.tensor) for the constructors.\n")
    return
  end
  if type(v) == "table" then
    local mt = getmetatable(v)
    local methods = mt and type(mt.__index) == "table" and mt.__index or nil
    local file = module_file(v) or (methods and module_file(methods))
    local mdoc = file and file_doc(file)
    if name then out(name, "\n") end
    if mdoc then out(mdoc, "\n") end
    local n = list_functions(v, "")
    if methods and methods ~= v then
      n = n + list_functions(methods, ":")
    end
    if n == 0 and not mdoc then out(("%s: a table without documented functions\n"):format(name or tostring(v))) end
    return
  end
  out(("%s: a %s; help() lists the topics\n"):format(name or tostring(v), type(v)))
end

-- query(text): what `?text` runs in the REPL. Evaluates text ("sd.load", "pipe:txt2img", "x")
-- in the global table and shows its help; an unknown name is looked up as a topic.
function help.query(text)
  text = (text or ""):gsub("^%s+", ""):gsub("%s+$", "")
  if text == "" then return help.help() end
  local expr = text:gsub("^([%w_.]+):([%w_]+)$", "%1.%2")
  local f = load("return " .. expr, "=?", "t", _G)
  if f then
    local ok, v = pcall(f)
    if ok and v ~= nil then return help.help(v, text) end
  end
  local r = resolve(text)
  if r ~= nil then return help.help(r, text) end
  return help.help(text)
end

return setmetatable(help, {__call = function(_, ...)
  if select("#", ...) == 0 then return help.help() end
  return help.help((...), select(2, ...))
end})
