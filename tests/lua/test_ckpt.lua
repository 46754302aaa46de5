-- PyTorch .ckpt reading: a small zip + pickle writer (below) builds checkpoints from the tiny
-- reference weights, and hostile archives that the restricted unpickler must refuse.
package.path = "tests/lua/?.lua;lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "lib/?.so;" .. package.cpath
local test = require "test"
local core = require "sd.core"
local T = core.tensor
local loader = require "sd.loader"
local ckpt = require "sd.loader.ckpt"
local zip = require "sd.loader.zip"

----------------------------------------------------------------------------------------------------
-- writers

local W = {}

-- zip archive of stored entries; entries = list of {name, data}. Data is aligned to 64 bytes with
-- padding in the local extra field, as torch.save does.
function W.zip(path, entries, opts)
  opts = opts or {}
  local out, central, off = {}, {}, 0
  local function put(s) out[#out + 1] = s; off = off + #s end
  for _, e in ipairs(entries) do
    local name, data = e[1], e[2]
    local crc = core.crc32(data)
    local method, usize = 0, #data
    if e[3] == "deflate" then -- one stored deflate block: a valid raw deflate stream (method 8)
      method = 8
      data = string.pack("<BI2I2", 1, #data, (~#data) & 0xFFFF) .. data
    end
    local pad = (64 - (off + 30 + #name + 4) % 64) % 64
    local extra = string.pack("<I2I2", 0xCAFE, pad) .. string.rep("\0", pad)
    local hoff = off
    put(string.pack("<c4I2I2I2I2I2I4I4I4I2I2", "PK\3\4", 20, 0, method, 0, 0, crc, #data, usize, #name, #extra))
    put(name); put(extra); put(data)
    local h = opts.bad_header_offset or hoff
    if opts.zip64 then -- sizes and offset in the zip64 extra field
      local x = string.pack("<I2I2I8I8I8", 1, 24, usize, #data, h)
      central[#central + 1] = string.pack("<c4I2I2I2I2I2I2I4I4I4I2I2I2I2I2I4I4", "PK\1\2", 45, 45, 0, method, 0, 0,
        crc, 0xFFFFFFFF, 0xFFFFFFFF, #name, #x, 0, 0, 0, 0, 0xFFFFFFFF) .. name .. x
    else
      central[#central + 1] = string.pack("<c4I2I2I2I2I2I2I4I4I4I2I2I2I2I2I4I4", "PK\1\2", 20, 20, 0, method, 0, 0,
        crc, #data, usize, #name, 0, 0, 0, 0, 0, h) .. name
    end
  end
  local cd = table.concat(central)
  local cd_off = off
  put(cd)
  if opts.zip64 then
    local z64 = off
    put(string.pack("<c4I8I2I2I4I4I8I8I8I8", "PK\6\6", 44, 45, 45, 0, 0, #entries, #entries, #cd, cd_off))
    put(string.pack("<c4I4I8I4", "PK\6\7", 0, z64, 1))
    put(string.pack("<c4I2I2I2I2I4I4I2", "PK\5\6", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
  else
    put(string.pack("<c4I2I2I2I2I4I4I2", "PK\5\6", 0, 0, #entries, #entries, #cd, opts.bad_cd_offset or cd_off, 0))
  end
  local f = assert(io.open(path, "wb"))
  f:write(table.concat(out))
  f:close()
end

-- pickle (protocol 2) of a state dict; tensors = list of {name, dtype, shape, key, numel [, offset, stride]}
local STORAGE_OF = {f32 = "FloatStorage", f16 = "HalfStorage", bf16 = "BFloat16Storage", i64 = "LongStorage",
  i32 = "IntStorage", u8 = "ByteStorage"}

local function unicode(s) return "X" .. string.pack("<I4", #s) .. s end
local function int(v)
  if v >= 0 and v < 256 then return "K" .. string.char(v) end
  if v >= 0 and v < 65536 then return "M" .. string.pack("<I2", v) end
  return "J" .. string.pack("<i4", v)
end
local function int_tuple(list)
  local p = {"("}
  for _, v in ipairs(list) do p[#p + 1] = int(v) end
  p[#p + 1] = "t"
  return table.concat(p)
end
local contiguous = ckpt.contiguous_strides

function W.pickle(tensors, opts)
  opts = opts or {}
  local p = {"\x80\x02"}
  local function add(s) p[#p + 1] = s end
  if opts.wrap then add("}q\0" .. unicode("global_step") .. int(470000) .. "s" .. unicode("state_dict")) end
  -- the state dict: an OrderedDict with SETITEMS
  add("ccollections\nOrderedDict\nq\1)Rq\2(")
  local memo_global = {}
  local next_memo = 3
  for _, t in ipairs(tensors) do
    add(unicode(t.name))
    add("ctorch._utils\n_rebuild_tensor_v2\n(")
    add("(" .. unicode("storage"))
    local g = STORAGE_OF[t.dtype]
    if memo_global[g] then
      add("h" .. string.char(memo_global[g]))
    else
      add("ctorch\n" .. g .. "\n")
      if next_memo < 256 then add("q" .. string.char(next_memo)); memo_global[g] = next_memo; next_memo = next_memo + 1 end
    end
    add(unicode(t.key) .. unicode("cpu") .. int(t.numel) .. "tQ")
    add(int(t.offset or 0) .. int_tuple(t.shape) .. int_tuple(t.stride or contiguous(t.shape)))
    add("\x89ccollections\nOrderedDict\n)Rtr" .. string.pack("<I4", 1000 + #p) .. "R")
  end
  add("u")
  -- torch attaches _metadata to the OrderedDict: BUILD with an attribute dict
  add("}" .. unicode("_metadata") .. "ccollections\nOrderedDict\n)Rsb")
  if opts.wrap then add("s") end
  add(".")
  return table.concat(p)
end

-- a .ckpt holding the tensors of a safetensors file (bytes copied from the file)
function W.ckpt_from_safetensors(src, dst, opts)
  local h = assert(loader.parse_safetensors_header(src))
  local names = {}
  for k in pairs(h) do names[#names + 1] = k end
  table.sort(names)
  local f = assert(io.open(src, "rb"))
  local list, entries = {}, {}
  local es = {f32 = 4, f16 = 2, bf16 = 2, i64 = 8, i32 = 4, u8 = 1}
  for i, name in ipairs(names) do
    local e = h[name]
    local numel = 1
    for _, d in ipairs(e.shape) do numel = numel * d end
    f:seek("set", e.offset)
    local data = f:read(numel * es[e.dtype]) or ""
    local key = tostring(i - 1)
    list[#list + 1] = {name = name, dtype = e.dtype, shape = e.shape, key = key, numel = numel}
    entries[#entries + 1] = {"archive/data/" .. key, data}
  end
  f:close()
  table.insert(entries, 1, {"archive/data.pkl", W.pickle(list, opts)})
  table.insert(entries, 2, {"archive/byteorder", "little"})
  entries[#entries + 1] = {"archive/version", "3\n"}
  W.zip(dst, entries)
  return list
end

local tmp = test.tmpname

local function archive_with_pickle(pkl, extra_entries)
  local p = tmp(".ckpt")
  local entries = {{"archive/data.pkl", pkl}}
  for _, e in ipairs(extra_entries or {}) do entries[#entries + 1] = e end
  W.zip(p, entries)
  return p
end

----------------------------------------------------------------------------------------------------
-- unpickler on its own

test.case("unpickle: plain values, memo, tuples, lists, dicts", function()
  local pkl = "\x80\x02}q\0(" .. unicode("a") .. "K\5" .. unicode("b") .. "\x89" .. unicode("c") .. "N"
    .. unicode("d") .. "]q\1(K\1K\2e" .. unicode("e") .. "h\1" .. unicode("f") .. "G" .. string.pack(">d", 1.5)
    .. unicode("g") .. "\x8a\2\0\1" .. unicode("h") .. "K\1K\2\x86u."
  local v = ckpt.plain(ckpt.unpickle(pkl))
  test.eq(v.a, 5, "a"); test.eq(v.b, false, "b"); test.eq(v.c, ckpt.NONE, "c")
  test.eq(#v.d, 2, "#d"); test.eq(v.e[2], 2, "e[2]"); test.eq(v.f, 1.5, "f"); test.eq(v.g, 256, "g")
  test.eq(v.h[1] + v.h[2], 3, "h")
end)

local REFUSALS = {
  {"os.system GLOBAL", "\x80\x02cos\nsystem\n" .. unicode("echo pwned") .. "\x85R.", "refusing global os.system"},
  {"builtins.eval via STACK_GLOBAL", "\x80\x04\x8c\8builtins\x8c\4eval\x93" .. unicode("1") .. "\x85R.",
   "refusing global builtins.eval"},
  {"REDUCE on a storage type", "\x80\x02ctorch\nFloatStorage\n)R.", "refusing REDUCE on global torch.FloatStorage"},
  {"unsupported storage type", "\x80\x02ctorch\nDoubleStorage\n.", "torch.DoubleStorage (tensors of this storage type are not supported"},
  {"REDUCE on a non-global", "\x80\x02" .. unicode("x") .. ")R.", "refusing REDUCE on string x"},
  {"INST opcode", "\x80\x02(ios\nsystem\n.", "refusing pickle opcode 0x69 INST"},
  {"NEWOBJ opcode", "\x80\x02ccollections\nOrderedDict\n)\x81.", "refusing pickle opcode 0x81 NEWOBJ"},
  {"unknown opcode", "\x80\x02\xff.", "refusing pickle opcode 0xff (unknown)"},
  {"BUILD on a global", "\x80\x02ctorch\nFloatStorage\n}b.", "refusing BUILD on global torch.FloatStorage"},
  {"truncated data", "\x80\x02}q\0(" .. unicode("abc"):sub(1, 6), "truncated data"},
  {"no STOP", "\x80\x02}", "truncated data (no STOP)"},
  {"stack underflow", "\x80\x02u.", "no MARK"},
  {"protocol 9", "\x80\x09.", "unsupported pickle protocol 9"},
}

for _, r in ipairs(REFUSALS) do
  test.case("unpickle refuses: " .. r[1], function()
    test.raises(function() ckpt.unpickle(r[2], nil, "x") end, r[3])
  end)
end

test.case("ckpt.load refuses a hostile data.pkl inside a real archive, and sd.load passes the error on", function()
  local p = archive_with_pickle("\x80\x02cposix\nsystem\n" .. unicode("touch /tmp/sdlua-pwned") .. "\x85R.")
  test.raises(function() ckpt.load(p) end, "refusing global posix.system")
  test.raises(function() loader.open(p) end, "refusing global posix.system")
  os.remove(p)
  test.truthy(not io.open("/tmp/sdlua-pwned", "rb"), "nothing was executed")
end)

----------------------------------------------------------------------------------------------------
-- archives

local function one_tensor_pickle(numel, shape, opts)
  opts = opts or {}
  return W.pickle({{name = "w", dtype = opts.dtype or "f32", shape = shape, key = "0", numel = numel,
    offset = opts.offset, stride = opts.stride}})
end

test.case("ckpt: a small archive round trip (f32, f16, offset, transposed strides)", function()
  local vals = {}
  for i = 1, 6 do vals[i] = i * 0.5 end
  local f32 = string.pack("<ffffff", table.unpack(vals))
  local f16 = T.from(vals, {6}, "f16")
  -- half bytes: 0.5 .. 3.0 encoded by hand (sign 0, exponent, mantissa)
  local halves = {0x3800, 0x3C00, 0x3E00, 0x4000, 0x4100, 0x4200}
  local hbytes = string.pack("<I2I2I2I2I2I2", table.unpack(halves))
  local pkl = W.pickle({
    {name = "a", dtype = "f32", shape = {2, 3}, key = "0", numel = 6},
    {name = "b", dtype = "f32", shape = {3, 2}, key = "0", numel = 6, stride = {1, 3}}, -- a transposed
    {name = "c", dtype = "f32", shape = {2}, key = "0", numel = 6, offset = 4},
    {name = "h", dtype = "f16", shape = {6}, key = "1", numel = 6},
    {name = "ids", dtype = "i64", shape = {1, 3}, key = "2", numel = 3},
    {name = "bf", dtype = "bf16", shape = {2}, key = "3", numel = 2},
  }, {wrap = true})
  local p = tmp(".ckpt")
  W.zip(p, {{"model/data.pkl", pkl}, {"model/data/0", f32}, {"model/data/1", hbytes},
    {"model/data/2", string.pack("<i8i8i8", 0, 1, 76)}, {"model/data/3", string.pack("<I2I2", 0x3F80, 0xC000)},
    {"model/version", "3\n"}, {"model/byteorder", "little"}})
  local t, header, extra = ckpt.load(p)
  test.eq(extra.global_step, 470000, "global_step outside the state dict")
  test.truthy(t.a:equal(T.from(vals, {2, 3})), "a")
  test.truthy(t.b:equal(T.from(vals, {2, 3}):transpose(1, 2):contiguous()), "b (transposed view)")
  test.truthy(t.c:equal(T.from({2.5, 3.0}, {2})), "c (storage offset)")
  test.eq(t.h.dtype, "f16", "h dtype")
  test.truthy(t.h:equal(f16), "h values")
  test.eq(header.b.shape[1], 3, "header shape")
  test.eq(t.ids.dtype, "i64", "i64 dtype")
  test.eq(t.ids:totable()[1][3], 76, "i64 values")
  test.eq(t.bf.dtype, "bf16", "bf16 dtype")
  test.truthy(t.bf:equal(T.from({1, -2}, {2})), "bf16 values")
  os.remove(p)
end)

test.case("ckpt: bad archives are refused with clear errors", function()
  local data = string.rep("\0", 24)
  local p = tmp(".ckpt")
  -- central directory offset past the end
  W.zip(p, {{"archive/data.pkl", one_tensor_pickle(6, {6})}, {"archive/data/0", data}}, {bad_cd_offset = 1 << 30})
  test.raises(function() ckpt.load(p) end, "central directory out of range")
  -- local header offset pointing into nowhere
  W.zip(p, {{"archive/data.pkl", one_tensor_pickle(6, {6})}, {"archive/data/0", data}}, {bad_header_offset = 1 << 30})
  test.raises(function() ckpt.load(p) end, "lies outside the file")
  -- a local header offset inside the file but not at a header
  W.zip(p, {{"archive/data.pkl", one_tensor_pickle(6, {6})}, {"archive/data/0", data}}, {bad_header_offset = 3})
  test.raises(function() ckpt.load(p) end, "bad local header")
  -- storage larger than its entry
  W.zip(p, {{"archive/data.pkl", one_tensor_pickle(100, {100})}, {"archive/data/0", data}})
  test.raises(function() ckpt.load(p) end, "claims 100 elements")
  -- tensor past its storage
  W.zip(p, {{"archive/data.pkl", one_tensor_pickle(6, {6}, {offset = 3})}, {"archive/data/0", data}})
  test.raises(function() ckpt.load(p) end, "reaches past the end of its storage")
  -- storage without a data entry
  W.zip(p, {{"archive/data.pkl", one_tensor_pickle(6, {6})}})
  test.raises(function() ckpt.load(p) end, "has no data entry")
  -- big-endian archives
  W.zip(p, {{"archive/data.pkl", one_tensor_pickle(6, {6})}, {"archive/data/0", data}, {"archive/byteorder", "big"}})
  test.raises(function() ckpt.load(p) end, "byte order big")
  -- no data.pkl
  W.zip(p, {{"archive/other", "x"}})
  test.raises(function() ckpt.load(p) end, "without data.pkl")
  -- truncated archive
  W.zip(p, {{"archive/data.pkl", one_tensor_pickle(6, {6})}, {"archive/data/0", data}})
  local f = assert(io.open(p, "rb")); local all = f:read("a"); f:close()
  f = assert(io.open(p, "wb")); f:write(all:sub(1, #all - 30)); f:close()
  test.raises(function() ckpt.load(p) end, "zip:")
  -- corrupted pickle bytes (CRC)
  W.zip(p, {{"archive/data.pkl", one_tensor_pickle(6, {6})}, {"archive/data/0", data}})
  f = assert(io.open(p, "rb")); all = f:read("a"); f:close()
  local at = all:find("storage", 1, true)
  f = assert(io.open(p, "wb")); f:write(all:sub(1, at - 1) .. "X" .. all:sub(at + 1)); f:close()
  test.raises(function() ckpt.load(p) end, "CRC")
  os.remove(p)
end)

-- src (a single-file safetensors checkpoint) rewritten as a .ckpt at a temporary path p:
-- returns the .ckpt opened, src opened, and p.
local function open_as_ckpt(src, wrap)
  local p = tmp(".ckpt")
  W.ckpt_from_safetensors(src, p, {wrap = wrap})
  return loader.open(p), loader.open(src), p
end

test.golden("ckpt: tiny-sd1 as .ckpt loads like the safetensors single file", "tiny-sd1.safetensors", function(src)
  local a, b, p = open_as_ckpt(src, true)
  test.eq(a.format, "ckpt", "format")
  test.eq(a.family, "sd1", "family")
  for _, comp in ipairs{"unet", "vae", "text_encoder"} do
    local n = 0
    for name, t in pairs(b[comp].weights) do
      n = n + 1
      test.truthy(a[comp].weights[name] and a[comp].weights[name]:equal(t), comp .. " " .. name)
    end
    test.truthy(n > 0, comp .. " has weights")
  end
  os.remove(p)
end)

test.golden("ckpt: tiny-sd2 (OpenCLIP) as .ckpt without the state_dict wrapper", "tiny-sd2.safetensors", function(src)
  local a, b, p = open_as_ckpt(src, false)
  test.eq(a.family, "sd2", "family")
  for name, t in pairs(b.text_encoder.weights) do
    test.truthy(a.text_encoder.weights[name]:equal(t), name)
  end
  test.truthy(a.unet.weights["conv_in.weight"]:equal(b.unet.weights["conv_in.weight"]), "unet conv_in")
  os.remove(p)
end)

test.golden("ckpt: a diffusers folder with .bin weights", "tiny-sd1/model_index.json", function(index)
  local src = index:gsub("/model_index.json$", "")
  local dir = tmp("-folder")
  os.execute(("cp -r '%s' '%s'"):format(src, dir))
  for _, c in ipairs{{"unet", "diffusion_pytorch_model"}, {"vae", "diffusion_pytorch_model"}, {"text_encoder", "model"}} do
    local st = ("%s/%s/%s.safetensors"):format(dir, c[1], c[2])
    local bin = ("%s/%s/%s.bin"):format(dir, c[1], c[2] == "model" and "pytorch_model" or c[2])
    W.ckpt_from_safetensors(st, bin)
    os.remove(st)
  end
  local a = loader.open(dir)
  local b = loader.open(src)
  test.eq(a.format, "ckpt", "format")
  for _, comp in ipairs{"unet", "vae", "text_encoder"} do
    for name, t in pairs(b[comp].weights) do test.truthy(a[comp].weights[name]:equal(t), comp .. " " .. name) end
  end
  os.execute(("rm -rf '%s'"):format(dir))
end)

test.case("ckpt: 300 random corruptions of a small archive load or fail with an error, never crash", function()
  local vals = {}
  for i = 1, 12 do vals[i] = i end
  local pkl = W.pickle({{name = "a", dtype = "f32", shape = {3, 4}, key = "0", numel = 12},
    {name = "b", dtype = "f32", shape = {4, 3}, key = "0", numel = 12, stride = {1, 4}}}, {wrap = true})
  local p = tmp(".ckpt")
  W.zip(p, {{"archive/data.pkl", pkl}, {"archive/data/0", string.pack("<" .. string.rep("f", 12), table.unpack(vals))}})
  local f = assert(io.open(p, "rb")); local good = f:read("a"); f:close()
  local seed = 12345
  local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n end
  local errors = 0
  for _ = 1, 300 do
    local b = {good:byte(1, -1)}
    for _ = 1, 1 + rnd(4) do
      local at = 1 + rnd(#b)
      b[at] = rnd(256)
    end
    local parts = {}
    for i = 1, #b, 4096 do parts[#parts + 1] = string.char(table.unpack(b, i, math.min(i + 4095, #b))) end
    f = assert(io.open(p, "wb")); f:write(table.concat(parts)); f:close()
    local ok, err = pcall(ckpt.load, p)
    if not ok then
      errors = errors + 1
      test.truthy(type(err) == "string" and (err:find("^zip:") or err:find("^ckpt:")), "clear error: " .. tostring(err))
    end
  end
  test.truthy(errors > 0, "some corruptions are detected")
  os.remove(p)
end)

test.case("zip reader: entries and offsets, plain and zip64", function()
  for _, z64 in ipairs{false, true} do
    local p = tmp(".zip")
    W.zip(p, {{"a/x", "hello"}, {"a/y", string.rep("z", 1000)}, {"a/d", "deflated words", "deflate"}}, {zip64 = z64})
    local z = zip.open(p)
    test.eq(#z.names, 3, "entries")
    test.eq(zip.read(z, "a/d"), "deflated words", "deflate entry")
    test.eq(z.entries["a/y"].usize, 1000, "size")
    test.eq(zip.read(z, "a/x"), "hello", "content")
    test.eq(zip.read(z, "a/y"), string.rep("z", 1000), "content")
    test.eq(zip.data_offset(z, z.entries["a/y"]) % 64, 0, "aligned data")
    os.remove(p)
  end
end)

io.write(("# %d passed, %d failed, %d skipped\n"):format(test.passed, test.failed, test.skipped))
if test.failed > 0 then os.exit(1) end
