-- End-to-end goldens: txt2img and img2img on the tiny reference models, loaded from the diffusers
-- folder and from the single file, must reproduce diffusers' embeddings, every step's latents,
-- the final image and its 8-bit pixels (reference README section 6).
local test = require "test"
local sd = require "sd"
local T = sd.tensor
local goldens = require "pipeline_goldens"
local maxdiff = goldens.maxdiff

local pipes = {}
local function pipeline(root, model, layout)
  local key = model .. layout
  if not pipes[key] then
    if layout == "folder" then
      pipes[key] = sd.load(root .. "/" .. model)
    else
      pipes[key] = sd.load(root .. "/" .. model .. ".safetensors", {vocab = root .. "/tokenizer"})
    end
  end
  return pipes[key]
end

for _, model in ipairs{"tiny-sd1", "tiny-sd2"} do
  for _, layout in ipairs{"folder", "single"} do
    for _, case in ipairs(goldens.cases) do
      local rel = "goldens/" .. model .. "/pipeline/" .. case .. ".safetensors"
      test.golden(string.format("pipeline %s (%s) %s", model, layout, case), rel, function(path)
        local root = path:match("^(.*)/goldens/")
        local g, config, tol = goldens.load(path)
        local pipe = pipeline(root, model, layout)
        local step_err = 0
        local img, info = goldens.run(pipe, g, config, {on_step = function(i, _, latents)
          local want = g[string.format("step%02d.latents", i - 1)]
          if want then step_err = math.max(step_err, maxdiff(latents, want)) end
        end})
        local emb = pipe:encode_prompt(config.prompt)
        test.within(maxdiff(emb, g.prompt_embeds_cond), tol, "prompt_embeds_cond")
        if g.prompt_embeds_uncond and config.guidance > 1 then
          test.within(maxdiff(pipe:encode_prompt(config.negative), g.prompt_embeds_uncond), tol, "prompt_embeds_uncond")
        end
        test.within(step_err, tol, "latents after each step")
        test.within(maxdiff(info.latents, g.latents_final), tol, "latents_final")
        test.within(maxdiff(img, g.image), tol, "image")
        local off, worst = goldens.u8_diff(img, g)
        io.write(string.format("  %-48s %d of %d values differ (max %d)\n", "image_u8_hwc", off, g.image_u8_hwc:numel(), worst))
        test.truthy(worst <= 1 and off <= 16, "uint8 image within 1 LSB at a few pixels")
      end)
    end
  end
end

test.case("txt2img rejects bad arguments with clear messages", function()
  local root = test.reference()
  if not root then return end
  local pipe = pipeline(root, "tiny-sd1", "folder")
  test.raises(function() pipe:txt2img{prompt = "x", width = 100} end, "multiples of 8")
  test.raises(function() pipe:txt2img{prompt = "x", steps = 0} end, "steps must be at least 1")
  test.raises(function() pipe:txt2img{prompt = "x", scheduler = "nope"} end, "nope")
  test.raises(function() pipe:txt2img{prompt = 3} end, "prompt must be a string")
  test.raises(function() pipe:txt2img{promt = "x"} end, "unknown argument 'promt'")
  test.raises(function() pipe:img2img{prompt = "x"} end, "needs image=")
  test.raises(function() pipe:img2img{prompt = "x", image = T.zeros{1, 3, 16, 16}, strength = 2} end, "strength")
end)
