-- A short tour of the sdlua runtime: tensors, kernels, the torch-compatible random generator,
-- safetensors and PNG output. Run it with: bin/sdlua examples/tour.lua [output.png]
local sd = require "sd"
local T = sd.tensor

print("sdlua " .. sd.version .. " on " .. sd.cpu() .. ", " .. sd.threads() .. " threads")

-- Tensors: shapes, views that share storage, arithmetic with broadcasting.
local x = T.arange(0, 12):view{3, 4}
print(x)
print("transposed view, contiguous:", x:transpose(1, 2):is_contiguous())
print("row sums:", x:sum(2))
print("broadcast add:", x + T.from({100, 200, 300, 400}, {4}))

-- The same noise as torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(42)).
local g = sd.rng.torch(42)
local noise = g:randn{1, 4, 8, 8}
print(string.format("randn: mean %.4f, std %.4f", noise:mean():item(), noise:var():sqrt():item()))

-- Kernels: a 3x3 convolution, group norm, SiLU and attention, as in a U-Net block.
local w = g:randn{8, 4, 3, 3} * 0.1
local h = noise:conv2d(w, nil, {padding = 1}):group_norm(2, nil, nil, 1e-5):silu()
local q = h:view{1, 8, 64}:transpose(2, 3):unsqueeze(2)           -- (B, heads, N, d)
local a = T.attention(q, q, q)
print("conv -> group norm -> silu -> attention:", a.shape[1], a.shape[2], a.shape[3], a.shape[4])

-- safetensors: save and load back (atomically written, mmap'd when read).
local path = os.tmpname() .. ".safetensors"
sd.safetensors.save(path, {noise = noise, w = w:to("f16")}, {note = "tour"})
local back, meta = sd.safetensors.load(path)
print("safetensors round trip:", back.noise:equal(noise), back.w.dtype, meta.note)
os.remove(path)

-- An image: a smooth gradient with the noise on top, written as PNG.
local out = arg and arg[1] or "tour.png"
local ys = T.linspace(0, 1, 64):view{1, 64, 1}:expand{3, 64, 64}
local xs = T.linspace(0, 1, 64):view{1, 1, 64}:expand{3, 64, 64}
local img = ((ys + xs) / 2 + g:randn{3, 64, 64} * 0.05):clamp(0, 1)
sd.image.save(out, img:unsqueeze(1), {prompt = "a tour of sdlua", steps = 0, seed = 42, width = 64, height = 64})
print("wrote " .. out)
