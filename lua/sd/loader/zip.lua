-- sd.loader.zip: the reading half of the zip format, as much as PyTorch archives need: the central
-- directory (zip64 included: real checkpoints pass 4 GiB), entry sizes, and the absolute offset of each
-- entry's data so that stored (uncompressed) entries can be mapped without reading them.
--
--   local z = zip.open(path)        -- raises "zip: <path>: <what is wrong>"
--   z.entries[name] -> {name=, method=, csize=, usize=, crc=, header_offset=}
--   z.names                        -- in directory order
--   zip.data_offset(z, entry)      -- absolute offset of the entry's bytes (reads the local header)
--   zip.read(z, name [, max])      -- the entry's bytes as a string (stored or deflated)
local zip = {}

local function fail(path, msg) error(("zip: %s: %s"):format(path, msg), 0) end

local MAX_ENTRIES = 1000000

local function u16(s, i) return string.unpack("<I2", s, i) end
local function u32(s, i) return string.unpack("<I4", s, i) end
local function u64(s, i) return string.unpack("<I8", s, i) end

function zip.open(path)
  local f, err = io.open(path, "rb")
  if not f then fail(path, tostring(err)) end
  local size = f:seek("end")
  if not size or size < 22 then f:close(); fail(path, "too short for a zip archive") end
  -- end of central directory: the last "PK\5\6" within the final 64 KiB + 22 bytes
  local tail_len = math.min(size, 65535 + 22)
  f:seek("set", size - tail_len)
  local tail = f:read(tail_len)
  local pos
  for i = #tail - 21, 1, -1 do
    if tail:byte(i) == 0x50 and tail:sub(i, i + 3) == "PK\5\6" then pos = i; break end
  end
  if not pos then f:close(); fail(path, "no end-of-central-directory record (not a zip archive, or truncated)") end
  local eocd_abs = size - tail_len + pos - 1
  local n_total = u16(tail, pos + 10)
  local cd_size = u32(tail, pos + 12)
  local cd_off = u32(tail, pos + 16)
  if n_total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_off == 0xFFFFFFFF then
    -- zip64: locator 20 bytes before the EOCD, pointing at the zip64 EOCD record
    if eocd_abs < 20 then f:close(); fail(path, "zip64 locator missing") end
    f:seek("set", eocd_abs - 20)
    local loc = f:read(20)
    if not loc or #loc < 20 or loc:sub(1, 4) ~= "PK\6\7" then f:close(); fail(path, "zip64 locator missing") end
    local z64 = u64(loc, 9)
    if z64 < 0 or z64 + 56 > size then f:close(); fail(path, "zip64 end record offset out of range") end
    f:seek("set", z64)
    local rec = f:read(56)
    if not rec or #rec < 56 or rec:sub(1, 4) ~= "PK\6\6" then f:close(); fail(path, "bad zip64 end record") end
    n_total = u64(rec, 33)
    cd_size = u64(rec, 41)
    cd_off = u64(rec, 49)
  end
  if n_total > MAX_ENTRIES then f:close(); fail(path, "too many entries (" .. n_total .. ")") end
  if cd_off < 0 or cd_size < 0 or cd_off + cd_size > size then
    f:close(); fail(path, "central directory out of range (offset " .. cd_off .. ", size " .. cd_size .. ")")
  end
  f:seek("set", cd_off)
  local cd = f:read(cd_size) or ""
  if #cd ~= cd_size then f:close(); fail(path, "central directory truncated") end
  local z = {path = path, size = size, entries = {}, names = {}, file = f}
  local p = 1
  for _ = 1, n_total do
    if p + 45 > #cd or cd:sub(p, p + 3) ~= "PK\1\2" then f:close(); fail(path, "bad central directory entry") end
    local flags = u16(cd, p + 8)
    local method = u16(cd, p + 10)
    local crc = u32(cd, p + 16)
    local csize, usize = u32(cd, p + 20), u32(cd, p + 24)
    local nlen, xlen, clen = u16(cd, p + 28), u16(cd, p + 30), u16(cd, p + 32)
    local hoff = u32(cd, p + 42)
    if p + 45 + nlen + xlen + clen > #cd then f:close(); fail(path, "central directory entry overruns the directory") end
    local name = cd:sub(p + 46, p + 45 + nlen)
    local extra = cd:sub(p + 46 + nlen, p + 45 + nlen + xlen)
    -- zip64 extended information: the 8-byte values of the fields that are 0xFFFFFFFF, in order
    local q = 1
    while q + 3 <= #extra do
      local id, len = u16(extra, q), u16(extra, q + 2)
      if q + 3 + len > #extra then break end
      if id == 1 then
        local r = q + 4
        local function take()
          if r + 7 > q + 3 + len then fail(path, "short zip64 extra field in " .. name) end
          local v = u64(extra, r); r = r + 8; return v
        end
        if usize == 0xFFFFFFFF then usize = take() end
        if csize == 0xFFFFFFFF then csize = take() end
        if hoff == 0xFFFFFFFF then hoff = take() end
      end
      q = q + 4 + len
    end
    if flags & 1 ~= 0 then f:close(); fail(path, "entry " .. name .. " is encrypted") end
    if hoff < 0 or csize < 0 or usize < 0 or hoff + 30 + csize > size then
      f:close(); fail(path, ("entry %s lies outside the file (offset %d, size %d)"):format(name, hoff, csize))
    end
    local e = {name = name, method = method, csize = csize, usize = usize, crc = crc, header_offset = hoff}
    z.entries[name] = e
    z.names[#z.names + 1] = name
    p = p + 46 + nlen + xlen + clen
  end
  f:close()
  z.file = nil
  return z
end

-- Absolute byte offset of an entry's data (after its local header).
function zip.data_offset(z, e)
  if e.data_offset then return e.data_offset end
  local f, err = io.open(z.path, "rb")
  if not f then fail(z.path, tostring(err)) end
  f:seek("set", e.header_offset)
  local h = f:read(30)
  f:close()
  if not h or #h < 30 or h:sub(1, 4) ~= "PK\3\4" then
    fail(z.path, "bad local header for entry " .. e.name .. " at offset " .. e.header_offset)
  end
  local nlen, xlen = u16(h, 27), u16(h, 29)
  local off = e.header_offset + 30 + nlen + xlen
  if off + e.csize > z.size then
    fail(z.path, ("data of entry %s runs past the end of the file"):format(e.name))
  end
  e.data_offset = off
  return off
end

-- An entry's bytes. max: refuse entries larger than this (default 1 GiB).
function zip.read(z, name, max)
  local e = type(name) == "table" and name or z.entries[name]
  if not e then fail(z.path, "no entry " .. tostring(name)) end
  max = max or (1 << 30)
  if e.usize > max or e.csize > max then fail(z.path, ("entry %s is too large to read (%d bytes)"):format(e.name, e.usize)) end
  local off = zip.data_offset(z, e)
  local f = assert(io.open(z.path, "rb"))
  f:seek("set", off)
  local data = f:read(e.csize) or ""
  f:close()
  if #data ~= e.csize then fail(z.path, "entry " .. e.name .. " is truncated") end
  if e.method == 8 then
    local core = require "sd.core"
    local ok, out = pcall(core.inflate_raw, data, e.usize)
    if not ok then fail(z.path, "entry " .. e.name .. ": " .. tostring(out)) end
    data = out
  elseif e.method ~= 0 then
    fail(z.path, ("entry %s uses compression method %d (only stored and deflate are supported)"):format(e.name, e.method))
  end
  local core = require "sd.core"
  if core.crc32 and core.crc32(data) ~= e.crc then
    fail(z.path, "entry " .. e.name .. " fails its CRC check (corrupt file)")
  end
  return data
end

return zip
