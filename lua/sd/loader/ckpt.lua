-- sd.loader.ckpt: PyTorch checkpoints (.ckpt, .pt, .bin written by torch.save >= 1.6: a zip archive
-- holding <root>/data.pkl and the raw storages <root>/data/<key>).
--
-- data.pkl is read by a restricted unpickler written here. It is a data reader, not an interpreter:
-- it knows only the opcodes a state dict needs and only these globals:
--   torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter, collections.OrderedDict,
--   torch.{Float,Half,BFloat16,Long,Int,Byte}Storage
-- Anything else (another global such as os.system, REDUCE on anything but the two rebuild functions
-- and OrderedDict, instance-building opcodes, unknown opcodes) is refused with an error naming it.
-- Nothing in a .ckpt can make this code run anything.
--
--   ckpt.load(path) -> tensors (name -> tensor, zero-copy views of the file), header (name -> {shape, dtype})
--   ckpt.unpickle(bytes, persistent_load) -> Lua value (dicts/lists/tuples as tagged tables)
local zip = require "sd.loader.zip"

local ckpt = {}

-- tagged values of the unpickler
local NONE = setmetatable({}, {__tostring = function() return "None" end, __name = "pickle.None"})
ckpt.NONE = NONE
local DICT, LIST, TUPLE, GLOBAL, STORAGE, TENSOR = "dict", "list", "tuple", "global", "storage", "tensor"

local function new(kind) return {kind = kind} end
local function is(v, kind) return type(v) == "table" and v.kind == kind end
ckpt.is = is

ckpt.STORAGES = {
  ["torch.FloatStorage"] = "f32", ["torch.HalfStorage"] = "f16", ["torch.BFloat16Storage"] = "bf16",
  ["torch.LongStorage"] = "i64", ["torch.IntStorage"] = "i32", ["torch.ByteStorage"] = "u8",
}
ckpt.CALLABLES = {
  ["torch._utils._rebuild_tensor_v2"] = true, ["torch._utils._rebuild_parameter"] = true,
  ["collections.OrderedDict"] = true,
}
local ELSIZE = {f32 = 4, f16 = 2, bf16 = 2, i64 = 8, i32 = 4, u8 = 1}

local OPNAMES = {
  [0x28] = "MARK", [0x2e] = "STOP", [0x30] = "POP", [0x31] = "POP_MARK", [0x32] = "DUP", [0x46] = "FLOAT",
  [0x49] = "INT", [0x4a] = "BININT", [0x4b] = "BININT1", [0x4c] = "LONG", [0x4d] = "BININT2", [0x4e] = "NONE",
  [0x50] = "PERSID", [0x51] = "BINPERSID", [0x52] = "REDUCE", [0x53] = "STRING", [0x54] = "BINSTRING",
  [0x55] = "SHORT_BINSTRING", [0x56] = "UNICODE", [0x58] = "BINUNICODE", [0x61] = "APPEND", [0x62] = "BUILD",
  [0x63] = "GLOBAL", [0x64] = "DICT", [0x7d] = "EMPTY_DICT", [0x65] = "APPENDS", [0x67] = "GET", [0x68] = "BINGET",
  [0x69] = "INST", [0x6a] = "LONG_BINGET", [0x6c] = "LIST", [0x5d] = "EMPTY_LIST", [0x6f] = "OBJ", [0x70] = "PUT",
  [0x71] = "BINPUT", [0x72] = "LONG_BINPUT", [0x73] = "SETITEM", [0x74] = "TUPLE", [0x29] = "EMPTY_TUPLE",
  [0x75] = "SETITEMS", [0x47] = "BINFLOAT", [0x80] = "PROTO", [0x81] = "NEWOBJ", [0x82] = "EXT1", [0x83] = "EXT2",
  [0x84] = "EXT4", [0x85] = "TUPLE1", [0x86] = "TUPLE2", [0x87] = "TUPLE3", [0x88] = "NEWTRUE", [0x89] = "NEWFALSE",
  [0x8a] = "LONG1", [0x8b] = "LONG4", [0x42] = "BINBYTES", [0x43] = "SHORT_BINBYTES", [0x8c] = "SHORT_BINUNICODE",
  [0x8d] = "BINUNICODE8", [0x8e] = "BINBYTES8", [0x8f] = "EMPTY_SET", [0x90] = "ADDITEMS", [0x91] = "FROZENSET",
  [0x92] = "NEWOBJ_EX", [0x93] = "STACK_GLOBAL", [0x94] = "MEMOIZE", [0x95] = "FRAME", [0x96] = "BYTEARRAY8",
  [0x97] = "NEXT_BUFFER", [0x98] = "READONLY_BUFFER",
}

local function describe(v)
  if v == NONE then return "None" end
  if type(v) == "table" then
    if v.kind == GLOBAL then return "global " .. v.name end
    return v.kind or "table"
  end
  return type(v) .. " " .. tostring(v)
end

-- data: the pickle bytes. persistent_load(pid) -> value for BINPERSID. Returns the unpickled value.
function ckpt.unpickle(data, persistent_load, where)
  where = where or "pickle"
  local pos, n = 1, #data
  local stack, marks, memo, nmemo = {}, {}, {}, 0
  local function fail(msg)
    error(("%s: %s (at byte %d)"):format(where, msg, pos - 1), 0)
  end
  local function need(k)
    if pos + k - 1 > n then fail("truncated data") end
  end
  local function u8() need(1); local v = data:byte(pos); pos = pos + 1; return v end
  local function fmt(f, k) need(k); local v = string.unpack(f, data, pos); pos = pos + k; return v end
  local function bytes(k)
    if k < 0 then fail("negative length") end
    need(k); local s = data:sub(pos, pos + k - 1); pos = pos + k; return s
  end
  local function push(v) stack[#stack + 1] = v end
  local function pop()
    local top = #stack
    if top == 0 or (marks[#marks] and top <= marks[#marks]) then fail("stack underflow") end
    local v = stack[top]; stack[top] = nil; return v
  end
  local function top() if #stack == 0 then fail("stack underflow") end return stack[#stack] end
  local function pop_mark()
    local m = marks[#marks]
    if not m then fail("no MARK on the stack") end
    marks[#marks] = nil
    local items = {}
    for i = m + 1, #stack do items[#items + 1] = stack[i]; stack[i] = nil end
    return items
  end
  local function tuple(items)
    local t = new(TUPLE); t.n = #items
    for i, v in ipairs(items) do t[i] = v end
    return t
  end
  local function dict_set(d, k, v)
    if not is(d, DICT) then fail("SETITEM(S) on " .. describe(d)) end
    if type(k) ~= "string" and math.type(k) ~= "integer" then fail("dict key of type " .. describe(k)) end
    if d.map[k] == nil then d.keys[#d.keys + 1] = k end
    d.map[k] = v
  end
  local function global(name)
    if ckpt.STORAGES[name] or ckpt.CALLABLES[name] then
      local g = new(GLOBAL); g.name = name; return g
    end
    if name:match("^torch%.%w+Storage$") then
      fail("refusing global " .. name .. " (tensors of this storage type are not supported; "
        .. "supported: Float, Half, BFloat16, Long, Int, Byte)")
    end
    fail("refusing global " .. name .. " (a state dict needs only torch storages, torch._utils rebuild functions "
      .. "and collections.OrderedDict; loading it could run code)")
  end
  local function reduce(f, args)
    if not is(f, GLOBAL) or not ckpt.CALLABLES[f.name] then fail("refusing REDUCE on " .. describe(f)) end
    if not is(args, TUPLE) then fail("REDUCE arguments are not a tuple") end
    if f.name == "collections.OrderedDict" then
      if args.n ~= 0 then fail("OrderedDict with constructor arguments") end
      local d = new(DICT); d.map = {}; d.keys = {}; return d
    elseif f.name == "torch._utils._rebuild_parameter" then
      local t = args[1]
      if not is(t, TENSOR) then fail("_rebuild_parameter of " .. describe(t)) end
      return t
    else -- _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      local st, off, size, stride = args[1], args[2], args[3], args[4]
      if not is(st, STORAGE) then fail("_rebuild_tensor_v2 of " .. describe(st) .. " (expected a storage)") end
      if math.type(off) ~= "integer" or off < 0 then fail("_rebuild_tensor_v2: bad storage offset") end
      if not is(size, TUPLE) or not is(stride, TUPLE) or size.n ~= stride.n or size.n > 8 then
        fail("_rebuild_tensor_v2: bad size/stride")
      end
      local t = new(TENSOR)
      t.storage, t.offset, t.size, t.stride = st, off, {}, {}
      for i = 1, size.n do
        if math.type(size[i]) ~= "integer" or size[i] < 0 or math.type(stride[i]) ~= "integer" or stride[i] < 0 then
          fail("_rebuild_tensor_v2: bad size/stride entry")
        end
        t.size[i], t.stride[i] = size[i], stride[i]
      end
      return t
    end
  end

  while true do
    if pos > n then fail("truncated data (no STOP)") end
    local op = data:byte(pos)
    pos = pos + 1
    if op == 0x80 then -- PROTO
      local v = u8()
      if v > 5 then fail("unsupported pickle protocol " .. v) end
    elseif op == 0x95 then fmt("<I8", 8) -- FRAME (length only)
    elseif op == 0x2e then -- STOP
      local v = pop()
      return v
    elseif op == 0x7d then local d = new(DICT); d.map = {}; d.keys = {}; push(d) -- EMPTY_DICT
    elseif op == 0x5d then local l = new(LIST); l.n = 0; push(l) -- EMPTY_LIST
    elseif op == 0x29 then push(tuple{}) -- EMPTY_TUPLE
    elseif op == 0x28 then marks[#marks + 1] = #stack -- MARK
    elseif op == 0x74 then push(tuple(pop_mark())) -- TUPLE
    elseif op == 0x85 then local a = pop(); push(tuple{a}) -- TUPLE1
    elseif op == 0x86 then local b = pop(); local a = pop(); push(tuple{a, b}) -- TUPLE2
    elseif op == 0x87 then local c = pop(); local b = pop(); local a = pop(); push(tuple{a, b, c}) -- TUPLE3
    elseif op == 0x75 then -- SETITEMS
      local items = pop_mark()
      if #items % 2 ~= 0 then fail("SETITEMS with an odd number of items") end
      local d = top()
      for i = 1, #items, 2 do dict_set(d, items[i], items[i + 1]) end
    elseif op == 0x73 then -- SETITEM
      local v = pop(); local k = pop(); dict_set(top(), k, v)
    elseif op == 0x61 then -- APPEND
      local v = pop(); local l = top()
      if not is(l, LIST) then fail("APPEND to " .. describe(l)) end
      l.n = l.n + 1; l[l.n] = v
    elseif op == 0x65 then -- APPENDS
      local items = pop_mark(); local l = top()
      if not is(l, LIST) then fail("APPENDS to " .. describe(l)) end
      for _, v in ipairs(items) do l.n = l.n + 1; l[l.n] = v end
    elseif op == 0x58 then push(bytes(fmt("<I4", 4))) -- BINUNICODE
    elseif op == 0x8c then push(bytes(u8())) -- SHORT_BINUNICODE
    elseif op == 0x8d then push(bytes(fmt("<I8", 8))) -- BINUNICODE8
    elseif op == 0x43 then push(bytes(u8())) -- SHORT_BINBYTES
    elseif op == 0x42 then push(bytes(fmt("<I4", 4))) -- BINBYTES
    elseif op == 0x4a then push(fmt("<i4", 4)) -- BININT
    elseif op == 0x4b then push(u8()) -- BININT1
    elseif op == 0x4d then push(fmt("<I2", 2)) -- BININT2
    elseif op == 0x8a then -- LONG1
      local k = u8()
      if k > 8 then fail("LONG1 of " .. k .. " bytes") end
      if k == 0 then push(0) else push(fmt("<i" .. k, k)) end
    elseif op == 0x47 then push(fmt(">d", 8)) -- BINFLOAT
    elseif op == 0x4e then push(NONE)
    elseif op == 0x88 then push(true)
    elseif op == 0x89 then push(false)
    elseif op == 0x71 or op == 0x72 or op == 0x94 then -- BINPUT / LONG_BINPUT / MEMOIZE (key = memo size)
      local k = op == 0x71 and u8() or op == 0x72 and fmt("<I4", 4) or nmemo
      if memo[k] == nil then nmemo = nmemo + 1 end
      memo[k] = top()
    elseif op == 0x68 or op == 0x6a then -- BINGET / LONG_BINGET
      local k = op == 0x68 and u8() or fmt("<I4", 4)
      if memo[k] == nil then fail("memo key " .. k .. " not set") end
      push(memo[k])
    elseif op == 0x30 then pop() -- POP
    elseif op == 0x31 then pop_mark() -- POP_MARK
    elseif op == 0x63 then -- GLOBAL "module\nname\n"
      local e1 = data:find("\n", pos, true)
      if not e1 then fail("truncated GLOBAL") end
      local e2 = data:find("\n", e1 + 1, true)
      if not e2 then fail("truncated GLOBAL") end
      local name = data:sub(pos, e1 - 1) .. "." .. data:sub(e1 + 1, e2 - 1)
      pos = e2 + 1
      push(global(name))
    elseif op == 0x93 then -- STACK_GLOBAL
      local name = pop(); local module = pop()
      if type(name) ~= "string" or type(module) ~= "string" then fail("STACK_GLOBAL of non-strings") end
      push(global(module .. "." .. name))
    elseif op == 0x51 then -- BINPERSID
      local pid = pop()
      if not persistent_load then fail("persistent id without a loader") end
      push(persistent_load(pid, fail))
    elseif op == 0x52 then -- REDUCE
      local args = pop(); local f = pop()
      push(reduce(f, args))
    elseif op == 0x62 then -- BUILD: only the attribute dict torch attaches to an OrderedDict (_metadata)
      local state = pop(); local obj = top()
      if not is(obj, DICT) and not is(obj, TENSOR) then fail("refusing BUILD on " .. describe(obj)) end
      if not (is(state, DICT) or state == NONE or is(state, TUPLE)) then fail("refusing BUILD with " .. describe(state)) end
    else
      local name = OPNAMES[op]
      fail(("refusing pickle opcode 0x%02x%s (not needed by a state dict)"):format(op, name and (" " .. name) or " (unknown)"))
    end
  end
end

-- Lua value of a pickled dict (string keys) as a plain table, for tests and inspection.
function ckpt.plain(v)
  if is(v, DICT) then
    local r = {}
    for _, k in ipairs(v.keys) do r[k] = ckpt.plain(v.map[k]) end
    return r
  elseif is(v, LIST) or is(v, TUPLE) then
    local r = {}
    for i = 1, v.n do r[i] = ckpt.plain(v[i]) end
    return r
  end
  return v
end

-- The strides (in elements) of a contiguous tensor of shape `size`.
local function contiguous_strides(size)
  local st, acc = {}, 1
  for i = #size, 1, -1 do st[i] = acc; acc = acc * size[i] end
  return st
end
ckpt.contiguous_strides = contiguous_strides

-- tensor record -> tensor view (zero-copy where the core supports T.from_file)
local function make_tensor(path, name, rec, data_offset_of, fail)
  local st = rec.storage
  local dtype = st.dtype
  local es = ELSIZE[dtype]
  local entry, base = data_offset_of(st.key)
  if st.numel * es > entry.usize then
    fail(("storage %s of %s claims %d elements but its entry holds %d bytes"):format(st.key, name, st.numel, entry.usize))
  end
  local numel, maxidx = 1, 0
  for i, s in ipairs(rec.size) do
    numel = numel * s
    if s > 0 then maxidx = maxidx + (s - 1) * rec.stride[i] end
  end
  if numel > 0 and rec.offset + maxidx >= st.numel then
    fail(("tensor %s reaches past the end of its storage"):format(name))
  end
  local T = require("sd.core").tensor
  local shape = rec.size
  -- contiguous, or a permutation of a contiguous layout (e.g. a stored transpose)
  local order = {}
  for i = 1, #shape do order[i] = i end
  table.sort(order, function(a, b)
    if rec.stride[a] ~= rec.stride[b] then return rec.stride[a] > rec.stride[b] end
    return a < b
  end)
  local pshape = {}
  for i, d in ipairs(order) do pshape[i] = shape[d] end
  local want = contiguous_strides(pshape)
  for i, d in ipairs(order) do
    if shape[d] > 1 and rec.stride[d] ~= want[i] then
      fail(("tensor %s has a strided layout that is not a permutation of a contiguous one"):format(name))
    end
  end
  local off = base + rec.offset * es
  local t
  if T.from_file then
    local ok, r = pcall(T.from_file, path, off, dtype, pshape)
    if not ok then fail(("tensor %s: %s"):format(name, tostring(r))) end
    t = r
  else
    error("ckpt: the core has no tensor.from_file", 0)
  end
  local identity = true
  for i, d in ipairs(order) do if d ~= i then identity = false end end
  if not identity then
    local inv = {}
    for i, d in ipairs(order) do inv[d] = i end
    t = t:permute(inv)
  end
  return t
end

-- .ckpt / .bin -> tensors (name -> tensor), header (name -> {shape=, dtype=}), extra (other top-level entries)
function ckpt.load(path)
  local z = zip.open(path)
  local pkl
  for _, name in ipairs(z.names) do
    if name:match("data%.pkl$") and (name == "data.pkl" or name:match("^[^/]+/data%.pkl$")) then pkl = name; break end
  end
  if not pkl then
    error("ckpt: " .. path .. ": a zip archive without data.pkl: not a PyTorch checkpoint", 0)
  end
  local root = pkl:sub(1, #pkl - #"data.pkl")
  local bo = z.entries[root .. "byteorder"]
  if bo then
    local order = zip.read(z, bo, 16)
    if order ~= "little" then error("ckpt: " .. path .. ": byte order " .. order .. " is not supported", 0) end
  end
  local bytes = zip.read(z, pkl, 256 * 1024 * 1024)
  local storages = {}
  local function persistent_load(pid, fail)
    if not is(pid, TUPLE) or pid[1] ~= "storage" or pid.n < 5 then fail("unexpected persistent id " .. describe(pid)) end
    local ty, key, numel = pid[2], pid[3], pid[5]
    if not is(ty, GLOBAL) or not ckpt.STORAGES[ty.name] then fail("persistent id with storage type " .. describe(ty)) end
    if type(key) ~= "string" or not key:match("^[%w_]+$") then fail("bad storage key " .. describe(key)) end
    if math.type(numel) ~= "integer" or numel < 0 then fail("bad storage size") end
    local s = storages[key]
    if not s then
      s = new(STORAGE); s.dtype = ckpt.STORAGES[ty.name]; s.key = key; s.numel = numel
      storages[key] = s
    end
    return s
  end
  local where = "ckpt: " .. path .. ": data.pkl"
  local obj = ckpt.unpickle(bytes, persistent_load, where)
  if not is(obj, DICT) then error(where .. ": the top-level object is a " .. describe(obj) .. ", not a dict", 0) end
  local sd = obj
  local inner = obj.map.state_dict
  if is(inner, DICT) then sd = inner end
  local function fail(msg) error(where .. ": " .. msg, 0) end
  local function data_offset_of(key)
    local e = z.entries[root .. "data/" .. key]
    if not e then fail("storage " .. key .. " has no data entry in the archive") end
    if e.method ~= 0 then fail("storage entry " .. e.name .. " is compressed (method " .. e.method .. "); cannot map it") end
    return e, zip.data_offset(z, e)
  end
  local tensors, header, extra = {}, {}, {}
  if sd ~= obj then
    for _, k in ipairs(obj.keys) do
      if k ~= "state_dict" then extra[k] = ckpt.plain(obj.map[k]) end
    end
  end
  for _, k in ipairs(sd.keys) do
    local v = sd.map[k]
    if is(v, TENSOR) then
      if type(k) ~= "string" then fail("tensor under a non-string key") end
      tensors[k] = make_tensor(path, k, v, data_offset_of, fail)
      header[k] = {shape = tensors[k].shape, dtype = v.storage.dtype}
    else
      extra[k] = ckpt.plain(v)
    end
  end
  return tensors, header, extra
end

return ckpt
