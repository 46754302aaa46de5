-- sd.plot: a tiny line-chart renderer that draws into an image tensor, with no dependency beyond
-- the core: axes with "nice" ticks (linear or log y), a few coloured series with point markers,
-- a title, axis labels and a legend, lettered with a built-in 5x7 bitmap font.
--
--   local plot = require "sd.plot"
--   local img = plot.lines{
--     title = "sigmas", xlabel = "step", ylabel = "sigma", log_y = false,
--     width = 640, height = 400,                         -- pixels (defaults)
--     series = {{name = "euler", y = {14.6, 9.7, ...}},  -- x defaults to 0, 1, 2, ...
--               {name = "karras", x = {...}, y = {...}, color = {214, 39, 40}}},
--   }                                                  -- -> (1,3,H,W) f32 in [0,1]
--   sd.display(img) ; sd.image.save("chart.png", img)
--   plot.show{...} / plot.save(path, {...})            -- the same, drawn and shown / written
--
-- Canvas drawing is also available: plot.canvas(w, h), c:line(...), c:text(...), c:tensor().
-- The output depends only on the inputs (integer pixel arithmetic), so charts are reproducible.
local T = require("sd.core").tensor

local plot = {}

-- ---- the 5x7 font -------------------------------------------------------------------------
-- Each glyph: seven rows of five cells, "#" inked.
local glyph_rows = {
  ["0"] = ".###. #...# #..## #.#.# ##..# #...# .###.", ["1"] = "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
  ["2"] = ".###. #...# ....# ...#. ..#.. .#... #####", ["3"] = "####. ....# ....# .###. ....# ....# ####.",
  ["4"] = "...#. ..##. .#.#. #..#. ##### ...#. ...#.", ["5"] = "##### #.... ####. ....# ....# #...# .###.",
  ["6"] = "..##. .#... #.... ####. #...# #...# .###.", ["7"] = "##### ....# ...#. ..#.. .#... .#... .#...",
  ["8"] = ".###. #...# #...# .###. #...# #...# .###.", ["9"] = ".###. #...# #...# .#### ....# ...#. .##..",
  A = ".###. #...# #...# ##### #...# #...# #...#", B = "####. #...# #...# ####. #...# #...# ####.",
  C = ".###. #...# #.... #.... #.... #...# .###.", D = "####. #...# #...# #...# #...# #...# ####.",
  E = "##### #.... #.... ####. #.... #.... #####", F = "##### #.... #.... ####. #.... #.... #....",
  G = ".###. #...# #.... #.### #...# #...# .####", H = "#...# #...# #...# ##### #...# #...# #...#",
  I = ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.", J = "..### ...#. ...#. ...#. ...#. #..#. .##..",
  K = "#...# #..#. #.#.. ##... #.#.. #..#. #...#", L = "#.... #.... #.... #.... #.... #.... #####",
  M = "#...# ##.## #.#.# #.#.# #...# #...# #...#", N = "#...# #...# ##..# #.#.# #..## #...# #...#",
  O = ".###. #...# #...# #...# #...# #...# .###.", P = "####. #...# #...# ####. #.... #.... #....",
  Q = ".###. #...# #...# #...# #.#.# #..#. .##.#", R = "####. #...# #...# ####. #.#.. #..#. #...#",
  S = ".#### #.... #.... .###. ....# ....# ####.", T = "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
  U = "#...# #...# #...# #...# #...# #...# .###.", V = "#...# #...# #...# #...# #...# .#.#. ..#..",
  W = "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.", X = "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
  Y = "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..", Z = "##### ....# ...#. ..#.. .#... #.... #####",
  a = "..... ..... .###. ....# .#### #...# .####", b = "#.... #.... #.##. ##..# #...# #...# ####.",
  c = "..... ..... .###. #.... #.... #...# .###.", d = "....# ....# .##.# #..## #...# #...# .####",
  e = "..... ..... .###. #...# ##### #.... .###.", f = "..##. .#..# .#... ###.. .#... .#... .#...",
  g = "..... .#### #...# #...# .#### ....# .###.", h = "#.... #.... #.##. ##..# #...# #...# #...#",
  i = "..#.. ..... .##.. ..#.. ..#.. ..#.. .###.", j = "...#. ..... ..##. ...#. ...#. #..#. .##..",
  k = "#.... #.... #..#. #.#.. ##... #.#.. #..#.", l = ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
  m = "..... ..... ##.#. #.#.# #.#.# #...# #...#", n = "..... ..... #.##. ##..# #...# #...# #...#",
  o = "..... ..... .###. #...# #...# #...# .###.", p = "..... ..... ####. #...# ####. #.... #....",
  q = "..... ..... .##.# #..## .#### ....# ....#", r = "..... ..... #.##. ##..# #.... #.... #....",
  s = "..... ..... .###. #.... .###. ....# ####.", t = ".#... .#... ###.. .#... .#... .#..# ..##.",
  u = "..... ..... #...# #...# #...# #..## .##.#", v = "..... ..... #...# #...# #...# .#.#. ..#..",
  w = "..... ..... #...# #...# #.#.# #.#.# .#.#.", x = "..... ..... #...# .#.#. ..#.. .#.#. #...#",
  y = "..... ..... #...# #...# .#### ....# .###.", z = "..... ..... ##### ...#. ..#.. .#... #####",
  [" "] = "..... ..... ..... ..... ..... ..... .....", ["."] = "..... ..... ..... ..... ..... .##.. .##..",
  [","] = "..... ..... ..... ..... .##.. ..#.. .#...", ["-"] = "..... ..... ..... ##### ..... ..... .....",
  ["+"] = "..... ..#.. ..#.. ##### ..#.. ..#.. .....", ["_"] = "..... ..... ..... ..... ..... ..... #####",
  ["("] = "...#. ..#.. .#... .#... .#... ..#.. ...#.", [")"] = ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
  [":"] = "..... .##.. .##.. ..... .##.. .##.. .....", ["/"] = "..... ....# ...#. ..#.. .#... #.... .....",
  ["="] = "..... ..... ##### ..... ##### ..... .....", ["%"] = "##..# ##.#. ...#. ..#.. .#... .#.## #..##",
  ["["] = ".###. .#... .#... .#... .#... .#... .###.", ["]"] = ".###. ...#. ...#. ...#. ...#. ...#. .###.",
  ["'"] = "..#.. ..#.. ..... ..... ..... ..... .....", ["*"] = "..... ..#.. #.#.# .###. #.#.# ..#.. .....",
  ["?"] = ".###. #...# ....# ...#. ..#.. ..... ..#..", ["!"] = "..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..",
  ["^"] = "..#.. .#.#. #...# ..... ..... ..... .....", ["<"] = "...#. ..#.. .#... #.... .#... ..#.. ...#.",
  [">"] = ".#... ..#.. ...#. ....# ...#. ..#.. .#...", ["#"] = ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.",
}

local font = {}
for ch, rows in pairs(glyph_rows) do
  local g = {}
  for row in rows:gmatch("%S+") do
    assert(#row == 5, "plot font: bad row for " .. ch)
    g[#g + 1] = row
  end
  assert(#g == 7, "plot font: bad glyph " .. ch)
  font[ch] = g
end

plot.GLYPH_W, plot.GLYPH_H = 6, 8 -- advance and line height at scale 1 (5x7 plus spacing)

-- ---- canvas -------------------------------------------------------------------------------
local Canvas = {}
Canvas.__index = Canvas

-- A white w x h canvas of 8-bit RGB pixels.
function plot.canvas(w, h, background)
  assert(math.type(w) == "integer" and math.type(h) == "integer" and w > 0 and h > 0 and w * h <= 16777216,
    "plot.canvas: width and height must be positive integers")
  local bg = background or {255, 255, 255}
  local px = {}
  for i = 0, w * h - 1 do
    px[3 * i + 1], px[3 * i + 2], px[3 * i + 3] = bg[1], bg[2], bg[3]
  end
  return setmetatable({w = w, h = h, px = px}, Canvas)
end

function Canvas:set(x, y, c)
  if x < 0 or y < 0 or x >= self.w or y >= self.h then return end
  local i = 3 * (y * self.w + x)
  self.px[i + 1], self.px[i + 2], self.px[i + 3] = c[1], c[2], c[3]
end

function Canvas:fill(x0, y0, x1, y1, c)
  for y = math.max(0, y0), math.min(self.h - 1, y1) do
    for x = math.max(0, x0), math.min(self.w - 1, x1) do self:set(x, y, c) end
  end
end

-- A line from (x0, y0) to (x1, y1) (integer pixels, Bresenham), `width` pixels wide.
function Canvas:line(x0, y0, x1, y1, c, width)
  x0, y0, x1, y1 = math.floor(x0 + 0.5), math.floor(y0 + 0.5), math.floor(x1 + 0.5), math.floor(y1 + 0.5)
  width = width or 1
  local lo, hi = -((width - 1) // 2), width // 2
  local dx, dy = math.abs(x1 - x0), -math.abs(y1 - y0)
  local sx, sy = x0 < x1 and 1 or -1, y0 < y1 and 1 or -1
  local err = dx + dy
  while true do
    if width == 1 then self:set(x0, y0, c) else self:fill(x0 + lo, y0 + lo, x0 + hi, y0 + hi, c) end
    if x0 == x1 and y0 == y1 then break end
    local e2 = 2 * err
    if e2 >= dy then err = err + dy; x0 = x0 + sx end
    if e2 <= dx then err = err + dx; y0 = y0 + sy end
  end
end

function plot.text_width(s, scale)
  return (utf8.len(s) or #s) * plot.GLYPH_W * (scale or 1) - (scale or 1)
end

-- Text with its top-left corner at (x, y); `scale` blows each font cell up to scale x scale.
-- Characters outside the font are drawn as "?".
function Canvas:text(x, y, s, c, scale)
  scale = scale or 1
  for _, cp in utf8.codes(s) do
    local g = font[utf8.char(cp)] or font["?"]
    for r = 1, 7 do
      local row = g[r]
      for k = 1, 5 do
        if row:byte(k) == 35 then -- "#"
          self:fill(x + (k - 1) * scale, y + (r - 1) * scale, x + k * scale - 1, y + r * scale - 1, c)
        end
      end
    end
    x = x + plot.GLYPH_W * scale
  end
end

-- The canvas as a (1,3,H,W) f32 image in [0,1].
function Canvas:tensor()
  return T.from(self.px, {self.h, self.w, 3}, "u8"):permute{3, 1, 2}:unsqueeze(1):to("f32") / 255
end

-- ---- charts -------------------------------------------------------------------------------
plot.palette = {
  {31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189},
  {140, 86, 75}, {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
}

local function nice_step(range, n)
  local raw = range / n
  local p = 10 ^ math.floor(math.log(raw, 10))
  for _, m in ipairs({1, 2, 2.5, 5, 10}) do
    if raw <= m * p * (1 + 1e-9) then return m * p end
  end
  return 10 * p
end

local function format_tick(v, step)
  if math.abs(v) < step * 1e-6 then v = 0 end
  local decimals = math.max(0, -math.floor(math.log(step, 10) + 1e-9))
  if step >= 1 and math.floor(step) == step then decimals = 0 end
  if math.abs(v) >= 1e6 or (v ~= 0 and math.abs(v) < 1e-4) then return string.format("%.0e", v) end
  return string.format("%." .. math.min(decimals + ((step * 10 ^ decimals) % 1 ~= 0 and 1 or 0), 6) .. "f", v)
end

-- Tick values and labels from lo to hi: about n "nice" linear ticks, or powers of ten (log).
local function ticks(lo, hi, n, log)
  local out = {}
  if log then
    local a, b = math.floor(lo + 1e-9), math.ceil(hi - 1e-9)
    local every = math.max(1, math.ceil((b - a) / n))
    for k = a, b, every do
      if k >= lo - 1e-9 and k <= hi + 1e-9 then
        out[#out + 1] = {k, string.format("%g", 10 ^ k)}
      end
    end
    return out
  end
  local step = nice_step(hi - lo, n)
  local first = math.ceil(lo / step - 1e-9)
  for k = first, math.floor(hi / step + 1e-9) do
    local v = k * step
    out[#out + 1] = {v, format_tick(v, step)}
  end
  return out
end

local function check_series(series)
  assert(type(series) == "table" and #series >= 1, "plot.lines: series must be a non-empty list")
  for i, s in ipairs(series) do
    assert(type(s.y) == "table" and #s.y >= 1, "plot.lines: series " .. i .. " has no y values")
    if s.x then assert(#s.x == #s.y, "plot.lines: series " .. i .. " has " .. #s.x .. " x and " .. #s.y .. " y values") end
    for j, v in ipairs(s.y) do
      assert(type(v) == "number", "plot.lines: series " .. i .. " y[" .. j .. "] is not a number")
    end
  end
end

-- Draws a line chart; returns the (1,3,H,W) image tensor (and the canvas).
function plot.lines(opts)
  local series = opts.series
  check_series(series)
  local W, H = opts.width or 640, opts.height or 400
  local scale = opts.font_scale or 1
  local gw, gh = plot.GLYPH_W * scale, plot.GLYPH_H * scale
  local log = opts.log_y
  local c = plot.canvas(W, H)
  local black, grid, axis = {0, 0, 0}, {225, 225, 225}, {60, 60, 60}

  -- data ranges (y in log10 units on a log axis; values <= 0 cannot be drawn there)
  local function yv(v)
    if not log then return v end
    if v <= 0 then return nil end
    return math.log(v, 10)
  end
  local xmin, xmax, ymin, ymax = math.huge, -math.huge, math.huge, -math.huge
  for _, s in ipairs(series) do
    for j, v in ipairs(s.y) do
      local x = s.x and s.x[j] or (j - 1)
      local y = yv(v)
      if y and y == y and math.abs(y) ~= math.huge then
        xmin, xmax = math.min(xmin, x), math.max(xmax, x)
        ymin, ymax = math.min(ymin, y), math.max(ymax, y)
      end
    end
  end
  if xmin == math.huge then error("plot.lines: nothing to draw (no finite values)", 2) end
  xmin, xmax = opts.xmin or xmin, opts.xmax or xmax
  if opts.ymin then ymin = yv(opts.ymin) end
  if opts.ymax then ymax = yv(opts.ymax) end
  if xmax <= xmin then xmin, xmax = xmin - 0.5, xmax + 0.5 end
  if ymax <= ymin then ymin, ymax = ymin - 0.5, ymax + 0.5 end
  if log then -- whole decades
    if not opts.ymin then ymin = math.floor(ymin + 1e-9) end
    if not opts.ymax then ymax = math.ceil(ymax - 1e-9) end
    if ymax <= ymin then ymax = ymin + 1 end
  end
  if not log and not opts.ymin and ymin > 0 and ymin < 0.25 * ymax then ymin = 0 end -- start at 0 when close
  local xt = ticks(xmin, xmax, math.max(2, (W - 100) // 90), false)
  local yt = ticks(ymin, ymax, math.max(2, (H - 80) // 50), log)
  -- widen the y range to the outer ticks so the frame ends on round numbers (linear axes)
  if not log and #yt > 0 then
    local step = #yt > 1 and (yt[2][1] - yt[1][1]) or 1
    if yt[1][1] > ymin + 1e-12 then table.insert(yt, 1, {yt[1][1] - step, format_tick(yt[1][1] - step, step)}) end
    if yt[#yt][1] < ymax - 1e-12 then yt[#yt + 1] = {yt[#yt][1] + step, format_tick(yt[#yt][1] + step, step)} end
    ymin, ymax = math.min(ymin, yt[1][1]), math.max(ymax, yt[#yt][1])
  end

  -- layout
  local label_w = 0
  for _, t in ipairs(yt) do label_w = math.max(label_w, plot.text_width(t[2], scale)) end
  local top = 10 + (opts.title and gh + 8 or 0) + (opts.ylabel and gh + 4 or 0)
  local left = 12 + label_w + 6
  local right = W - 16
  local bottom = H - (12 + gh + 6 + (opts.xlabel and gh + 6 or 0))
  assert(right - left > 20 and bottom - top > 20, "plot.lines: the image is too small for its labels")
  local function px(x) return left + (x - xmin) / (xmax - xmin) * (right - left) end
  local function py(y) return bottom - (y - ymin) / (ymax - ymin) * (bottom - top) end

  if opts.title then
    c:text((W - plot.text_width(opts.title, scale)) // 2, 8, opts.title, black, scale)
  end
  if opts.ylabel then c:text(left - label_w // 2 > 4 and 6 or 4, top - gh - 4, opts.ylabel, axis, scale) end
  if opts.xlabel then
    c:text((left + right - plot.text_width(opts.xlabel, scale)) // 2, H - gh - 8, opts.xlabel, axis, scale)
  end

  -- grid, ticks and their labels
  for _, t in ipairs(yt) do
    local y = math.floor(py(t[1]) + 0.5)
    if y >= top - 1 and y <= bottom + 1 then
      c:line(left, y, right, y, grid)
      c:line(left - 4, y, left, y, axis)
      c:text(left - 6 - plot.text_width(t[2], scale), y - (7 * scale) // 2, t[2], axis, scale)
    end
  end
  for _, t in ipairs(xt) do
    local x = math.floor(px(t[1]) + 0.5)
    if x >= left - 1 and x <= right + 1 then
      c:line(x, top, x, bottom, grid)
      c:line(x, bottom, x, bottom + 4, axis)
      c:text(x - plot.text_width(t[2], scale) // 2, bottom + 7, t[2], axis, scale)
    end
  end
  c:line(left, top, left, bottom, axis)
  c:line(left, bottom, right, bottom, axis)

  -- the series
  for i, s in ipairs(series) do
    local col = s.color or plot.palette[(i - 1) % #plot.palette + 1]
    local markers = s.markers
    if markers == nil then markers = #s.y <= 40 end
    local prev
    for j, v in ipairs(s.y) do
      local x = s.x and s.x[j] or (j - 1)
      local y = yv(v)
      if y and y == y and math.abs(y) ~= math.huge then
        local p = {px(x), py(y)}
        if prev then c:line(prev[1], prev[2], p[1], p[2], col, s.width or 2) end
        if markers then
          local cx, cy = math.floor(p[1] + 0.5), math.floor(p[2] + 0.5)
          c:fill(cx - 2, cy - 2, cx + 2, cy + 2, col)
        end
        prev = p
      else
        prev = nil
      end
    end
  end

  -- legend (top right, inside the frame)
  local named = {}
  for i, s in ipairs(series) do
    if s.name then named[#named + 1] = {s.name, s.color or plot.palette[(i - 1) % #plot.palette + 1]} end
  end
  if #named > 0 and opts.legend ~= false then
    local lw = 0
    for _, n in ipairs(named) do lw = math.max(lw, plot.text_width(n[1], scale)) end
    local bw, bh = lw + 16 + 3 * scale + 12, #named * (gh + 4) + 8
    local bx = opts.legend == "left" and left + 8 or right - bw - 6
    local by = top + 6
    c:fill(bx, by, bx + bw, by + bh, {255, 255, 255})
    c:line(bx, by, bx + bw, by, axis); c:line(bx, by + bh, bx + bw, by + bh, axis)
    c:line(bx, by, bx, by + bh, axis); c:line(bx + bw, by, bx + bw, by + bh, axis)
    for k, n in ipairs(named) do
      local y = by + 6 + (k - 1) * (gh + 4)
      c:fill(bx + 6, y + (7 * scale) // 2 - 1, bx + 20, y + (7 * scale) // 2 + 1, n[2])
      c:text(bx + 26, y, n[1], black, scale)
    end
  end
  return c:tensor(), c
end

function plot.show(opts)
  local img = plot.lines(opts)
  require("sd.display")(img)
  return img
end

function plot.save(path, opts)
  local img = plot.lines(opts)
  require("sd.image").save(path, img)
  return img
end

return plot
