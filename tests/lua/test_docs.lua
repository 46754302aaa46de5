-- Every ```lua block in docs/*.md and README.md runs without error (the API reference promises
-- runnable examples). Blocks run in order per file, sharing one environment per file, from a
-- temporary directory. A block whose first line is "-- needs: reference" is skipped (by name)
-- when the reference folder is absent; "-- not run: <why>" marks a block that is shown only.
local test = require "test"

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
        chunk()
      end)
    end
  end
end
os.execute("rm -rf " .. tmpdir)
