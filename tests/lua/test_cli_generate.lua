-- `sdlua txt2img | img2img | info | make-checkpoint` end to end, as a user runs them (child
-- processes of the binary under test): outputs, stored parameters, --from reproducing the same
-- PNG bytes, one-line errors and exit codes (0 ok, 1 error, 2 usage, 130 interrupted), the
-- progress lines, the no-model fallback, and the REPL's ?obj help.
local test = require "test"

local q, has, slurp = test.quote, test.has, test.read_file
local SDLUA = test.sdlua()
local tmpdir = test.tmpdir()

-- Runs `sdlua <args>` in tmpdir (env: extra "K=V " prefixes); returns exit code, stdout, stderr.
local function run(args, env, input)
  local out, err = tmpdir .. "/.out", tmpdir .. "/.err"
  local cmd = string.format("cd %s && %s %s %s <%s >%s 2>%s", q(tmpdir), env or "", q(SDLUA), args,
    input and q(input) or "/dev/null", q(out), q(err))
  local _, how, code = os.execute(cmd)
  if how == "signal" then code = 128 + code end
  return code, slurp(out) or "", slurp(err) or ""
end

local function one_line(err, what)
  local n = select(2, err:gsub("\n", ""))
  if n > 2 then error(string.format("%s: expected a short error, got %q", what or "stderr", err), 2) end
  test.truthy(not err:find("stack traceback", 1, true), (what or "stderr") .. " has no traceback")
end

-- The PNG's "parameters" text, read through the library.
local function params(path)
  return require("sd.image").text(tmpdir .. "/" .. path).parameters
end

-- reference paths made absolute: the commands run in tmpdir
local function abs(p)
  if p and p:sub(1, 1) ~= "/" then return io.popen("pwd"):read("l") .. "/" .. p end
  return p
end
local ref = abs(test.reference("tiny-sd1/model_index.json"))
local MODEL = ref and ref:gsub("/model_index%.json$", "")

----------------------------------------------------------------------------------------------------
-- without the reference

test.case("cli generate: --help of every subcommand, exit 0", function()
  for _, c in ipairs{"txt2img", "img2img", "info", "make-checkpoint"} do
    local rc, out, err = run(c .. " --help")
    test.eq(rc, 0, c .. " --help exit code (" .. err .. ")")
    has(out, "Usage: sdlua " .. c, c .. " --help")
    has(out, "Exit status: 0 done, 1 error, 2 usage error, 130 interrupted", c .. " --help lists exit codes")
  end
  local rc, out = run("txt2img --help")
  test.eq(rc, 0, "exit")
  for _, flag in ipairs{"--steps", "--cfg", "--seed", "--sampler", "--karras", "--width", "--height", "--batch-count",
      "--clip-skip", "--vae-tiling", "--threads", "--output", "--from", "--quiet", "--negative-prompt"} do
    has(out, flag, "txt2img --help")
  end
  rc, out = run("img2img --help")
  has(out, "--init-img", "img2img --help")
  has(out, "--strength", "img2img --help")
  -- the program's own -h names the subcommands
  rc, out = run("-h")
  test.eq(rc, 0, "-h")
  has(out, "txt2img|img2img|info|make-checkpoint", "-h")
end)

test.case("cli generate: usage errors exit 2 with one line", function()
  local cases = {
    {"txt2img --bogus", "unknown option '--bogus'"},
    {"txt2img -p x -W 500", "width must be a multiple of 8, got 500: try 496 or 504"},
    {"txt2img -p x -H 77", "height must be a multiple of 8, got 77"},
    {"txt2img -p x --sampler warp", "unknown sampler 'warp'; known: ddim, ddpm, pndm, lms, euler, euler_a"},
    {"txt2img -p x --steps many", "--steps must be a number"},
    {"txt2img -p x --karras", "--karras works with the sigma-based samplers euler, heun"},
    {"txt2img -p x --steps 0", "--steps must be at least 1"},
    {"txt2img -m x", "a prompt is needed"},
    {"img2img -p x", "img2img needs an initial image: -i init.png"},
    {"img2img -p x -i y.png --strength 2", "--strength must be between 0 and 1"},
    {"make-checkpoint -o x.safetensors", "add --random"},
    {"make-checkpoint --random", "an output file is needed"},
    {"make-checkpoint --random --arch sd3 -o x.safetensors", "argument for option '--arch' must be one of"},
    {"info", "missing argument 'file'"},
  }
  for _, c in ipairs(cases) do
    local rc, out, err = run(c[1], "SDLUA_MODEL=")
    test.eq(rc, 2, c[1] .. " exit code (" .. err .. ")")
    has(err, c[2], c[1])
    test.eq(out, "", c[1] .. " stdout")
    one_line(err, c[1])
  end
end)

test.case("cli generate: errors exit 1 with one line saying what to do", function()
  local rc, _, err = run("txt2img -m " .. q(tmpdir .. "/none.safetensors") .. " -p x")
  test.eq(rc, 1, "missing model")
  has(err, "model not found: " .. tmpdir .. "/none.safetensors (give -m", "missing model")
  one_line(err, "missing model")
  rc, _, err = run("info " .. q(tmpdir .. "/none.png"))
  test.eq(rc, 1, "info of a missing file")
  has(err, "no such file", "info")
  local f = assert(io.open(tmpdir .. "/notes.txt", "wb")); f:write("hello"); f:close()
  rc, _, err = run("info notes.txt")
  test.eq(rc, 1, "info of a text file")
  one_line(err, "info of a text file")
  rc, _, err = run("make-checkpoint --random --arch tiny -o " .. q(tmpdir .. "/no/such/dir/t.safetensors"))
  test.eq(rc, 1, "make-checkpoint into a missing folder")
  has(err, "does not exist", "make-checkpoint")
end)

----------------------------------------------------------------------------------------------------
-- a make-checkpoint model (no reference needed)

local mk = tmpdir .. "/mk/tiny.safetensors"
test.case("cli generate: make-checkpoint --arch tiny, then txt2img on it", function()
  os.execute("mkdir -p " .. q(tmpdir .. "/mk"))
  local rc, out, err = run("make-checkpoint --arch tiny --random -o " .. q(mk))
  test.eq(rc, 0, "make-checkpoint (" .. err .. ")")
  test.eq(out, mk .. "\n", "prints the path")
  has(err, "726 tensors", "summary")
  test.truthy(slurp(tmpdir .. "/mk/vocab.json") and slurp(tmpdir .. "/mk/merges.txt"), "vocabulary beside it")
  rc, out, err = run("txt2img -m " .. q(mk) .. " -p 'a lighthouse at dusk' --steps 5 -s 3 -o mk.png")
  test.eq(rc, 0, "txt2img on it (" .. err .. ")")
  test.eq(out, "mk.png\n", "stdout")
  has(err, "noise from an untrained model", "labelled as noise")
  has(params("mk.png"), "Steps: 5, Sampler: Euler a, CFG scale: 7.5, Seed: 3, Size: 128x128", "parameters")
  rc, out = run("info " .. q(mk))
  test.eq(rc, 0, "info on the model")
  has(out, "random_weights:     true", "info says random")
  has(out, "preset:             tiny_sd1", "info preset")
end)

test.case("cli generate: no model given: the tiny fallback, with directions", function()
  local home = tmpdir .. "/home"
  os.execute("mkdir -p " .. q(home))
  local env = "SDLUA_MODEL= XDG_CACHE_HOME= XDG_DATA_HOME= HOME=" .. q(home)
  local rc, out, err = run("txt2img -p 'a lighthouse at dusk' --steps 3 -s 1 -o fb.png", env)
  test.eq(rc, 0, "exit code (" .. err .. ")")
  test.eq(out, "fb.png\n", "stdout")
  has(err, "no model given (-m MODEL or SDLUA_MODEL)", "says no model")
  has(err, "v1-5-pruned-emaonly.safetensors", "names the SD 1.5 file")
  has(err, home .. "/.local/share/sdlua", "where the vocabulary goes")
  has(err, "NOISE from an untrained model", "labels the output")
  test.truthy(slurp(home .. "/.cache/sdlua/tiny-random/tiny-random.safetensors"), "the tiny model kept in the cache")
  test.truthy(slurp(tmpdir .. "/fb.png"), "image written")
  -- the second time reuses the cached model and gives the same image
  rc = run("txt2img -p 'a lighthouse at dusk' --steps 3 -s 1 -o fb2.png -q", env)
  test.eq(rc, 0, "second run")
  test.truthy(slurp(tmpdir .. "/fb.png") == slurp(tmpdir .. "/fb2.png"), "same image")
end)

----------------------------------------------------------------------------------------------------
-- the tiny reference model

test.golden("cli generate: txt2img, info and --from give the same bytes", "tiny-sd1/model_index.json", function()
  local rc, out, err = run("txt2img -m " .. q(MODEL) .. " -p 'a red fox, (snow:1.2)' -n 'blurry' --steps 6 --cfg 5 "
    .. "-s 42 --sampler 'DPM++ 2M Karras' -W 64 -H 96 --clip-skip 2 --weighting a1111 -t 1 -o fox.png")
  test.eq(rc, 0, "txt2img (" .. err .. ")")
  test.eq(out, "fox.png\n", "stdout")
  -- stderr is not a terminal here: one plain line per step, then the summary
  has(err, "sampling step 1/6", "progress line")
  has(err, "sampling step 6/6", "last progress line")
  has(err, " s/it  ETA ", "rate and ETA")
  has(err, "time: load ", "timing summary")
  for _, w in ipairs{"text encoding", "sampling", "decoding", "peak memory"} do has(err, w, "summary") end
  local text = params("fox.png")
  test.eq(text, "a red fox, (snow:1.2)\nNegative prompt: blurry\nSteps: 6, Sampler: DPM++ 2M Karras, CFG scale: 5, "
    .. "Seed: 42, Size: 64x96, Model: tiny-sd1, Clip skip: 2, Weighting: a1111", "stored parameters")
  rc, out = run("info fox.png")
  test.eq(rc, 0, "info")
  test.eq(out, text .. "\n", "info prints the stored parameters")
  rc, out = run("info --json fox.png")
  local j = require("cjson").decode(out)
  test.eq(j.Seed, "42", "info --json")
  test.eq(j.negative_prompt, "blurry", "info --json")
  rc, out, err = run("txt2img -m " .. q(MODEL) .. " --from fox.png -t 1 -o again.png -q")
  test.eq(rc, 0, "--from (" .. err .. ")")
  test.eq(err, "", "--quiet prints nothing on stderr")
  test.truthy(slurp(tmpdir .. "/fox.png") == slurp(tmpdir .. "/again.png"), "--from: identical PNG bytes")
  -- options given with --from win
  rc = run("txt2img -m " .. q(MODEL) .. " --from fox.png --seed 43 -o other.png -q")
  test.eq(rc, 0, "--from --seed")
  has(params("other.png"), "Seed: 43", "--seed overrides")
  test.truthy(slurp(tmpdir .. "/fox.png") ~= slurp(tmpdir .. "/other.png"), "another seed, another image")
end)

test.golden("cli generate: batch count, samplers, random seed", "tiny-sd1/model_index.json", function()
  local rc, out, err = run("txt2img -m " .. q(MODEL) .. " -p cat --steps 3 -s 10 -b 2 --sampler euler --karras -o b.png -q")
  test.eq(rc, 0, "batch (" .. err .. ")")
  test.eq(out, "b.png\nb-2.png\n", "two files")
  has(params("b.png"), "Sampler: Euler Karras, CFG scale: 7.5, Seed: 10", "first seed")
  has(params("b-2.png"), "Seed: 11", "second seed")
  rc, out = run("txt2img -m " .. q(MODEL) .. " -p cat --steps 2 --sampler k_euler_a -o r.png -q")
  test.eq(rc, 0, "random seed")
  local seed = params("r.png"):match("Seed: (%d+)")
  test.truthy(seed, "a random seed is stored")
  rc = run("txt2img -m " .. q(MODEL) .. " --from r.png -o r2.png -q")
  test.truthy(slurp(tmpdir .. "/r.png") == slurp(tmpdir .. "/r2.png"), "a random seed reproduces too")
end)

test.golden("cli generate: img2img and --from", "tiny-sd1/model_index.json", function()
  run("txt2img -m " .. q(MODEL) .. " -p cat --steps 2 -s 1 -o init.png -q")
  local rc, out, err = run("img2img -m " .. q(MODEL) .. " -i init.png -p 'a red boat' --strength 0.5 --steps 10 -s 7 "
    .. "--sampler pndm -o i.png")
  test.eq(rc, 0, "img2img (" .. err .. ")")
  test.eq(out, "i.png\n", "stdout")
  has(err, "sampling step 6/6", "the bar counts the steps strength leaves (pndm: 5 + 1)")
  local text = params("i.png")
  has(text, "Steps: 10, Sampler: PLMS, CFG scale: 7.5, Seed: 7, Size: 128x128, Model: tiny-sd1, Denoising strength: 0.5",
    "parameters")
  rc, out, err = run("img2img -m " .. q(MODEL) .. " -i init.png --from i.png -o i2.png -q")
  test.eq(rc, 0, "img2img --from (" .. err .. ")")
  test.truthy(slurp(tmpdir .. "/i.png") == slurp(tmpdir .. "/i2.png"), "identical bytes")
  rc, out, err = run("txt2img -m " .. q(MODEL) .. " --from i.png -o x.png")
  test.eq(rc, 2, "txt2img --from an img2img image")
  has(err, "use sdlua img2img -i INIT --from i.png", "says what to do")
  rc, out, err = run("img2img -m " .. q(MODEL) .. " -i missing.png -p x")
  test.eq(rc, 1, "missing init image")
  has(err, "initial image not found: missing.png", "stderr")
end)

test.golden("cli generate: missing vocabulary is one line", "tiny-sd1.safetensors", function(single)
  single = abs(single)
  local empty = tmpdir .. "/empty"
  os.execute("mkdir -p " .. q(empty))
  os.execute("ln -sf " .. q(single) .. " " .. q(empty .. "/m.safetensors"))
  local rc, out, err = run("txt2img -m " .. q(empty .. "/m.safetensors") .. " -p x",
    "SDLUA_VOCAB= XDG_DATA_HOME= HOME=" .. q(empty))
  test.eq(rc, 1, "exit code")
  has(err, "no CLIP tokenizer vocabulary found", "stderr")
  has(err, "vocab.json and merges.txt", "names the files")
  one_line(err, "missing vocabulary")
  test.eq(out, "", "nothing written")
  -- --vocab points at one
  rc, out, err = run("txt2img -m " .. q(empty .. "/m.safetensors") .. " --vocab " .. q(abs(test.reference("tokenizer")))
    .. " -p x --steps 2 -o v.png -q", "SDLUA_VOCAB= XDG_DATA_HOME= HOME=" .. q(empty))
  test.eq(rc, 0, "--vocab (" .. err .. ")")
end)

if not os.execute("command -v timeout >/dev/null 2>&1") then
  test.skip("cli generate: Ctrl-C exits 130 and writes nothing", "needs timeout")
else
  test.case("cli generate: Ctrl-C exits 130 and writes nothing", function()
    local rc, out, err = run("txt2img -m " .. q(mk) .. " -p x --steps 1000 -o int.png -q", "timeout --preserve-status -s INT 2")
    test.eq(rc, 130, "exit code (" .. err .. ")")
    has(err, "interrupted", "stderr")
    one_line(err:gsub("^\n", ""), "interrupt message")
    test.eq(out, "", "stdout")
    local ls = io.popen("ls -a " .. q(tmpdir)):read("a")
    test.truthy(not ls:find("int.png", 1, true), "no file, not even a temporary one: " .. ls)
  end)
end

test.case("cli generate: the REPL's ?obj and help()", function()
  local input = tmpdir .. "/repl.txt"
  local f = assert(io.open(input, "wb"))
  f:write("?\n?sd.load\n?pipe:txt2img\n?sd.tensor.zeros\nhelp(sd.time)\n?samplers\n?no_such_thing\nprint('after')\n")
  f:close()
  local rc, out, err = run("", nil, input)
  test.eq(rc, 0, "exit code (" .. err .. ")")
  has(out, "help(obj) or ?obj", "? lists the topics")
  has(out, "a checkpoint (single file or diffusers folder) -> pipeline", "?sd.load")
  has(out, "txt2img{prompt, negative_prompt, steps=20", "?pipe:txt2img")
  has(out, "T.zeros(shape [, dtype])", "C function doc")
  has(out, "sd.time(f, ...) -> seconds", "help(sd.time)")
  has(out, "docs/samplers.md", "?samplers")
  has(out, "no help for \"no_such_thing\"", "unknown")
  has(out, "after", "the session goes on")
  test.eq(err, "", "stderr")
end)

os.execute("rm -rf " .. q(tmpdir))
io.write(("# %d passed, %d failed, %d skipped\n"):format(test.passed, test.failed, test.skipped))
if test.failed > 0 then os.exit(1) end
