-- Every ```lua block in docs/*.md and README.md runs without error (the API reference promises
-- runnable examples), and prints what its `-->` comments say. Blocks run in order per file,
-- sharing one environment per file, from a temporary directory. A block whose first line is
-- "-- needs: reference" is skipped (by name) when the reference folder is absent; "-- not run:
-- <why>" marks a block that is shown only.
local test = require "test"

-- The output a block promises: `code  --> text` is the next printed line; a line holding only
-- `--> text` continues the output above it on a new line. Empty when the block promises none.
local function promised(block)
  local lines = {}
  for line in block:gmatch("[^\n]*") do
    local more = line:match("^%s*%-%->%s?(.*)$")
    if more then
      lines[#lines] = (lines[#lines] or "") .. "\n" .. more
    else
      local text = line:match("%-%->%s?(.*)$")
      if text then lines[#lines + 1] = text end
    end
  end
  return table.concat(lines, "\n")
end

-- runs fn with print and io.write (the globals, which modules use too) collecting what they
-- write; -> the output without its last newline, print's tabs as spaces
local function printed(fn)
  local out, real_print, real_write = {}, print, io.write
  print = function(...)
    local t = table.pack(...)
    for i = 1, t.n do t[i] = tostring(t[i]) end
    out[#out + 1] = table.concat(t, " ", 1, t.n) .. "\n"
  end
  io.write = function(...)
    local t = table.pack(...)
    for i = 1, t.n do out[#out + 1] = tostring(t[i]) end
    return io.stdout
  end
  local ok, err = pcall(fn)
  print, io.write = real_print, real_write
  if not ok then error(err, 0) end
  return (table.concat(out):gsub("\n$", ""))
end

local files = {"README.md"}
local p = io.popen("ls docs/*.md 2>/dev/null")
for name in p:lines() do files[#files + 1] = name end
p:close()

local reference = test.reference()
local tmpdir = os.tmpname()
os.remove(tmpdir)
os.execute("mkdir -p " .. tmpdir)

for _, file in ipairs(files) do
  local f = io.open(file, "rb")
  local text = f and f:read("a") or ""
  if f then f:close() end
  local env = setmetatable({sd = require "sd", TMP = tmpdir, REFERENCE = reference}, {__index = _G})
  local n = 0
  for block in text:gmatch("```lua\n(.-)```") do
    n = n + 1
    local name = string.format("%s example %d", file, n)
    local first = block:match("^[^\n]*")
    if first:match("^%-%- not run") then
      -- shown only
    elseif first:match("^%-%- needs: reference") and not reference then
      test.skip(name, "no reference folder")
    else
      test.case(name, function()
        local chunk = assert(load(block, "=" .. name, "t", env))
        local want = promised(block)
        local got = printed(chunk)
        if want ~= "" then test.eq(got, want, "what the block prints") end
      end)
    end
  end
end
os.execute("rm -rf " .. tmpdir)
