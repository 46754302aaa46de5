-- sd.safetensors: loading the reference files, header(), save/load round trips for every
-- dtype, metadata, the atomic write, and hostile files each giving a clear error.
local test = require "test"
local sd = require "sd"
local T = sd.tensor
local st = sd.safetensors

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p '" .. dir .. "'"))
local function tmp(name) return dir .. "/" .. name end

local flat = test.flat

local function same(a, b, what)
  test.eq(a.dtype, b.dtype, what .. " dtype")
  test.eq(table.concat(a.shape, ","), table.concat(b.shape, ","), what .. " shape")
  local x, y = flat(a), flat(b)
  test.eq(#x, #y, what .. " numel")
  for i = 1, #y do
    if x[i] ~= y[i] and not (x[i] ~= x[i] and y[i] ~= y[i]) then
      error(string.format("%s: element %d is %s, expected %s", what, i, tostring(x[i]), tostring(y[i])), 2)
    end
  end
end

local function write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

local read = test.read_file

-- a file from a header string (padded to 8 unless raw) and data bytes
local function file(header, data, raw)
  if not raw then header = header .. string.rep(" ", (8 - (8 + #header) % 8) % 8) end
  return string.pack("<I8", #header) .. header .. (data or "")
end

local function tmp_leftovers()
  local p = io.popen("ls -a '" .. dir .. "'")
  local n = 0
  for line in p:lines() do if line:find(".tmp-", 1, true) then n = n + 1 end end
  p:close()
  return n
end

test.golden("safetensors: load randn.safetensors (mapped, metadata)", "randn.safetensors", function(path)
  local w, meta = st.load(path)
  local n = 0
  for name, x in pairs(w) do
    n = n + 1
    test.eq(x.dtype, "f32", name)
    test.truthy(x:is_contiguous(), name .. " contiguous")
  end
  test.eq(n, 29, "tensor count")
  test.eq(table.concat(w.seed0_1x4x64x64.shape, ","), "1,4,64,64")
  test.truthy(meta.title and meta.suggested_abs_tolerance, "metadata strings")
  test.eq(type(meta.config), "string")
  local h, hmeta = st.header(path)
  for name, x in pairs(w) do
    test.eq(h[name].dtype, x.dtype, name .. " header dtype")
    test.eq(table.concat(h[name].shape, ","), table.concat(x.shape, ","), name .. " header shape")
  end
  test.eq(hmeta.title, meta.title)
  test.eq(h.seed0_1x4x64x64.offsets[2] - h.seed0_1x4x64x64.offsets[1], 65536, "offsets")
end)

test.golden("safetensors: a whole checkpoint (tiny-sd1.safetensors) loads zero-copy", "tiny-sd1.safetensors", function(path)
  local t0 = os.clock()
  local w = st.load(path)
  local n = 0
  for _ in pairs(w) do n = n + 1 end
  test.truthy(n > 100, "many tensors")
  local h = st.header(path)
  local m = 0
  for name in pairs(h) do m = m + 1; test.truthy(w[name], name) end
  test.eq(m, n, "header and load agree")
  io.write(string.format("  %d tensors loaded in %.3f s\n", n, os.clock() - t0))
end)

test.case("safetensors: save/load round trip for every dtype", function()
  local values = {0, 1, -2, 3.5, 100, -0.25, 7, 8}
  local ints = {0, 1, -2, 3, 100, -7, 2147483647, -2147483648}
  local tensors = {
    f32 = T.from(values, {2, 4}, "f32"),
    f16 = T.from(values, {8}, "f16"),
    bf16 = T.from(values, {2, 2, 2}, "bf16"),
    i32 = T.from(ints, {4, 2}, "i32"),
    i64 = T.from({2^53 + 1, -(2^62), 0, 5}, {4}, "i64"),
    u8 = T.from({0, 1, 2, 255, 128}, {5}, "u8"),
    scalar = T.from({42}, {}, "f32"),
    empty = T.zeros({0, 3}, "f16"),
    odd_u8 = T.from({9}, {1}, "u8"), -- would misalign what follows if the layout were by name only
  }
  local p = tmp("all.safetensors")
  st.save(p, tensors, {format = "pt"})
  local w, meta = st.load(p)
  for name, x in pairs(tensors) do same(w[name], x, name) end
  for name in pairs(w) do test.truthy(tensors[name], "unexpected tensor " .. name) end
  test.eq(meta.format, "pt")
  -- f16/bf16 stay half precision; conversion is the caller's
  test.eq(w.f16.dtype, "f16"); test.eq(w.bf16.dtype, "bf16")
  test.eq(flat(w.bf16:to("f32"))[4], 3.5)
  -- the header: names sorted, padded to 8 bytes with spaces, data 8-byte aligned
  local bytes = read(p)
  local n = string.unpack("<I8", bytes)
  test.eq((8 + n) % 8, 0, "header padding")
  local hdr = bytes:sub(9, 8 + n)
  test.truthy(hdr:match("^%{.-%} *$"), "padding is spaces")
  local last = 0
  for _, name in ipairs{"bf16", "empty", "f16", "f32", "i32", "i64", "odd_u8", "scalar", "u8"} do
    local at = hdr:find('"' .. name .. '":', 1, true)
    test.truthy(at and at > last, "names sorted: " .. name)
    last = at
  end
  test.eq(#bytes, 8 + n + 32 + 16 + 16 + 32 + 32 + 5 + 4 + 0 + 1, "file size")
end)

test.case("safetensors: non-contiguous tensors are written contiguously", function()
  local x = T.from({1, 2, 3, 4, 5, 6}, {2, 3})
  local p = tmp("nc.safetensors")
  st.save(p, {t = x:transpose(1, 2), n = x:narrow(2, 2, 2), e = x:narrow(1, 1, 1):expand{4, 3}})
  local w = st.load(p)
  same(w.e, x:narrow(1, 1, 1):expand{4, 3}:contiguous(), "expanded (stride 0)")
  same(w.t, x:transpose(1, 2):contiguous(), "transposed")
  same(w.n, x:narrow(2, 2, 2):contiguous(), "narrowed")
end)

test.case("safetensors: drop_pages gives a mapped tensor's pages back, and it still reads", function()
  local p = tmp("pages.safetensors")
  local n = 8 * 1024 * 1024 // 2                -- 8 MiB of f16
  st.save(p, {w = T.ones{n}:mul(0.5):to("f16"), small = T.from({1, 2, 3}, {3})})
  local w = st.load(p)
  local function total(t)
    local f <close> = t:to("f32")
    return f:sum():item()
  end
  test.eq(total(w.w), n * 0.5, "read once (pages resident)")
  local before = sd.memory().rss
  w.w:drop_pages()
  local after = sd.memory().rss
  io.write(string.format("  RSS %d -> %d bytes after drop_pages of an 8 MiB mapped tensor\n", before, after))
  test.truthy(before - after >= 6 * 1024 * 1024, "at least 6 of its 8 MiB left RSS")
  test.eq(total(w.w), n * 0.5, "read again from the file")
  local h = T.from({1, 2, 3}, {3})
  h:drop_pages()                                -- heap memory: nothing happens
  test.eq(flat(h)[3], 3, "a heap tensor keeps its values")
  w.small:drop_pages()                          -- smaller than a page: nothing to give back
  test.eq(flat(w.small)[2], 2, "a tensor inside one page keeps its values")
end)

test.case("safetensors: metadata round trip; empty file", function()
  local p = tmp("meta.safetensors")
  local meta = {["a key"] = "value", unicode = "é😀", quote = 'say "hi"\n\t\\', empty = "", json = '{"x": [1, 2]}'}
  st.save(p, {x = T.zeros{1}}, meta)
  local _, m = st.load(p)
  for k, v in pairs(meta) do test.eq(m[k], v, k) end
  st.save(p, {})
  local w, m2 = st.load(p)
  test.eq(next(w), nil, "no tensors")
  test.eq(next(m2), nil, "no metadata gives an empty table")
  test.eq(read(p):sub(9, 10), "{}")
end)

test.case("safetensors: names with escapes round trip", function()
  local p = tmp("names.safetensors")
  local names = {'quo"te', "back\\slash", "new\nline", "ünï", "a.b.c", ""}
  local t = {}
  for i, n in ipairs(names) do t[n] = T.full({1}, i) end
  st.save(p, t)
  local w = st.load(p)
  for i, n in ipairs(names) do test.eq(flat(w[n])[1], i, n) end
end)

test.case("safetensors: saving is atomic (target untouched on failure, no temporary left)", function()
  local p = tmp("atomic.safetensors")
  st.save(p, {x = T.ones{3}}, {v = "1"})
  local before = read(p)
  test.raises(function() st.save(p, {x = T.ones{3}}, {v = 1}) end, "metadata value of 'v' must be a string, got number")
  test.raises(function() st.save(p, {x = T.ones{3}}, {[1] = "a"}) end, "metadata keys must be strings")
  test.raises(function() st.save(p, {[1] = T.ones{3}}) end, "tensor names must be strings")
  test.raises(function() st.save(p, {x = {1, 2}}) end, "'x' is not a tensor")
  test.raises(function() st.save(p, {__metadata__ = T.ones{1}}) end, "__metadata__")
  test.raises(function() st.save(p, {["\xff"] = T.ones{1}}) end, "UTF-8")
  test.raises(function() st.save(p, "x") end)
  -- a failure after the data was written: the target is a directory, the rename fails
  local d = tmp("adir")
  assert(os.execute("mkdir -p '" .. d .. "'"))
  test.raises(function() st.save(d, {x = T.ones{3}}) end, "cannot rename")
  test.raises(function() st.save(tmp("no/such/dir.safetensors"), {x = T.ones{3}}) end, "temporary file")
  test.eq(read(p), before, "target untouched")
  test.eq(tmp_leftovers(), 0, "temporary files left")
  -- overwriting a file whose tensors are still mapped is fine (the old data stays readable)
  local w = st.load(p)
  st.save(p, {x = T.full({3}, 5)})
  same(w.x, T.ones{3}, "old mapping intact")
  test.eq(flat(st.load(p).x)[1], 5, "new contents")
end)

local F32 = '"dtype":"F32"'
local hostile = {
  {"truncated data", file('{"w":{' .. F32 .. ',"shape":[4],"data_offsets":[0,16]}}', string.rep("\0", 10)),
    "tensor 'w': data_offsets [0, 16) lie outside the data section of 10 bytes"},
  {"truncated header", file('{"w":{' .. F32 .. ',"shape":[4],"data_offsets":[0,16]}}'):sub(1, 30), "runs past the end of the file"},
  {"too short", "abc", "too short to be a safetensors file"},
  {"empty file", "", "too short to be a safetensors file"},
  {"huge header length", string.pack("<I8", 1 << 60) .. "{}", "exceeds the limit"},
  {"not JSON", string.pack("<I8", 8) .. "PK\3\4abcd", "does not start with '{'"},
  {"bad JSON", file('{"w":{' .. F32 .. ',}}'), "invalid JSON at byte"},
  {"trailing garbage", file('{}{}'), "trailing characters"},
  {"lone surrogate", file('{"\\udc00":{}}'), "surrogate"},
  {"non-string metadata", file('{"__metadata__":{"steps":20}}'), "__metadata__ value of 'steps' must be a string, got number"},
  {"duplicate names", file('{"w":{' .. F32 .. ',"shape":[1],"data_offsets":[0,4]},"w":{' .. F32 .. ',"shape":[1],"data_offsets":[4,8]}}', string.rep("\0", 8)),
    'duplicate key "w"'},
  {"overlapping ranges", file('{"a":{' .. F32 .. ',"shape":[2],"data_offsets":[0,8]},"b":{' .. F32 .. ',"shape":[2],"data_offsets":[4,12]}}', string.rep("\0", 12)),
    "tensors 'a' [0, 8) and 'b' [4, 12) overlap"},
  {"size mismatch", file('{"w":{' .. F32 .. ',"shape":[2,2],"data_offsets":[0,12]}}', string.rep("\0", 12)),
    "tensor 'w': shape (2, 2) of F32 needs 16 bytes but data_offsets [0, 12) hold 12"},
  {"unknown dtype", file('{"w":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}}', "abcd"), "tensor 'w': unknown dtype 'F31'"},
  {"unsupported dtype", file('{"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}', string.rep("\0", 8)), "unsupported dtype F64 for tensor 'w'"},
  {"negative dimension", file('{"w":{' .. F32 .. ',"shape":[-1],"data_offsets":[0,4]}}', "abcd"), "non-negative integers"},
  {"entry not an object", file('{"w":"x"}'), "tensor 'w': entry must be an object"},
  {"missing key", file('{"w":{' .. F32 .. ',"shape":[1]}}'), "tensor 'w': missing 'data_offsets'"},
}

test.case("safetensors: hostile files give clear errors naming the file", function()
  for i, h in ipairs(hostile) do
    local p = tmp("hostile" .. i .. ".safetensors")
    write(p, h[2])
    local err = test.raises(function() st.load(p) end, h[3], h[1])
    test.truthy(err:find("safetensors.load", 1, true), h[1] .. ": op named")
    test.truthy(err:find(p, 1, true), h[1] .. ": file named in " .. err)
    if h[1] ~= "unsupported dtype" then
      test.raises(function() st.header(p) end, h[3], h[1] .. " (header)")
    end
  end
  test.raises(function() st.load(tmp("missing.safetensors")) end, "cannot open")
  test.raises(function() st.load(dir) end, "not a regular file")
end)

test.case("safetensors: header() describes unsupported dtypes without loading", function()
  local p = tmp("f64.safetensors")
  write(p, file('{"__metadata__":{"k":"v"},"d":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"h":{"dtype":"BF16","shape":[2,2],"data_offsets":[8,16]}}', string.rep("\0", 16)))
  local h, meta = st.header(p)
  test.eq(h.d.dtype, "f64"); test.eq(h.d.supported, false)
  test.eq(h.h.dtype, "bf16"); test.eq(h.h.supported, true)
  test.eq(table.concat(h.h.shape, ","), "2,2")
  test.eq(meta.k, "v")
end)

test.case("safetensors: a misaligned tensor is copied, the others stay mapped", function()
  local p = tmp("mis.safetensors")
  local data = "\0" .. string.pack("<fff", 1.5, -2, 3) .. "\0\0\0"
  write(p, file('{"m":{' .. F32 .. ',"shape":[3],"data_offsets":[1,13]}}', data))
  local w = st.load(p)
  same(w.m, T.from({1.5, -2, 3}, {3}), "misaligned")
end)

os.execute("rm -rf '" .. dir .. "'")
