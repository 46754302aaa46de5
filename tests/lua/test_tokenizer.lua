-- The CLIP tokenizer (lua/sd/tokenizer.lua): the 60 golden cases of tokens.json with both
-- vocabulary forms, text cleaning rules, decoding, A1111 weighting and chunking, robustness on
-- arbitrary bytes, and speed.
local test = require "test"
local Tokenizer = require "sd.tokenizer"

local BOS, EOS = 49406, 49407

local function list_eq(got, want, what)
  if #got ~= #want then
    error(string.format("%s: length %d, expected %d\n  got  %s\n  want %s", what, #got, #want,
      table.concat(got, " "), table.concat(want, " ")), 2)
  end
  for k = 1, #want do
    if got[k] ~= want[k] then
      error(string.format("%s: element %d is %s, expected %s\n  got  %s\n  want %s", what, k,
        tostring(got[k]), tostring(want[k]), table.concat(got, " "), table.concat(want, " ")), 2)
    end
  end
end

local function same(a, b)
  if #a ~= #b then return false end
  for k = 1, #a do if a[k] ~= b[k] then return false end end
  return true
end

local function read_json(path)
  local cjson = require "cjson"
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  return cjson.decode(data)
end

---------------------------------------------------------------------------------------------
-- Golden cases: tokens.json with vocab.json + merges.txt, and with the openai .gz
---------------------------------------------------------------------------------------------

local reference = test.reference()
local loaded = {} -- form -> {eos-padded, zero-padded}

local function check_tokens_json(form, load_opts)
  local cases = read_json(reference .. "/tokens.json")
  local t0 = os.clock()
  local opts1, opts2 = {pad = "eos"}, {pad = "zero"}
  for k, v in pairs(load_opts) do opts1[k] = v; opts2[k] = v end
  local tok1 = Tokenizer.load(opts1)
  local tok2 = Tokenizer.load(opts2)
  local load_time = os.clock() - t0
  loaded[form] = {tok1, tok2}
  local matched, failures = 0, {}
  for i, c in ipairs(cases) do
    local ok, err = pcall(function()
      list_eq(tok1:tokenize(c.prompt), c.ids, "ids")
      list_eq(tok2:tokenize(c.prompt), c.ids, "ids (zero-padded tokenizer)")
      list_eq(tok1:encode(c.prompt), c.input_ids_sd1, "input_ids_sd1")
      list_eq(tok2:encode(c.prompt), c.input_ids_sd2, "input_ids_sd2")
      test.eq(#c.ids > 75, c.truncated, "truncated")
      test.eq(tok1:decode(c.ids), c.decoded, "decoded")
    end)
    if ok then matched = matched + 1
    else failures[#failures + 1] = string.format("case %d (%s): %s", i - 1, c.note, err) end
  end
  io.write(string.format("  tokens.json: %d/%d matched (%s; %.0f ms per load)\n", matched, #cases,
    form, load_time * 1000 / 2))
  if #failures > 0 then error(table.concat(failures, "\n"), 0) end
end

test.golden("tokenizer: tokens.json with vocab.json + merges.txt", "tokens.json", function()
  check_tokens_json("vocab.json + merges.txt", {
    vocab = reference .. "/tokenizer/vocab.json", merges = reference .. "/tokenizer/merges.txt"})
end)

test.golden("tokenizer: a diffusers tokenizer folder picks its padding", "tiny-sd2/tokenizer/vocab.json",
  function()
    local cases = read_json(reference .. "/tokens.json")
    local sd1 = Tokenizer.load{dir = reference .. "/tiny-sd1/tokenizer"}
    local sd2 = Tokenizer.load{dir = reference .. "/tiny-sd2/tokenizer"}
    test.eq(sd1.bos, BOS); test.eq(sd1.eos, EOS)
    test.eq(sd1.pad, EOS, "SD 1.x pads with <|endoftext|>")
    test.eq(sd2.pad, 0, "SD 2.x pads with \"!\" (id 0)")
    test.eq(sd2.max_length, 77)
    for i = 1, #cases, 3 do
      list_eq(sd1:encode(cases[i].prompt), cases[i].input_ids_sd1, "sd1 case " .. i - 1)
      list_eq(sd2:encode(cases[i].prompt), cases[i].input_ids_sd2, "sd2 case " .. i - 1)
    end
    test.eq(Tokenizer.load{dir = reference .. "/tiny-sd2/tokenizer", pad = "eos"}.pad, EOS, "pad option wins")
  end)

---------------------------------------------------------------------------------------------
-- Text cleaning and the split (values from Python: openai's clean-up, regex IGNORECASE split)
---------------------------------------------------------------------------------------------

test.case("tokenizer: invalid UTF-8 decodes as Python's errors='replace'", function()
  local R = "\u{fffd}"
  local cases = {
    {"\xe2\x82", R}, {"\xf0\x9f\x98a", R .. "a"}, {"\xed\xa0\x80", R:rep(3)}, {"\xc0\xaf", R:rep(2)},
    {"\xf4\x90\x80\x80", R:rep(4)}, {"\xe0\x80\x80", R:rep(3)}, {"\xe1\x80\xe1\x80\x80", R .. "\u{1000}"},
    {"\xff\xfe\0", R .. R .. "\0"}}
  for _, c in ipairs(cases) do
    test.eq(Tokenizer.sanitize_utf8(c[1]), c[2], string.format("%q", c[1]))
  end
  test.eq(Tokenizer.unicode_version(), "14.0.0", "Unicode version of the generated tables")
end)

test.case("tokenizer: html.unescape twice (named without ';', numeric replacement rules)", function()
  test.eq(Tokenizer.clean("&ampamp; &#x41;&#128;&notit; &#0;&#65"), "& a\u{20ac}\u{ac}it; \u{fffd}a")
  test.eq(Tokenizer.clean("Tom &amp;amp; Jerry &lt"), "tom & jerry <")
  test.eq(Tokenizer.clean("&#99999999999;&#xD800;&#x1F600;"), "\u{fffd}\u{fffd}\u{1f600}")
  test.eq(Tokenizer.clean("&\u{e9}acute; &eacute\u{e9}"), "&\u{e9}acute; \u{e9}\u{e9}")
  test.eq(Tokenizer.clean("&#13;x&#1;&#x7f;y &# &#x &; && &"), "xy &# &#x &; && &") -- CR is stripped, U+0001 and U+007F vanish
  test.eq(Tokenizer.clean("&NotEqualTilde; &zwj;"), "\u{2242}\u{338} \u{200d}")
  test.eq(Tokenizer.clean("&#" .. string.rep("9", 5000) .. ";"), "\u{fffd}") -- Python raises here
end)

test.case("tokenizer: NFC, whitespace, lower (full mapping, final sigma)", function()
  test.eq(Tokenizer.clean("caf\u{65}\u{301}"), "caf\u{e9}")
  test.eq(Tokenizer.clean("\u{1100}\u{1161}\u{11a8}"), "\u{ac01}")
  test.eq(Tokenizer.clean("a\u{3000}\u{2003}b\x1c\u{85}c\t\r\n d  "), "a b c d")
  test.eq(Tokenizer.clean("\u{3a3}\u{391}\u{3a3} \u{391}\u{3a3}.  \u{3a3}"), "\u{3c3}\u{3b1}\u{3c2} \u{3b1}\u{3c2}. \u{3c3}")
  test.eq(Tokenizer.clean("\u{130}stanbul"), "i\u{307}stanbul")
  test.eq(Tokenizer.clean("\u{fb3b}"), "\u{5db}\u{5bc}") -- composition exclusion
end)

test.case("tokenizer: pre-token split", function()
  local function pieces(s) return table.concat(Tokenizer.pieces(s), "|") end
  test.eq(pieces("don't STOP, it's 1999!!"), "don|'t|stop|,|it|'s|1|9|9|9|!!")
  test.eq(pieces("'\u{17f} it'S"), "'\u{17f}|it|'s") -- IGNORECASE: 's also matches long s
  test.eq(pieces("<|startoftext|>a<|endoftext|>!<|endoftext|>"), "<|startoftext|>|a|<|endoftext|>|!<||endoftext||>")
  test.eq(pieces("\u{130}stanbul"), "i|\u{307}|stanbul")
  test.eq(pieces("\u{345}x\u{3b9}\u{345}"), "x\u{3b9}") -- U+0345 matches no alternative
  test.eq(pieces("\u{bd}\u{b2}\u{2460}\u{216b}"), "\u{bd}|\u{b2}|\u{2460}|\u{217b}")
end)

---------------------------------------------------------------------------------------------
-- A tokenizer for the remaining tests: the reference vocabulary, or a small synthetic one
---------------------------------------------------------------------------------------------

local function tiny_tokenizer(opts)
  -- bytes, bytes + </w>, a few merges, the special tokens (the layout of CLIP's vocab.json)
  local bs = {}
  for b = 33, 126 do bs[#bs + 1] = b end
  for b = 161, 172 do bs[#bs + 1] = b end
  for b = 174, 255 do bs[#bs + 1] = b end
  local seen, n = {}, 0
  for _, b in ipairs(bs) do seen[b] = true end
  local cps = {}
  for k = 1, #bs do cps[k] = bs[k] end
  for b = 0, 255 do if not seen[b] then bs[#bs + 1] = b; cps[#cps + 1] = 256 + n; n = n + 1 end end
  local vocab, id = {}, 0
  for k = 1, 256 do vocab[utf8.char(cps[k])] = id; id = id + 1 end
  for k = 1, 256 do vocab[utf8.char(cps[k]) .. "</w>"] = id; id = id + 1 end
  local merges = {{"c", "a"}, {"ca", "t</w>"}, {"d", "o"}, {"do", "g</w>"}, {"a", "b"}}
  local lines = {"#version: 0.2"}
  for _, m in ipairs(merges) do
    lines[#lines + 1] = m[1] .. " " .. m[2]
    vocab[m[1] .. m[2]] = id; id = id + 1
  end
  vocab["<|startoftext|>"] = id; vocab["<|endoftext|>"] = id + 1
  local cjson = require "cjson"
  local vpath, mpath = os.tmpname(), os.tmpname()
  local f = assert(io.open(vpath, "wb")); f:write(cjson.encode(vocab)); f:close()
  f = assert(io.open(mpath, "wb")); f:write(table.concat(lines, "\n") .. "\n"); f:close()
  local o = {vocab = vpath, merges = mpath}
  for k, v in pairs(opts or {}) do o[k] = v end
  local tok = Tokenizer.load(o)
  os.remove(vpath); os.remove(mpath)
  return tok
end

-- the reference vocabulary when present (else the synthetic one), one tokenizer per option set
local made = {}
local function any_tokenizer(opts)
  local keys = {}
  for k, v in pairs(opts or {}) do keys[#keys + 1] = k .. "=" .. tostring(v) end
  table.sort(keys)
  local key = table.concat(keys, ",")
  if made[key] then return made[key] end
  local tok
  if reference then
    local o = {vocab = reference .. "/tokenizer/vocab.json", merges = reference .. "/tokenizer/merges.txt"}
    for k, v in pairs(opts or {}) do o[k] = v end
    tok = Tokenizer.load(o)
  else
    tok = tiny_tokenizer(opts)
  end
  made[key] = tok
  return tok
end

test.case("tokenizer: a synthetic vocab.json + merges.txt", function()
  local tok = tiny_tokenizer()
  list_eq(tok:tokenize("cat dog ab"), {tok:token_id("cat</w>"), tok:token_id("dog</w>"),
    tok:token_id("a"), tok:token_id("b</w>")}, "ids")
  local ids = tok:encode("cat")
  test.eq(#ids, 77, "length")
  test.eq(ids[1], tok.bos); test.eq(ids[3], tok.eos); test.eq(ids[77], tok.eos)
  test.eq(tok:decode(tok:tokenize("Cat, DOG!")), "cat , dog ! ")
end)

test.case("tokenizer: options are checked", function()
  test.raises(function() Tokenizer.load{} end, "needs")
  test.raises(function() Tokenizer.load{vocab = "/nonexistent/vocab.json", merges = "/nonexistent/m.txt"} end, "cannot open")
  test.raises(function() tiny_tokenizer{pad = "left"} end, "pad")
  test.raises(function() tiny_tokenizer{long_prompt = "wrap"} end, "long_prompt")
  test.raises(function() tiny_tokenizer{weighting = "comfy"} end, "weighting")
  local tok = tiny_tokenizer()
  test.raises(function() tok:encode({}) end, "string")
  test.raises(function() tok:decode({1e9}) end, "not in the vocabulary")
end)

---------------------------------------------------------------------------------------------
-- Decoding
---------------------------------------------------------------------------------------------

test.case("tokenizer: decode round trips", function()
  local tok = any_tokenizer()
  local prompts = {"a photograph of an astronaut riding a horse", "Caf\u{e9} cr\u{e8}me, 1999!",
    "\u{6771}\u{4eac}\u{306e}\u{591c}\u{666f} \u{1f431}\u{1f680}", "it's rock'n'roll", ""}
  for _, p in ipairs(prompts) do
    local ids = tok:tokenize(p)
    local text = tok:decode(ids)
    list_eq(tok:tokenize(text), ids, "tokenize(decode(ids)) for " .. p)
    local padded = tok:encode(p)
    test.eq(tok:decode(padded, {skip_special = true}), text, "skip_special")
  end
  -- ids that end inside a UTF-8 sequence decode with U+FFFD, like errors='replace'
  local ids = tok:tokenize("\u{1f431}")
  if #ids > 1 then test.truthy(tok:decode({ids[1]}):find("\u{fffd}", 1, true), "replacement character") end
end)

---------------------------------------------------------------------------------------------
-- Long prompts: chunks of 75 tokens
---------------------------------------------------------------------------------------------

local function cats(n) return (string.rep("cat ", n)) end

test.case("tokenizer: truncation and chunks", function()
  local tok = any_tokenizer{long_prompt = "chunk"}
  local cat = tok:tokenize("cat")[1]
  test.eq(#tok:tokenize("cat"), 1, "one token per cat")
  -- truncation keeps the first 75
  local ids = tok:encode(cats(100))
  test.eq(#ids, 77); test.eq(ids[1], tok.bos); test.eq(ids[76], cat); test.eq(ids[77], tok.eos)
  -- windows
  for _, case in ipairs{{0, 1}, {1, 1}, {75, 1}, {76, 2}, {150, 2}, {151, 3}} do
    local windows, weights = tok:encode_chunks(cats(case[1]))
    test.eq(#windows, case[2], case[1] .. " tokens: windows")
    local total = 0
    for w = 1, #windows do
      local win = windows[w]
      test.eq(#win, 77); test.eq(#weights[w], 77)
      test.eq(win[1], tok.bos)
      local k = 2
      while win[k] == cat do k = k + 1 end
      total = total + (k - 2)
      test.eq(win[k], tok.eos, "EOS after the tokens")
      for q = k + 1, 77 do test.eq(win[q], tok.pad, "padding") end
      for q = 1, 77 do test.eq(weights[w][q], 1.0) end
    end
    test.eq(total, case[1], "tokens kept")
  end
  -- the zero-padded form pads with 0 after the EOS
  local tz = any_tokenizer{long_prompt = "chunk", pad = "zero"}
  local w = tz:encode_chunks(cats(80))
  test.eq(w[2][7], tz.eos); test.eq(w[2][8], 0); test.eq(w[2][77], 0)
end)

test.case("tokenizer: comma backtrack (A1111 option)", function()
  local tok = any_tokenizer{comma_backtrack = 20}
  local comma = tok:tokenize(",")[1]
  -- 70 cats, a comma, 10 cats: the 4 cats after the comma that would end window 1 move to window 2
  local windows = tok:encode_chunks(cats(70) .. ", " .. cats(10))
  test.eq(#windows, 2)
  test.eq(windows[1][72], comma, "comma ends window 1")
  test.eq(windows[1][73], tok.eos)
  local n = 0
  for k = 2, 77 do if windows[2][k] ~= tok.eos and windows[2][k] ~= tok.pad then n = n + 1 end end
  test.eq(n, 10, "tokens in window 2")
end)

---------------------------------------------------------------------------------------------
-- AUTOMATIC1111 emphasis
---------------------------------------------------------------------------------------------

test.case("tokenizer: emphasis parser (A1111 prompt_parser semantics)", function()
  local function parsed(s)
    local out = {}
    for _, p in ipairs(Tokenizer.parse_emphasis(s)) do out[#out + 1] = string.format("%s=%.6g", p[1], p[2]) end
    return table.concat(out, "|")
  end
  test.eq(parsed("a (b) c"), "a =1|b=1.1| c=1")
  test.eq(parsed("[b]"), "b=0.909091")
  test.eq(parsed("(b:1.3) ((c))"), "b=1.3| =1|c=1.21")
  test.eq(parsed("(b:0.5"), "b:0.5=1.1") -- no ')' so ':0.5' is text; the '(' stays open
  test.eq(parsed("\\(b\\) \\[c\\] \\\\"), "(b) [c] \\=1")
  test.eq(parsed("a) b] (c"), "a) b] =1|c=1.1")
  test.eq(parsed("(a [b] c)"), "a =1.1|b=1| c=1.1")
  test.eq(parsed("a BREAK b"), "a=1|BREAK=-1|b=1")
  test.eq(parsed("aBREAK b"), "aBREAK b=1")
  test.eq(parsed("(a:1.2.3)"), "a=1") -- Python's float() would raise; weight 1
  test.eq(parsed(""), "=1")
end)

test.case("tokenizer: encode_weighted", function()
  local tok = any_tokenizer{weighting = "a1111"}
  local ids, w = tok:encode_weighted("a (cat:1.5) and [dog]")
  test.eq(#ids, 77); test.eq(#w, 77)
  local plain = tok:encode("a cat and dog")
  list_eq(ids, plain, "ids are those of the text without the syntax")
  test.eq(w[1], 1.0, "BOS")
  local cat, dog = tok:tokenize("cat")[1], tok:tokenize("dog")
  for k = 2, 77 do
    if ids[k] == cat then test.eq(w[k], 1.5, "cat weight")
    elseif ids[k] == dog[#dog] then test.near(w[k], 1 / 1.1, 1e-15, "dog weight")
    else test.eq(w[k], 1.0, "weight at " .. k) end
  end
  -- escapes are text
  local ids2, w2 = tok:encode_weighted("\\(cat\\)")
  list_eq(ids2, tok:encode("(cat)"), "escaped brackets")
  for k = 1, 77 do test.eq(w2[k], 1.0) end
  -- weighting = "none" (at load or per call): the syntax is plain text, every weight is 1
  local plain_tok = any_tokenizer{weighting = "none"}
  local ids3, w3 = plain_tok:encode_weighted("(cat:1.5)")
  list_eq(ids3, plain_tok:encode("(cat:1.5)"), "weighting none")
  for k = 1, 77 do test.eq(w3[k], 1.0) end
  local default = any_tokenizer()
  local ids4, w4 = default:encode_weighted("(cat:1.5)", {weighting = "none"})
  list_eq(ids4, ids3, "per-call weighting none")
  test.eq(w4[2], 1.0)
  -- without the option encode_weighted parses, encode_chunks does not (unless asked per call)
  local ids5, w5 = default:encode_weighted("(cat:1.5)")
  test.eq(ids5[2], cat); test.eq(w5[2], 1.5)
  local c1 = default:encode_chunks("(cat:1.5)")
  list_eq(c1[1], ids3, "encode_chunks: plain text by default")
  local c2, cw2 = default:encode_chunks("(cat:1.5)", {weighting = "a1111"})
  test.eq(c2[1][2], cat); test.eq(cw2[1][2], 1.5)
  local c3, cw3 = default:encode_weighted("(cat:1.5) BREAK dog", {long_prompt = "chunk"})
  test.eq(#c3, 2); test.eq(cw3[1][2], 1.5)
  test.raises(function() default:encode_weighted("a", {weighting = "comfy"}) end, "weighting")
  test.raises(function() default:encode_weighted("a", "chunk") end, "options")
  -- BREAK starts a new window (chunk mode)
  local tc = any_tokenizer{weighting = "a1111", long_prompt = "chunk"}
  local windows, weights = tc:encode_weighted("(cat) BREAK dog")
  test.eq(#windows, 2)
  test.eq(windows[1][2], cat); test.near(weights[1][2], 1.1, 1e-15); test.eq(windows[1][3], tc.eos)
  test.eq(windows[2][2], dog[1]); test.eq(weights[2][2], 1.0)
  local w0 = tc:encode_weighted("BREAK cat")
  test.eq(#w0, 2, "BREAK first gives an empty first window"); test.eq(w0[1][2], tc.eos)
end)

---------------------------------------------------------------------------------------------
-- Robustness and speed
---------------------------------------------------------------------------------------------

test.case("tokenizer: 2000 random byte strings (invalid UTF-8, NULs) never raise", function()
  local tok = any_tokenizer{weighting = "a1111"}
  local tc = any_tokenizer{weighting = "a1111", long_prompt = "chunk"}
  math.randomseed(20240601)
  local pool = {"\0", "\xff", "\xc3", "\xe2\x82", "\xf0\x9f\x98", "\xed\xa0\x80", "\xc0\xaf", "&amp",
    "&#", "(", ")", "[", "]", ":1.2)", "\\", "BREAK", " ", "\u{301}", "\u{3a3}", "'s", "<|endoftext|>",
    "\u{1100}\u{1161}", "caf\u{e9}", "\u{1f600}"}
  for i = 1, 2000 do
    local parts = {}
    for k = 1, math.random(0, 40) do
      if math.random() < 0.5 then parts[k] = string.char(math.random(0, 255))
      else parts[k] = pool[math.random(#pool)] end
    end
    local s = table.concat(parts)
    local ok, err = pcall(function()
      local ids = tok:tokenize(s)
      local e = tok:encode(s)
      assert(#e == 77, "encode length")
      local text = tok:decode(ids)
      assert(utf8.len(text), "decode gives valid UTF-8")
      local wi, ww = tok:encode_weighted(s)
      assert(#wi == 77 and #ww == 77, "encode_weighted length")
      local windows = tc:encode_chunks(s)
      assert(#windows >= 1)
    end)
    if not ok then error(string.format("string %d %q: %s", i, s, tostring(err)), 0) end
  end
end)

test.case("tokenizer: BPE with the heap equals the plain loop", function()
  local tok = any_tokenizer()
  math.randomseed(7)
  for _ = 1, 300 do
    local n = math.random(2, 150)
    local t = {}
    for k = 1, n do t[k] = string.char(96 + math.random(math.random() < 0.5 and 3 or 26)) end
    local piece = table.concat(t)
    local word = {}
    for k = 1, n - 1 do word[k] = tok.byte_id[piece:byte(k)] end
    word[n] = tok.byte_end_id[piece:byte(n)]
    local a = Tokenizer._bpe_simple(tok, {table.unpack(word)})
    local b = Tokenizer._bpe_heap(tok, {table.unpack(word)})
    test.truthy(same(a, b), "same merges for " .. piece)
  end
end)

test.case("tokenizer: speed of a 10,000-character prompt", function()
  local tok = any_tokenizer()
  local words = {"a", "photograph", "of", "an", "astronaut", "riding", "horse,", "masterpiece,", "best",
    "quality", "(detailed:1.2)", "caf\u{e9}", "\u{6771}\u{4eac}\u{306e}\u{591c}\u{666f}", "\u{1f600}",
    "Stra\u{df}e", "supercalifragilisticexpialidocious", "1999", "don't", "&amp;", "\u{41f}\u{440}\u{438}\u{432}\u{435}\u{442}"}
  math.randomseed(3)
  local cps, n = {}, 0
  while n < 10000 do
    for _, c in utf8.codes(words[math.random(#words)] .. " ") do
      if n < 10000 then n = n + 1; cps[n] = utf8.char(c) end
    end
  end
  local prompt = table.concat(cps)
  test.eq(utf8.len(prompt), 10000)
  local t0 = os.clock()
  local ids = tok:tokenize(prompt)
  local cold = os.clock() - t0
  t0 = os.clock()
  tok:tokenize(prompt)
  local warm = os.clock() - t0
  -- one 10,000-letter word (no cache can help: the heap BPE)
  local letters = {}
  for k = 1, 10000 do letters[k] = string.char(96 + math.random(26)) end
  t0 = os.clock()
  tok:tokenize(table.concat(letters))
  local word = os.clock() - t0
  io.write(string.format("  10,000 characters -> %d ids: %.1f ms (%.1f ms with a warm cache); " ..
    "one 10,000-letter word: %.1f ms\n", #ids, cold * 1000, warm * 1000, word * 1000))
  test.truthy(cold < 1.0, "under 1 s")
  test.truthy(word < 1.0, "under 1 s")
end)

-- the .gz last: it needs sd.core.gunzip or the gzip program
test.golden("tokenizer: tokens.json with bpe_simple_vocab_16e6.txt.gz", "tokenizer/bpe_simple_vocab_16e6.txt.gz",
  function()
    local ok, core = pcall(require, "sd.core")
    io.write(string.format("  decompressing with %s\n",
      ok and type(core) == "table" and core.gunzip and "sd.core.gunzip" or "the gzip program (no sd.core.gunzip)"))
    check_tokens_json("bpe_simple_vocab_16e6.txt.gz", {bpe = reference .. "/tokenizer/bpe_simple_vocab_16e6.txt.gz"})
    -- both forms give identical tokenizers
    local a, b = loaded["vocab.json + merges.txt"], loaded["bpe_simple_vocab_16e6.txt.gz"]
    if a and b then
      test.eq(a[1]:vocab_size(), b[1]:vocab_size(), "vocabulary size")
      for id = 0, a[1]:vocab_size() - 1 do
        if a[1].decoder[id] ~= b[1].decoder[id] then error("token " .. id .. " differs between the forms") end
      end
    end
  end)
