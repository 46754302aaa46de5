-- sdlua: Stable Diffusion in C and Lua. `local sd = require "sd"` gives the whole public API;
-- the parts that need model code (sd.load, sd.scheduler, ...) are loaded on first use.
local core = require "sd.core"

local sd = {
  core = core,
  tensor = core.tensor,
  rng = core.rng,
  safetensors = core.safetensors,
  version = "0.1.0",
}

-- System functions of the core (threads, memory, cpu, clock, ...) appear as sd.<name>.
for name, fn in pairs(core) do
  if type(fn) == "function" and sd[name] == nil then sd[name] = fn end
end

-- sd.time(f, ...) -> seconds, results of f(...)
function sd.time(f, ...)
  local clock = core.clock or os.clock
  local t0 = clock()
  local results = table.pack(f(...))
  return clock() - t0, table.unpack(results, 1, results.n)
end

-- Modules written in Lua, loaded when first touched: sd.load, sd.scheduler, sd.image, ...
local lazy = {
  tokenizer = "sd.tokenizer",
  image = "sd.image",
  load = function() return require("sd.pipeline").load end,
  scheduler = function() return require("sd.schedulers").new end,
  schedulers = "sd.schedulers",
  nn = "sd.nn",
  display = "sd.display",
  plot = "sd.plot",
  help = "sd.help",
}

return setmetatable(sd, {
  __index = function(t, k)
    local how = lazy[k]
    if how == nil then return nil end
    local v = type(how) == "function" and how() or require(how)
    rawset(t, k, v)
    return v
  end,
})
