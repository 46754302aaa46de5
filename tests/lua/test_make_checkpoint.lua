-- sd.make_checkpoint (`sdlua make-checkpoint`): the layouts of sd15 and sd21 are exactly the
-- tensor names, shapes and dtypes of the original releases (../shared/reference/keys/*.json;
-- compared as lists, nothing 2 GB is written), and a tiny checkpoint written for real loads
-- with sd.load, tokenizes with its byte-level vocabulary and samples 20 steps without NaN/inf.
local test = require "test"
local sd = require "sd"
local mc = require "sd.make_checkpoint"
local arch = require "sd.arch"
local loader = require "sd.loader"

local tmpdir = os.tmpname()
os.remove(tmpdir)
assert(os.execute("mkdir -p '" .. tmpdir .. "'"))

local function keys(path)
  local f = assert(io.open(path, "rb"))
  local j = require("cjson").decode(f:read("a"))
  f:close()
  return j
end

local DT = {F32 = "f32", F16 = "f16", I64 = "i64"}

local function shape_str(s)
  local t = {}
  for i, d in ipairs(s) do t[i] = tostring(math.tointeger(d) or d) end
  return "[" .. table.concat(t, ", ") .. "]"
end

for _, a in ipairs{"sd15", "sd21"} do
  test.golden("make-checkpoint: " .. a .. " layout = the release's names, shapes and dtypes", "keys/" .. a .. ".json",
    function(path)
      local ref = keys(path)
      local layout = mc.layout(a)
      local seen, problems = {}, {}
      for _, e in ipairs(layout) do
        local r = ref[e.name]
        if seen[e.name] then problems[#problems + 1] = "twice: " .. e.name end
        seen[e.name] = true
        if not r then
          problems[#problems + 1] = "not in the release: " .. e.name
        else
          if shape_str(r.shape) ~= shape_str(e.shape) then
            problems[#problems + 1] = ("%s: %s, release %s"):format(e.name, shape_str(e.shape), shape_str(r.shape))
          end
          -- releases are f32 (position_ids i64): what --dtype f32 writes
          local dt = e.dtype or "f32"
          if DT[r.dtype] ~= dt then problems[#problems + 1] = ("%s: dtype %s, release %s"):format(e.name, dt, r.dtype) end
        end
      end
      for name in pairs(ref) do
        if not seen[name] then problems[#problems + 1] = "missing: " .. name end
      end
      if #problems > 0 then
        table.sort(problems)
        error(#problems .. " differences, e.g.\n  " .. table.concat(problems, "\n  ", 1, math.min(#problems, 10)))
      end
      local n = 0
      for _ in pairs(ref) do n = n + 1 end
      test.eq(#layout, n, a .. " tensor count")
      -- every weight tensor has an init rule; position_ids count, logit_scale is log(100)
      for _, e in ipairs(layout) do
        local rule = mc.init_rule(e)
        test.truthy(rule, e.name .. " has an init rule")
      end
      -- the one definition: the layout is what the loader maps back onto the architecture
      local header = {}
      for _, e in ipairs(layout) do header[e.name] = {shape = e.shape, dtype = e.dtype or "f16"} end
      local plan = loader.plan(header, {}, a)
      test.eq(plan.info.preset, a, "the loader recognises the written layout as " .. a)
    end)
end

test.case("make-checkpoint: init rules by tensor kind", function()
  local layout = mc.layout("tiny")
  local by = {}
  for _, e in ipairs(layout) do by[e.name] = e end
  local function rule(name) return table.pack(mc.init_rule(assert(by[name], name))) end
  test.eq(rule("model.diffusion_model.out.0.weight")[1], "ones", "norm weight")
  test.eq(rule("model.diffusion_model.out.0.bias")[1], "zeros", "norm bias")
  test.eq(rule("model.diffusion_model.input_blocks.0.0.bias")[1], "zeros", "conv bias")
  local r = rule("model.diffusion_model.input_blocks.0.0.weight")
  test.eq(r[1], "normal", "conv weight")
  test.near(r[2], 1 / math.sqrt(4 * 9), 1e-12, "conv weight std 1/sqrt(fan_in)")
  r = rule("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight")
  test.eq(r[2], 0.02, "embedding std")
  r = rule("model.diffusion_model.input_blocks.1.0.out_layers.3.weight") -- resnet conv2
  test.near(r[2], mc.RESIDUAL_GAIN / math.sqrt(32 * 9), 1e-12, "residual branch output scaled down")
  test.eq(by["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"].shape[1],
    mc.TINY_VOCAB_SIZE, "tiny vocabulary size")
  test.raises(function() mc.preset("sd3") end, "unknown architecture 'sd3'")
end)

test.case("make-checkpoint: the byte-level vocabulary", function()
  local vocab, merges = mc.tiny_vocab()
  local v = require("cjson").decode(vocab)
  local n, max = 0, -1
  for _, id in pairs(v) do n = n + 1; if id > max then max = id end end
  test.eq(n, 514, "entries")
  test.eq(max, 513, "largest id")
  test.eq(v["<|startoftext|>"], 512, "bos")
  test.eq(v["<|endoftext|>"], 513, "eos")
  test.eq(v["a"], 64, "'a' as in CLIP's vocabulary")
  test.eq(v["a</w>"], 320, "'a</w>' as in CLIP's vocabulary")
  test.eq(merges, "#version: 0.2\n", "no merges")
end)

local tiny = tmpdir .. "/tiny.safetensors"
test.case("make-checkpoint: a tiny checkpoint written, loaded, 20 steps without NaN/inf", function()
  local r = mc.write{arch = "tiny", output = tiny}
  test.eq(r.tensors, #mc.layout("tiny"), "tensors written")
  test.truthy(r.vocab and io.open(r.vocab.vocab) and io.open(r.vocab.merges), "vocabulary beside it")
  local h, meta = sd.safetensors.header(tiny)
  test.eq(h["model.diffusion_model.input_blocks.0.0.weight"].dtype, "f16", "f16 by default")
  test.eq(meta["sdlua.random"], "true", "metadata says random")
  test.truthy(mc.is_random(tiny), "is_random")
  -- deterministic: the same seed writes the same bytes
  local again = tmpdir .. "/again/tiny.safetensors"
  os.execute("mkdir -p '" .. tmpdir .. "/again'")
  mc.write{arch = "tiny", output = again}
  local function slurp(p) local f = assert(io.open(p, "rb")); local s = f:read("a"); f:close(); return s end
  test.truthy(slurp(tiny) == slurp(again), "same seed, same file")

  local pipe = sd.load(tiny)
  test.eq(pipe:get_tokenizer():vocab_size(), 514, "the tokenizer reads the tiny vocabulary")
  local ids = pipe:get_tokenizer():encode("a lighthouse at dusk")
  test.eq(ids[1], 512, "bos")
  for _, s in ipairs{"euler_a", "pndm", "dpmpp_2m"} do
    local finite = true
    local img, info = pipe:txt2img{prompt = "a lighthouse at dusk", negative_prompt = "fog", steps = 20, seed = 1,
      scheduler = s, on_step = function(_, _, x)
        local m = x:abs():max():item()
        if m ~= m or m == math.huge or m > 1e4 then finite = false end
      end}
    test.truthy(finite, s .. ": latents finite and bounded at every step")
    local mean = img:mean():item()
    test.truthy(mean == mean and mean > 0.05 and mean < 0.95, s .. ": image mean " .. mean)
    test.truthy(#info.step_seconds >= 20, s .. ": 20 steps (pndm: 21 model calls)")
  end
end)

test.case("make-checkpoint: f32 and tiny_sd2", function()
  local p = tmpdir .. "/sd2/tiny2.safetensors"
  os.execute("mkdir -p '" .. tmpdir .. "/sd2'")
  mc.write{arch = "tiny_sd2", output = p, dtype = "f32", seed = 3}
  local h = sd.safetensors.header(p)
  test.eq(h["model.diffusion_model.input_blocks.0.0.weight"].dtype, "f32", "f32")
  test.truthy(h["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"], "OpenCLIP names")
  local pipe = sd.load(p)
  test.eq(pipe.scheduler_config.prediction_type, "v_prediction", "SD 2.x single file: v-prediction")
  local img = pipe:txt2img{prompt = "x", steps = 20, seed = 2, scheduler = "euler"}
  local m = img:mean():item()
  test.truthy(m == m, "no NaN")
end)

test.case("make-checkpoint: refuses to replace another vocabulary", function()
  local d = tmpdir .. "/other"
  os.execute("mkdir -p '" .. d .. "'")
  local f = assert(io.open(d .. "/vocab.json", "wb")); f:write("{}"); f:close()
  test.raises(function() mc.write{arch = "tiny", output = d .. "/t.safetensors"} end, "folder of its own")
end)

test.case("make-checkpoint: sd.arch stays the one definition", function()
  -- make_checkpoint holds no shapes of its own: its layout is single_file_layout's plus the release extras
  local plain = loader.single_file_layout("sd21")
  local full = mc.layout("sd21")
  test.eq(#full - #plain, 12 + 2, "SD 2.1 release: a 24th text block (12 tensors), text_projection, logit_scale")
  test.truthy(arch.presets.sd21.release and arch.presets.sd15.release, "release data lives in sd.arch")
end)

os.execute("rm -rf '" .. tmpdir .. "'")
io.write(("# %d passed, %d failed, %d skipped\n"):format(test.passed, test.failed, test.skipped))
if test.failed > 0 then os.exit(1) end
