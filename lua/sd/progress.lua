-- sd.progress: a progress bar on standard error for the sampling loop (used by `sdlua txt2img`).
--
--   local progress = require "sd.progress"
--   local bar = progress.new{total = 20, label = "sampling"}
--   pipe:txt2img{..., on_step = bar:on_step()}
--   bar:finish()
--
-- On a terminal one line is redrawn in place:
--   sampling  12/20 [=============>          ]  0.41 s/it  ETA 3.3s
-- When standard error is not a terminal (a log file, a pipe, CI) each step prints a plain line:
--   sampling step 12/20  0.41 s/it  ETA 3.3s
-- opts: total (steps), label, stream (default io.stderr), tty (default: detected), quiet
-- (prints nothing), width (bar cells, default 30), clock (a function returning seconds).
local M = {}

local Bar = {}
Bar.__index = Bar

-- true when file descriptor fd (default 2, standard error) is a terminal
function M.isatty(fd)
  local ok, how, code = os.execute(("test -t %d"):format(fd or 2))
  return ok == true and how == "exit" and code == 0
end

local function clock_fn()
  local ok, core = pcall(require, "sd.core")
  return ok and core.clock or os.clock
end

local function fmt_time(s)
  if s ~= s or s == math.huge then return "?" end
  if s < 60 then return ("%.1fs"):format(s) end
  if s < 3600 then return ("%dm%02ds"):format(math.floor(s / 60), math.floor(s % 60)) end
  return ("%dh%02dm"):format(math.floor(s / 3600), math.floor(s % 3600 / 60))
end
M.format_time = fmt_time

-- "0.41 s/it" (seconds per step, the figure that matters for diffusion models)
local function fmt_rate(spi)
  if spi < 0.1 then return ("%.3f s/it"):format(spi) end
  return ("%.2f s/it"):format(spi)
end
M.format_rate = fmt_rate

function M.new(opts)
  opts = opts or {}
  local self = setmetatable({}, Bar)
  self.total = opts.total or 0
  self.label = opts.label or "sampling"
  self.stream = opts.stream or io.stderr
  self.quiet = opts.quiet or false
  if opts.tty == nil then self.tty = not self.quiet and M.isatty(2) else self.tty = opts.tty end
  self.width = opts.width or 30
  self.clock = opts.clock or clock_fn()
  self.start = self.clock()
  self.last = self.start
  self.step = 0
  self.open = false
  return self
end

-- The text of the current state (without line ending / carriage return).
function Bar:text()
  local i, n = self.step, self.total
  local elapsed = self.clock() - self.start
  local spi = i > 0 and elapsed / i or 0
  local eta = n > i and spi * (n - i) or 0
  local rate = i > 0 and ("  " .. fmt_rate(spi)) or ""
  local tail = i > 0 and ("  ETA " .. fmt_time(eta)) or ""
  if self.tty then
    local filled = n > 0 and math.floor(self.width * i / n) or 0
    local bar = ("="):rep(math.max(filled - 1, 0)) .. (filled > 0 and (i < n and ">" or "=") or "")
    return ("%s %3d/%d [%-" .. self.width .. "s]%s%s"):format(self.label, i, n, bar, rate, tail)
  end
  return ("%s step %d/%d%s%s"):format(self.label, i, n, rate, tail)
end

-- Records step i (default: the next one) and redraws.
function Bar:update(i)
  self.step = i or (self.step + 1)
  self.last = self.clock()
  if self.quiet then return end
  if self.tty then
    self.stream:write("\r", self:text(), "\27[K")
    self.open = true
  else
    self.stream:write(self:text(), "\n")
  end
  self.stream:flush()
end

-- A function for pipe:txt2img's on_step (calls `chain` after, if given, and returns its result).
function Bar:on_step(chain)
  return function(i, t, latents)
    self:update(i)
    if chain then return chain(i, t, latents) end
  end
end

-- Ends the bar's line (call it also when sampling stops on an error).
function Bar:finish()
  if self.open then
    self.stream:write("\n")
    self.stream:flush()
    self.open = false
  end
end

-- Seconds since the bar was made.
function Bar:elapsed() return self.clock() - self.start end

return M
