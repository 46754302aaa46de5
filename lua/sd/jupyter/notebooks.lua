-- Notebook tooling for the sdlua Jupyter kernel (run with bin/sdlua; used by the Makefile):
--
--   sdlua lua/sd/jupyter/notebooks.lua kernelspec DIR
--       writes DIR/kernel.json for this tree's bin/sdlua and kernel.lua (make install-kernel)
--   sdlua lua/sd/jupyter/notebooks.lua check [--update] NOTEBOOK.ipynb...
--       re-executes each notebook with `jupyter nbconvert --execute` on the sdlua kernel (a
--       kernelspec generated into a temporary JUPYTER_PATH, so nothing needs installing) and
--       compares every cell's outputs with the stored ones: stream text, results, errors and
--       display data, images byte for byte (their base64 text). Consecutive stream outputs of
--       the same name are joined first (where a stream is split depends on timing). Exit status
--       1 when an output differs or a notebook fails. --update stores the new outputs instead.
--
-- Environment: SDLUA_NOTEBOOK_TIMEOUT (seconds per cell, default 1800); the kernel runs with
-- the settings the stored outputs were made with: SDLUA_NOTEBOOK_THREADS (default 2),
-- SDLUA_NOTEBOOK_CPU (SDLUA_CPU, default avx2). The notebooks themselves read SDLUA_MODEL (see
-- docs/notebooks.md).
local cjson = require "cjson"

local function fail(msg)
  io.stderr:write("notebooks: ", msg, "\n")
  os.exit(2)
end

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function run(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok, out, code
end

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function pwd() return io.popen("pwd"):read("l") end

local function absolute(p)
  if p:sub(1, 1) == "/" then return p end
  return pwd() .. "/" .. p
end

-- this tree's sdlua and kernel.lua
local function paths()
  local kernel = assert(package.searchpath("sd.jupyter.kernel", package.path), "cannot find sd.jupyter.kernel")
  local sdlua = arg[-1] or "sdlua"
  if not sdlua:find("/", 1, true) then sdlua = io.popen("command -v " .. quote(sdlua)):read("l") or sdlua end
  local real = io.popen("readlink -f " .. quote(absolute(sdlua))):read("l")
  local kreal = io.popen("readlink -f " .. quote(absolute(kernel))):read("l")
  return real, kreal
end

local function json_string(s)
  return (cjson.encode(s):gsub("\\/", "/"))
end

local function kernelspec(dir)
  local sdlua, kernel = paths()
  local template = assert(read(kernel:gsub("kernel%.lua$", "kernelspec/kernel.json.in")))
  local text = template:gsub('"@SDLUA@"', function() return json_string(sdlua) end)
                       :gsub('"@KERNEL@"', function() return json_string(kernel) end)
  assert(os.execute("mkdir -p " .. quote(dir)))
  write(dir .. "/kernel.json", text)
  return dir .. "/kernel.json"
end

-- ---- comparing outputs ----------------------------------------------------------------------
local function joined(v)
  if type(v) == "table" then return table.concat(v) end
  return v
end

local function normal_outputs(cell)
  local out = {}
  for _, o in ipairs(cell.outputs or {}) do
    local t = o.output_type
    local prev = out[#out]
    if t == "stream" and prev and prev.output_type == "stream" and prev.name == o.name then
      prev.text = prev.text .. joined(o.text)
    elseif t == "stream" then
      out[#out + 1] = {output_type = t, name = o.name, text = joined(o.text)}
    elseif t == "execute_result" or t == "display_data" then
      local data = {}
      for mime, v in pairs(o.data or {}) do
        v = joined(v)
        if type(v) == "string" and mime:match("^image/") and mime ~= "image/svg+xml" then v = v:gsub("%s", "") end
        data[mime] = v
      end
      out[#out + 1] = {output_type = t, data = data, execution_count = o.execution_count}
    elseif t == "error" then
      out[#out + 1] = {output_type = t, ename = o.ename, evalue = o.evalue, traceback = table.concat(o.traceback or {}, "\n")}
    end
  end
  return out
end

local function describe(o)
  if not o then return "nothing" end
  if o.output_type == "stream" then return o.name .. " text " .. string.format("%q", o.text:sub(1, 300)) end
  if o.output_type == "error" then return "error " .. tostring(o.evalue) end
  local mimes = {}
  for m in pairs(o.data) do mimes[#mimes + 1] = m end
  table.sort(mimes)
  return o.output_type .. " (" .. table.concat(mimes, ", ") .. ")" ..
    (o.data["text/plain"] and (": " .. string.format("%q", o.data["text/plain"]:sub(1, 300))) or "")
end

local b64 = {}
do
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  for i = 1, 64 do b64[chars:byte(i)] = i - 1 end
end

local function unbase64(s)
  local out, acc, bits = {}, 0, 0
  for i = 1, #s do
    local v = b64[s:byte(i)]
    if v then
      acc, bits = (acc << 6) | v, bits + 6
      if bits >= 8 then
        bits = bits - 8
        out[#out + 1] = string.char((acc >> bits) & 255)
      end
    end
  end
  return table.concat(out)
end

-- How two PNGs (base64) differ: size, or the largest channel difference and how many pixels.
local function image_difference(a, b)
  local ok, msg = pcall(function()
    local image = require "sd.image"
    local pa, pb = os.tmpname(), os.tmpname()
    write(pa, unbase64(a)); write(pb, unbase64(b))
    local ia, ib = image.load(pa), image.load(pb)
    os.remove(pa); os.remove(pb)
    if table.concat(ia.shape, "x") ~= table.concat(ib.shape, "x") then
      return "size " .. table.concat(ia.shape, "x") .. " -> " .. table.concat(ib.shape, "x")
    end
    local d = (ia - ib):abs():max(2) -- (1, H, W): the largest channel difference per pixel
    local n = ((d * 255 - 0.5):clamp(0, 0.5) * 2):sum():item() -- 1 per pixel that differs
    return string.format("%d pixels differ, by up to %d/255", math.floor(n + 0.5), math.floor(d:max():item() * 255 + 0.5))
  end)
  return ok and msg or "bytes differ"
end

-- the first difference between two outputs, or nil
local function diff_output(a, b)
  if not a or not b or a.output_type ~= b.output_type then return "kind" end
  if a.output_type == "stream" then
    if a.name ~= b.name then return "stream name" end
    if a.text ~= b.text then return "text" end
  elseif a.output_type == "error" then
    if a.ename ~= b.ename or a.evalue ~= b.evalue or a.traceback ~= b.traceback then return "error" end
  else
    for mime, v in pairs(a.data) do
      if b.data[mime] ~= v then
        if mime == "image/png" and b.data[mime] then return mime .. " (" .. image_difference(v, b.data[mime]) .. ")" end
        return mime
      end
    end
    for mime in pairs(b.data) do if a.data[mime] == nil then return "extra " .. mime end end
    if a.output_type == "execute_result" and a.execution_count ~= b.execution_count then return "execution_count" end
  end
  return nil
end

local function compare(stored, fresh, name)
  local problems = {}
  local sc, fc = stored.cells or {}, fresh.cells or {}
  if #sc ~= #fc then problems[#problems + 1] = string.format("%d cells stored, %d executed", #sc, #fc) end
  for i = 1, math.min(#sc, #fc) do
    if sc[i].cell_type == "code" then
      local a, b = normal_outputs(sc[i]), normal_outputs(fc[i])
      for k = 1, math.max(#a, #b) do
        local why = diff_output(a[k], b[k])
        if why then
          problems[#problems + 1] = string.format("%s: cell %d, output %d differs (%s):\n    stored: %s\n    now:    %s",
            name, i, k, why, describe(a[k]), describe(b[k]))
          break
        end
      end
    end
  end
  return problems
end

-- ---- check --------------------------------------------------------------------------------
local function check(args)
  local update = false
  local notebooks = {}
  for _, a in ipairs(args) do
    if a == "--update" then update = true else notebooks[#notebooks + 1] = a end
  end
  if #notebooks == 0 then fail("check: no notebooks given") end
  local ok = run("jupyter-nbconvert --version")
  if not ok then fail("jupyter-nbconvert not found: install Jupyter (make deps) first") end
  local tmp = os.tmpname()
  os.remove(tmp)
  assert(os.execute("mkdir -p " .. quote(tmp .. "/jupyter/kernels/sdlua") .. " " .. quote(tmp .. "/out")))
  kernelspec(tmp .. "/jupyter/kernels/sdlua")
  local timeout = tonumber(os.getenv("SDLUA_NOTEBOOK_TIMEOUT") or "") or 1800
  -- some float reductions split their work by thread count: pin it, so that results do not
  -- depend on the machine's number of cores
  local threads = math.tointeger(tonumber(os.getenv("SDLUA_NOTEBOOK_THREADS") or "")) or 2
  -- and the instruction set of our own kernels: their AVX-512 and AVX2 paths round differently;
  -- AVX2 + FMA is there on any x86-64 machine of the last ten years. OpenBLAS's choice of sgemm
  -- kernel is left to OpenBLAS (its environment variables are the machine's business)
  local cpu = os.getenv("SDLUA_NOTEBOOK_CPU") or "avx2"
  local failed = 0
  for _, nb in ipairs(notebooks) do
    local path = absolute(nb)
    local dir, base = path:match("^(.*)/([^/]+)$")
    local stored = read(path)
    if not stored then fail("cannot read " .. nb) end
    io.write("# ", nb, "\n")
    io.stdout:flush()
    local t0 = os.time()
    local cmd = string.format("cd %s && SDLUA_THREADS=%d SDLUA_CPU=%s JUPYTER_PATH=%s jupyter-nbconvert --to notebook --execute "
      .. "--ExecutePreprocessor.kernel_name=sdlua --ExecutePreprocessor.timeout=%d "
      .. "--ExecutePreprocessor.record_timing=False --output-dir %s --output %s %s",
      quote(dir), threads, quote(cpu), quote(tmp .. "/jupyter"), timeout, quote(tmp .. "/out"), quote(base), quote(base))
    local rok, out = run(cmd)
    local fresh_text = rok and read(tmp .. "/out/" .. base)
    if not fresh_text then
      failed = failed + 1
      print("not ok - " .. nb .. ": nbconvert failed\n" .. out)
    elseif update then
      write(path, fresh_text)
      print(string.format("ok - %s: outputs stored (%d s)", nb, os.time() - t0))
    else
      local problems = compare(cjson.decode(stored), cjson.decode(fresh_text), nb)
      if #problems == 0 then
        print(string.format("ok - %s: outputs match (%d s)", nb, os.time() - t0))
      else
        failed = failed + 1
        print("not ok - " .. nb .. ": outputs differ")
        for _, p in ipairs(problems) do print("  " .. p) end
      end
    end
    io.stdout:flush()
  end
  os.execute("rm -rf " .. quote(tmp))
  print(string.format("%d passed, %d failed", #notebooks - failed, failed))
  os.exit(failed == 0 and 0 or 1)
end

local cmd = arg[1]
local rest = {table.unpack(arg, 2)}
if cmd == "kernelspec" and rest[1] then
  print(kernelspec(rest[1]))
elseif cmd == "check" then
  check(rest)
else
  fail("usage: notebooks.lua kernelspec DIR | check [--update] NOTEBOOK...")
end
