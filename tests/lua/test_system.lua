-- System functions of sd.core (runtime/lsystem.c): threads, memory, cpu, clock, gunzip,
-- inflate_raw, crc32.
local test = require "test"
local core = require "sd.core"

local function unhex(h) return (h:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end)) end

-- gzip -c -n of "hello\n", made once with the gzip command
local HELLO_GZ = unhex("1f8b0800000000000003cb48cdc9c9e7020020303a3606000000")

-- Compresses s with the gzip command (nil when the command is missing).
local function gzip(s, level)
  local inp = os.tmpname()
  local f = assert(io.open(inp, "wb")); f:write(s); f:close()
  local p = io.popen("gzip -c -n -" .. (level or 6) .. " < '" .. inp .. "' 2>/dev/null")
  local out = p:read("a"); p:close()
  os.remove(inp)
  if #out < 18 then return nil end
  return out
end

-- A deterministic string that compresses but not to nothing.
local function sample(n)
  local t, x = {}, 12345
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    t[i] = string.char(97 + (x >> 16) % 7)
  end
  return table.concat(t)
end

test.case("threads: get, set, restore", function()
  local n0 = core.threads()
  test.truthy(math.type(n0) == "integer" and n0 >= 1, "threads() is a positive integer")
  test.eq(core.threads(1), 1, "threads(1)")
  test.eq(core.threads(), 1, "threads() after threads(1)")
  test.eq(core.threads(n0), n0, "threads restored")
  test.eq(core.threads(nil), n0, "threads(nil) only reads")
end)

test.case("threads: argument errors", function()
  test.raises(function() core.threads(0) end, "out of range")
  test.raises(function() core.threads(-3) end, "out of range")
  test.raises(function() core.threads(5000) end, "out of range")
  test.raises(function() core.threads(1.5) end, "must be an integer")
  test.raises(function() core.threads("two") end, "integer expected")
  test.raises(function() core.threads({}) end, "integer expected")
end)

test.case("memory: fields and peak reset", function()
  local m = core.memory()
  for _, k in ipairs{"current", "peak", "pooled"} do
    test.truthy(math.type(m[k]) == "integer" and m[k] >= 0, k .. " is a non-negative integer")
  end
  test.truthy(m.peak >= m.current, "peak >= current")
  test.truthy(m.rss and m.rss > 0, "rss present and positive")
  test.truthy(m.peak_rss and m.peak_rss >= m.rss // 2, "peak_rss present")
  core.memory_reset_peak()
  local m2 = core.memory()
  test.eq(m2.peak, m2.current, "peak after memory_reset_peak")
  core.memory_trim()
  test.eq(core.memory().pooled, 0, "pooled after memory_trim")
end)

test.case("memory: tensors are counted", function()
  local T = core.tensor
  if not (T and T.zeros) then return end -- the tensor binding is not there yet
  local before = core.memory().current
  local x = T.zeros{256, 256}
  local during = core.memory().current
  test.truthy(during >= before + 256 * 256 * 4, "current grows by the tensor's bytes")
  test.truthy(core.memory().peak >= during, "peak covers it")
  x = nil
  collectgarbage(); collectgarbage()
  test.truthy(core.memory().current <= during - 256 * 256 * 4, "current falls after collection")
end)

test.case("cpu and clock", function()
  local s = core.cpu()
  test.eq(type(s), "string", "cpu() type")
  test.truthy(s:find("OpenBLAS", 1, true), "cpu() names OpenBLAS: " .. s)
  local t0 = core.clock()
  test.eq(math.type(t0), "float", "clock() is a float")
  local x = 0
  for i = 1, 100000 do x = x + i end
  local t1 = core.clock()
  test.truthy(t1 >= t0, "clock is monotonic")
  test.truthy(t1 - t0 < 60, "clock counts seconds")
end)

test.case("crc32: known values", function()
  test.eq(core.crc32(""), 0, "crc32 of nothing")
  test.eq(core.crc32("123456789"), 0xCBF43926, "crc32 check value")
  test.eq(core.crc32("6789", core.crc32("12345")), 0xCBF43926, "running crc32")
  test.eq(core.crc32("hello\n"), string.unpack("<I4", HELLO_GZ, #HELLO_GZ - 7), "crc32 = gzip trailer")
  test.raises(function() core.crc32() end, "bad argument #1")
  test.raises(function() core.crc32({}) end, "bad argument #1")
  test.raises(function() core.crc32("x", -1) end, "running crc")
  test.raises(function() core.crc32("x", 1 << 32) end, "running crc")
end)

test.case("gunzip: known bytes", function()
  test.eq(core.gunzip(HELLO_GZ), "hello\n", "gunzip")
  test.eq(core.gunzip(HELLO_GZ, 6), "hello\n", "gunzip at exactly the limit")
  test.eq(core.gunzip(HELLO_GZ .. HELLO_GZ), "hello\nhello\n", "two gzip members")
end)

local HAVE_GZIP = gzip("x") ~= nil

if not HAVE_GZIP then
  test.skip("gunzip: data made by the gzip command", "no gzip command")
else test.case("gunzip: data made by the gzip command", function()
  local s = sample(300000)
  local gz = gzip(s)
  test.truthy(#gz < #s, "it compressed")
  test.eq(core.gunzip(gz), s, "round trip of 300000 bytes")
  test.eq(core.gunzip(gzip("")), "", "empty content")
  local z1 = gzip(string.rep("\0", 1 << 20), 9) -- 1 MiB of zeros, about 1 KiB compressed
  test.eq(#core.gunzip(z1), 1 << 20, "high ratio")
end) end

test.case("gunzip: corrupt, truncated and oversized data", function()
  test.raises(function() core.gunzip(HELLO_GZ:sub(1, -5)) end, "truncated")
  test.raises(function() core.gunzip(HELLO_GZ:sub(1, 12)) end, "not gzip data")
  local bad = HELLO_GZ:sub(1, 10) .. "\255\255\255\255\255\255" .. HELLO_GZ:sub(17)
  test.raises(function() core.gunzip(bad) end, "corrupt data")
  local badcrc = HELLO_GZ:sub(1, -9) .. "\0\0\0\0" .. HELLO_GZ:sub(-4)
  test.raises(function() core.gunzip(badcrc) end, "gunzip: corrupt data")
  test.raises(function() core.gunzip("plain text, not compressed at all") end, "not gzip data")
  test.raises(function() core.gunzip(HELLO_GZ .. "junk") end, "trailing data")
  test.raises(function() core.gunzip(HELLO_GZ, 5) end, "exceeds the limit of 5 bytes")
  test.raises(function() core.gunzip(HELLO_GZ, -1) end, "must not be negative")
  test.raises(function() core.gunzip() end, "bad argument #1")
  test.raises(function() core.gunzip(HELLO_GZ, "big") end, "bad argument #2")
end)

test.case("inflate_raw: zip-style raw deflate", function()
  -- the deflate stream inside a gzip member: after the 10-byte header (no name with -n),
  -- before the 8-byte trailer
  local raw = HELLO_GZ:sub(11, -9)
  test.eq(core.inflate_raw(raw, 6), "hello\n", "inflate_raw")
  local s = sample(100000)
  local gz = gzip(s)
  if gz then test.eq(core.inflate_raw(gz:sub(11, -9), #s), s, "inflate_raw of 100000 bytes") end
  test.raises(function() core.inflate_raw(raw, 7) end, "got 6 bytes, expected 7")
  test.raises(function() core.inflate_raw(raw, 3) end, "exceeds the limit of 3 bytes")
  test.raises(function() core.inflate_raw(raw:sub(1, 3), 6) end, "truncated")
  test.raises(function() core.inflate_raw("\255\255\255", 6) end, "corrupt data")
  test.raises(function() core.inflate_raw(HELLO_GZ, 6) end, "inflate_raw: corrupt data")
  test.raises(function() core.inflate_raw(raw, -1) end, "out of range")
  test.raises(function() core.inflate_raw(raw, 1 << 30) end, "cannot hold")
  test.raises(function() core.inflate_raw("", 0) end, "empty input")
  test.raises(function() core.inflate_raw(raw) end, "bad argument #2")
  test.raises(function() core.inflate_raw(raw, 1.5) end, "bad argument #2")
end)
