-- sd.display: show images (and other values) in a Jupyter notebook running the sdlua kernel.
--
--   sd.display(img)              -- an image tensor (B,C,H,W) or (C,H,W), C = 1..4, values in [0,1]:
--                                -- one image/png output per image of the batch
--   sd.display(value)            -- anything else: its text, as a cell's value shows
--   sd.display.png(bytes)        -- PNG file contents as they are
--   sd.display.data{["text/html"] = "<b>hi</b>"}   -- any MIME bundle
--   sd.display.png_bytes(img)    -- the PNG encoding of one image, as a string
--
-- Outside the kernel (a script, the prompt) there is nowhere to show an image: sd.display prints
-- a one-line summary instead (use sd.image.save to keep it). Loading this module sets sd.display.
local core = require "sd.core"
local T = core.tensor

local display = {}
local publisher -- set by the kernel: function(data, metadata)

function display.set_publisher(fn) publisher = fn end
function display.active() return publisher ~= nil end

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local b64 = {}
for i = 1, 64 do b64[i - 1] = b64chars:sub(i, i) end

function display.base64(s)
  local out, n = {}, #s
  local byte = string.byte
  for i = 1, n - 2, 3 do
    local a, b, c = byte(s, i, i + 2)
    local v = a * 65536 + b * 256 + c
    out[#out + 1] = b64[v >> 18] .. b64[(v >> 12) & 63] .. b64[(v >> 6) & 63] .. b64[v & 63]
  end
  local rest = n % 3
  if rest == 1 then
    local v = byte(s, n) * 65536
    out[#out + 1] = b64[v >> 18] .. b64[(v >> 12) & 63] .. "=="
  elseif rest == 2 then
    local v = byte(s, n - 1) * 65536 + byte(s, n) * 256
    out[#out + 1] = b64[v >> 18] .. b64[(v >> 12) & 63] .. b64[(v >> 6) & 63] .. "="
  end
  return table.concat(out)
end

-- An image tensor as (B,C,H,W), or nil when the value is not one.
local function as_image(v)
  if not T.is_tensor(v) then return nil end
  local s = v.shape
  if #s == 2 then v = v:view{1, 1, s[1], s[2]}
  elseif #s == 3 then v = v:unsqueeze(1) end
  s = v.shape
  if #s ~= 4 or s[2] < 1 or s[2] > 4 or s[3] < 1 or s[4] < 1 then return nil end
  if v.dtype ~= "f32" then v = v:to("f32") end
  return v
end

-- The PNG encoding of a (1,C,H,W) / (C,H,W) image in [0,1] (the first of a batch).
function display.png_bytes(img)
  local im = as_image(img)
  if not im then error("display.png_bytes: expected an image tensor (B,C,H,W), (C,H,W) or (H,W)", 2) end
  local path = os.tmpname()
  local png = path .. ".png"
  local ok, err = pcall(require("sd.image").save, png, im:narrow(1, 1, 1))
  os.remove(path)
  if not ok then os.remove(png); error(err, 2) end
  local f = assert(io.open(png, "rb"))
  local bytes = f:read("a")
  f:close()
  os.remove(png)
  return bytes
end

function display.data(data, metadata)
  if publisher then
    publisher(data, metadata)
  else
    print(data["text/plain"] or ("(" .. next(data) .. " output: shown only in a notebook)"))
  end
end

function display.png(bytes, width, height)
  local meta
  if width and height then meta = {["image/png"] = {width = width, height = height}} end
  display.data({["image/png"] = display.base64(bytes), ["text/plain"] = "<PNG image>"}, meta)
end

local function text_of(v)
  local ok, K = pcall(require, "sd.jupyter.kernel")
  if ok and type(K) == "table" and K.format_values then return K.format_values(v) end
  return tostring(v)
end

-- sd.display(value [, opts]): opts.width sets the shown width (pixels) of images.
function display.show(v, opts)
  local im = as_image(v)
  if not im then
    display.data({["text/plain"] = text_of(v)})
    return
  end
  local s = im.shape
  for b = 1, s[1] do
    local text = string.format("<image %dx%d>", s[4], s[3])
    if not publisher then
      print(text .. " (not in a notebook: nothing shown; sd.image.save writes a PNG)")
    else
      local bytes = display.png_bytes(im:narrow(1, b, 1))
      local w = opts and opts.width or s[4]
      local h = opts and opts.width and math.floor(s[3] * opts.width / s[4] + 0.5) or s[3]
      display.data({["image/png"] = display.base64(bytes), ["text/plain"] = text},
        {["image/png"] = {width = w, height = h}})
    end
  end
end

setmetatable(display, {__call = function(_, ...) return display.show(...) end})

-- sd.display, also when this module is loaded directly
local ok, sd = pcall(require, "sd")
if ok and type(sd) == "table" and rawget(sd, "display") == nil then rawset(sd, "display", display) end

return display
