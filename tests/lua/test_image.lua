-- PNG output: pixels, the AUTOMATIC1111 parameters text, atomic writes; hashes.
local test = require "test"
local sd = require "sd"
local T = sd.tensor

local function tmp(ext) return os.tmpname() .. ext end

test.case("to_u8 clamps and rounds half to even like numpy", function()
  local img = T.from({-0.5, 0, 0.5 / 255, 1.5 / 255, 2.5 / 255, 1, 2, 0 / 0}, {1, 1, 8})
  local u = sd.core.image.to_u8(img)
  test.eq(u.dtype, "u8")
  local want = {0, 0, 0, 2, 2, 255, 255, 0}
  for i = 1, 8 do test.eq(u:get(1, i, 1), want[i], "pixel " .. i) end
end)

test.case("save writes a PNG that reads back with its parameters", function()
  local path = tmp(".png")
  local g = sd.rng.torch(1)
  local img = g:rand{2, 3, 16, 24}
  local info = {prompt = "a cat, (sitting:1.2)", negative_prompt = "blurry", steps = 20, guidance = 7.5,
    seed = 42, width = 24, height = 16, scheduler = "euler_a", model = "v1-5", model_hash = "6ce0161689"}
  local written = sd.image.save(path, img, info)
  test.eq(#written, 2)
  local back = sd.image.load(path)
  test.eq(back.shape[3], 16); test.eq(back.shape[4], 24)
  local err = (back - img[1]:unsqueeze(1)):abs():max():item()
  test.truthy(err <= 0.5 / 255 + 1e-6, "pixels within half a step: " .. err)
  local text = sd.image.text(path).parameters
  test.eq(text, "a cat, (sitting:1.2)\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, " ..
    "Seed: 42, Size: 24x16, Model hash: 6ce0161689, Model: v1-5")
  local p = sd.image.parse_parameters(text)
  test.eq(p.prompt, info.prompt); test.eq(p.negative_prompt, "blurry"); test.eq(p.Seed, "42"); test.eq(p.Sampler, "Euler a")
  for _, f in ipairs(written) do os.remove(f) end
end)

test.case("non-ASCII prompts go into an iTXt chunk", function()
  local path = tmp(".png")
  sd.image.save(path, T.zeros{3, 8, 8}, {prompt = "café 猫 🐈", steps = 1, seed = 0})
  test.truthy(sd.image.text(path).parameters:find("café 猫 🐈", 1, true), "UTF-8 text survives")
  os.remove(path)
end)

test.case("a failed write leaves the existing file untouched and no temporary behind", function()
  local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. dir)
  local path = dir .. "/keep.png"
  sd.image.save(path, T.zeros{3, 8, 8}, {prompt = "first", seed = 1})
  os.execute("chmod a-w " .. dir)
  local writable = io.open(dir .. "/probe", "w")   -- root can write anyway: then skip the check
  if writable then writable:close(); os.remove(dir .. "/probe") else
    test.raises(function() sd.image.save(path, T.ones{3, 8, 8}, {prompt = "second", seed = 2}) end, "cannot create")
    test.truthy(sd.image.text(path).parameters:find("first", 1, true), "old image kept")
  end
  os.execute("chmod u+w " .. dir)
  local p = io.popen("ls " .. dir); local listing = p:read("a"); p:close()
  test.eq(listing, "keep.png\n", "no temporary files left")
  os.execute("rm -rf " .. dir)
end)

test.case("image errors are clear", function()
  test.raises(function() sd.image.save("/nonexistent-dir/x.png", T.zeros{3, 8, 8}) end, "cannot create")
  test.raises(function() sd.image.save(tmp(".png"), T.zeros{5, 8, 8}) end, "1 to 4 channels")
  test.raises(function() sd.image.save(tmp(".png"), "x") end, "expected an image tensor")
  test.raises(function() sd.image.load("/nonexistent.png") end, "cannot open")
  local junk = tmp(".png"); local f = io.open(junk, "wb"); f:write("not a png"); f:close()
  test.raises(function() sd.image.load(junk) end, "cannot decode")
  test.raises(function() sd.image.text(junk) end, "not a PNG")
  os.remove(junk)
end)

test.case("sha256 and hmac_sha256 match the standard test vectors", function()
  test.eq(sd.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  test.eq(sd.sha256(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
  test.eq(sd.sha256(("a"):rep(1000)), "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
  test.eq(sd.hmac_sha256("key", "The quick brown fox jumps over the lazy dog"),
    "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")
  test.eq(sd.hmac_sha256(("k"):rep(100), "m"), sd.hmac_sha256(sd.sha256(("k"):rep(100)):gsub("..", function(h)
    return string.char(tonumber(h, 16)) end), "m"), "long keys are hashed first")
end)
