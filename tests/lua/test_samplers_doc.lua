-- docs/samplers.md: its code, exactly as printed, runs against the tiny reference model, and the
-- Euler written from scratch there gives sd's own euler scheduler's image (within 1e-4).
local test = require "test"
local sd = require "sd"

local f = assert(io.open("docs/samplers.md", "rb"))
local text = f:read("a")
f:close()

local blocks = {}
for block in text:gmatch("```lua\n(.-)```") do blocks[#blocks + 1] = block end

test.case("samplers doc: has the load, Euler and variation blocks", function()
  test.eq(#blocks, 3, "lua blocks")
  test.truthy(blocks[2]:find("function my_euler(ctx)", 1, true), "block 2 defines my_euler")
  test.truthy(blocks[2]:find("unet:forward", 1, true) and blocks[2]:find("sigmas", 1, true),
    "the Euler works over pipe.unet:forward and the scheduler's sigmas")
  test.truthy(blocks[2]:find("sampler = my_euler", 1, true), "and is plugged into txt2img")
  -- "about 15 lines": the function itself
  local fn = blocks[2]:match("(function my_euler%(ctx%).-\nend)\n")
  test.truthy(fn, "the function's text")
  local n = select(2, fn:gsub("\n", "")) + 1
  test.truthy(n <= 16, "my_euler is " .. n .. " lines")
end)

-- The blocks share one environment, as the REPL's globals would.
local env = setmetatable({sd = sd, REFERENCE = test.reference()}, {__index = _G})

test.golden("samplers doc: the code runs as printed", "tiny-sd1/model_index.json", function(model_index)
  env.REFERENCE = model_index:gsub("/tiny%-sd1/model_index%.json$", "")
  for i, block in ipairs(blocks) do
    local chunk = assert(load(block, "=docs/samplers.md block " .. i, "t", env))
    chunk()
  end
  test.truthy(sd.tensor.is_tensor(env.img) and sd.tensor.is_tensor(env.img2), "images made")
end)

test.golden("samplers doc: my_euler equals sd's euler within 1e-4", "tiny-sd1/model_index.json", function()
  if not env.my_euler then error("the doc code did not run") end
  local pipe = env.pipe
  local args = {prompt = env.prompt, steps = 20, seed = 42, scheduler = "euler"}
  local want, winfo = pipe:txt2img(args)
  args.sampler = env.my_euler
  local steps = 0
  args.on_step = function() steps = steps + 1 end
  local got, info = pipe:txt2img(args)
  test.eq(steps, 20, "on_step calls through ctx.step")
  test.eq(#info.step_seconds, 20, "step times recorded")
  test.within((got - want):abs():max():item(), 1e-4, "image: my_euler vs euler")
  local lat = (info.latents - winfo.latents):abs():max():item()
  local scale = winfo.latents:abs():max():item()
  test.within(lat / scale, 1e-4, "final latents (relative)")
  -- Karras sigmas reach the same loop through ctx.sigmas
  args.scheduler_options = {use_karras_sigmas = true}
  args.on_step = nil
  local k_got = pipe:txt2img(args)
  args.sampler = nil
  local k_want = pipe:txt2img(args)
  test.within((k_got - k_want):abs():max():item(), 1e-4, "image with Karras sigmas")
  -- early stop through ctx.step
  args.sampler, args.scheduler_options = env.my_euler, nil
  args.on_step = function(i) return i < 3 end
  local _, sinfo = pipe:txt2img(args)
  test.eq(#sinfo.step_seconds, 3, "stopped after step 3")
end)

test.golden("samplers doc: a custom sampler must return latents", "tiny-sd1/model_index.json", function()
  if not env.pipe then error("the doc code did not run") end
  test.raises(function()
    env.pipe:txt2img{prompt = "x", steps = 2, seed = 1, sampler = function() return 42 end}
  end, "must return the final latents")
end)

io.write(("# %d passed, %d failed, %d skipped\n"):format(test.passed, test.failed, test.skipped))
if test.failed > 0 then os.exit(1) end
