-- The NN ops from Lua (runtime/lnn.c): x:matmul(y), x:linear(w [, b]), x:conv2d(w [, b] [, opts]),
-- T.attention(q, k, v [, opts]) against plain Lua references, and every error path.
local test = require "test"
local ok_sd, sd = pcall(require, "sd")
local T = ok_sd and sd.tensor or require("sd.core").tensor

-- deterministic values in [-1, 1)
local seed = 12345
local function rnd()
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed / 1073741824 - 1
end
local function randt(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  local v = {}
  for i = 1, n do v[i] = rnd() end
  return T.from(v, shape), v
end

-- flat Lua list of a tensor's values (row-major)
local function flat(x)
  local out = {}
  local function walk(t)
    if type(t) == "table" then for _, e in ipairs(t) do walk(e) end else out[#out + 1] = t end
  end
  walk(x:totable())
  return out
end

local function shape_eq(x, want, what)
  test.eq(#x.shape, #want, (what or "shape") .. " ndim")
  for i = 1, #want do test.eq(x.shape[i], want[i], (what or "shape") .. "[" .. i .. "]") end
end

local function close(got, want, tol, what)
  test.eq(#got, #want, (what or "values") .. " count")
  for i = 1, #want do test.near(got[i], want[i], tol, (what or "value") .. " " .. i) end
end

-- naive matmul of flat row-major (n,k) x (k,m)
local function mm(a, b, n, k, m, aoff, boff)
  aoff, boff = aoff or 0, boff or 0
  local c = {}
  for i = 0, n - 1 do
    for j = 0, m - 1 do
      local s = 0
      for p = 0, k - 1 do s = s + a[aoff + i * k + p + 1] * b[boff + p * m + j + 1] end
      c[#c + 1] = s
    end
  end
  return c
end

-- ---------------------------------------------------------------- matmul

test.case("matmul: 2-D against a naive product", function()
  local a, av = randt{5, 7}
  local b, bv = randt{7, 3}
  local c = a:matmul(b)
  shape_eq(c, {5, 3})
  test.eq(c.dtype, "f32")
  close(flat(c), mm(av, bv, 5, 7, 3), 1e-5)
  local x = T.from({1, 2, 3, 4, 5, 6}, {2, 3})
  local y = T.from({1, 0, 0, 1, 1, 1}, {3, 2})
  close(flat(x:matmul(y)), {4, 5, 10, 11}, 0)
  close(flat(T.matmul(x, y)), {4, 5, 10, 11}, 0, "T.matmul")
end)

test.case("matmul: transposed and strided views give the same result", function()
  local a, av = randt{6, 4}
  local b, bv = randt{4, 5}
  local want = mm(av, bv, 6, 4, 5)
  -- a^T stored: (4, 6) transposed back to (6, 4)
  local at = a:transpose(1, 2):contiguous():transpose(1, 2)
  test.truthy(not at:is_contiguous(), "view is not contiguous")
  local bt = b:transpose(1, 2):contiguous():transpose(1, 2)
  close(flat(at:matmul(b)), want, 1e-5, "A^T")
  close(flat(a:matmul(bt)), want, 1e-5, "B^T")
  close(flat(at:matmul(bt)), want, 1e-5, "both")
  -- a narrow view: rows with a stride larger than their length
  local wide = randt{6, 9}
  local na = wide:narrow(2, 3, 4)
  local nav = flat(na:contiguous())
  close(flat(na:matmul(b)), mm(nav, bv, 6, 4, 5), 1e-5, "narrowed")
  -- every other column (no unit stride anywhere): copied
  local ev = randt{4, 10}:view{4, 5, 2}:select(3, 1)
  local evv = flat(ev:contiguous())
  close(flat(a:matmul(ev)), mm(av, evv, 6, 4, 5), 1e-5, "stride-2 columns")
end)

test.case("matmul: batch dims broadcast", function()
  local a, av = randt{3, 2, 4}
  local b, bv = randt{4, 5}
  local c = a:matmul(b)
  shape_eq(c, {3, 2, 5})
  close(flat(c), mm(av, bv, 6, 4, 5), 1e-5, "(3,2,4) x (4,5)")
  -- (2,4) x (3,4,5)
  local x, xv = randt{2, 4}
  local y, yv = randt{3, 4, 5}
  local z = x:matmul(y)
  shape_eq(z, {3, 2, 5})
  local want = {}
  for i = 0, 2 do
    for _, v in ipairs(mm(xv, yv, 2, 4, 5, 0, i * 20)) do want[#want + 1] = v end
  end
  close(flat(z), want, 1e-5, "(2,4) x (3,4,5)")
  -- (2,1,3,4) x (1,2,4,2) -> (2,2,3,2)
  local p, pv = randt{2, 1, 3, 4}
  local q, qv = randt{1, 2, 4, 2}
  local r = p:matmul(q)
  shape_eq(r, {2, 2, 3, 2})
  want = {}
  for i = 0, 1 do
    for j = 0, 1 do
      for _, v in ipairs(mm(pv, qv, 3, 4, 2, i * 12, j * 8)) do want[#want + 1] = v end
    end
  end
  close(flat(r), want, 1e-5, "4-D broadcast")
  -- batched with a permuted operand (non-collapsible batch)
  local s = randt{4, 3, 2}:permute{2, 1, 3}  -- (3, 4, 2), batch stride 2
  local sv = flat(s:contiguous())
  local u, uv = randt{3, 2, 5}
  want = {}
  for i = 0, 2 do
    for _, v in ipairs(mm(sv, uv, 4, 2, 5, i * 8, i * 10)) do want[#want + 1] = v end
  end
  close(flat(s:matmul(u)), want, 1e-5, "permuted batch")
end)

test.case("matmul: 1-D operands as torch", function()
  local v = T.from({1, 2, 3}, {3})
  local d = v:matmul(v)
  test.eq(d.ndim, 0, "vector . vector is 0-d")
  test.eq(d:item(), 14)
  local m = T.from({1, 2, 3, 4, 5, 6}, {3, 2})
  local r = v:matmul(m)
  shape_eq(r, {2})
  close(flat(r), {22, 28}, 0)
  local m2 = T.from({1, 2, 3, 4, 5, 6}, {2, 3})
  local s = m2:matmul(v)
  shape_eq(s, {2})
  close(flat(s), {14, 32}, 0)
  local b = T.from({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {2, 2, 3})
  shape_eq(b:matmul(v), {2, 2})
  close(flat(b:matmul(v)), {14, 32, 50, 68}, 0)
end)

test.case("matmul: f16/bf16 operands, empty sizes", function()
  local a, av = randt{4, 6}
  local b = randt{6, 3}
  for _, dt in ipairs{"f16", "bf16"} do
    local bh = b:to(dt)
    local want = mm(av, flat(bh:to("f32")), 4, 6, 3)
    local c = a:matmul(bh)
    test.eq(c.dtype, "f32")
    close(flat(c), want, 1e-5, dt .. " weight")
    close(flat(a:to(dt):matmul(b:to(dt))), mm(flat(a:to(dt):to("f32")), flat(b:to(dt):to("f32")), 4, 6, 3), 1e-5, dt .. " both")
    local bb = randt{2, 6, 3}:to(dt)
    shape_eq(a:matmul(bb), {2, 4, 3}, dt .. " batched")
  end
  shape_eq(T.zeros{0, 3}:matmul(T.zeros{3, 2}), {0, 2})
  local z = T.ones{2, 0}:matmul(T.ones{0, 3})
  shape_eq(z, {2, 3})
  close(flat(z), {0, 0, 0, 0, 0, 0}, 0, "k = 0 gives zeros")
end)

test.case("matmul: errors name the op and the shapes", function()
  test.raises(function() return T.ones{2, 3}:matmul(T.ones{4, 5}) end, "matmul: shapes (2, 3) and (4, 5) cannot be multiplied (3 != 4)")
  test.raises(function() return T.ones{2, 2, 3}:matmul(T.ones{3, 3, 2}) end, "do not broadcast")
  test.raises(function() return T.ones({2, 3}, "i32"):matmul(T.ones{3, 2}) end, "matmul: float tensors expected")
  test.raises(function() return T.from({1}, {}):matmul(T.ones{1}) end, "at least 1 dimension")
  test.raises(function() return T.ones{2, 3}:matmul(5) end, "tensor expected")
  test.raises(function() return T.ones{3}:matmul(T.ones{4}) end, "(3,) and (4,)")
end)

-- ---------------------------------------------------------------- linear

test.case("linear: (..., in) x (out, in)^T + b, f32/f16/bf16 weights", function()
  local x, xv = randt{2, 3, 5}
  local w, wv = randt{4, 5}
  local b, bv = randt{4}
  local function want_for(wflat, withb)
    local out = {}
    for r = 0, 5 do
      for o = 0, 3 do
        local s = withb and bv[o + 1] or 0
        for i = 0, 4 do s = s + xv[r * 5 + i + 1] * wflat[o * 5 + i + 1] end
        out[#out + 1] = s
      end
    end
    return out
  end
  local y = x:linear(w, b)
  shape_eq(y, {2, 3, 4})
  close(flat(y), want_for(wv, true), 1e-5, "f32")
  close(flat(x:linear(w)), want_for(wv, false), 1e-5, "no bias")
  close(flat(x:linear(w, nil)), want_for(wv, false), 1e-5, "nil bias")
  for _, dt in ipairs{"f16", "bf16"} do
    local wh = w:to(dt)
    close(flat(x:linear(wh, b)), want_for(flat(wh:to("f32")), true), 1e-5, dt)
  end
  -- a transposed (non-contiguous) input and weight
  local xt = x:transpose(1, 2)               -- (3, 2, 5)
  local yt = xt:linear(w, b)
  shape_eq(yt, {3, 2, 4})
  close(flat(yt:transpose(1, 2):contiguous()), want_for(wv, true), 1e-5, "transposed input")
  local wt = w:transpose(1, 2):contiguous():transpose(1, 2)
  close(flat(x:linear(wt, b)), want_for(wv, true), 1e-5, "transposed weight")
  -- 1-D input
  local v = T.from({1, 2, 3, 4, 5}, {5})
  local yv = v:linear(w)
  shape_eq(yv, {4})
  local s = 0
  for i = 1, 5 do s = s + i * wv[i] end
  test.near(flat(yv)[1], s, 1e-5, "1-D")
  shape_eq(T.linear(x, w), {2, 3, 4}, "T.linear")
end)

test.case("linear: wide f16/bf16 weights (tiles shared out over threads)", function()
  local x, xv = randt{3, 40}
  local w = randt{300, 40}
  for _, dt in ipairs{"f16", "bf16"} do
    local wh = w:to(dt)
    local wv = flat(wh:to("f32"))
    local want = {}
    for r = 0, 2 do
      for o = 0, 299 do
        local s = 0
        for i = 0, 39 do s = s + xv[r * 40 + i + 1] * wv[o * 40 + i + 1] end
        want[#want + 1] = s
      end
    end
    close(flat(x:linear(wh)), want, 1e-4, dt)
  end
end)

test.case("linear: errors", function()
  test.raises(function() return T.ones{2, 77, 768}:linear(T.ones{320, 1024}) end,
    "linear: input (2, 77, 768) has 768 features but weight (320, 1024) expects 1024")
  test.raises(function() return T.ones{2, 3}:linear(T.ones{4, 3, 1}) end, "weight must be 2-D")
  test.raises(function() return T.ones{2, 3}:linear(T.ones{4, 3}, T.ones{5}) end, "linear: bias (5,) does not match weight (4, 3) (expected (4,))")
  test.raises(function() return T.ones{2, 3}:linear(T.ones({4, 3}, "i64")) end, "linear: weight must be a float tensor")
  test.raises(function() return T.ones({2, 3}, "u8"):linear(T.ones{4, 3}) end, "linear: input must be a float tensor")
  test.raises(function() return T.ones{2, 3}:linear({}) end, "tensor expected")
  test.raises(function() return T.from({1}, {}):linear(T.ones{1, 1}) end, "at least 1 dimension")
end)

-- ---------------------------------------------------------------- conv2d

local function ref_conv(xv, n, c, h, w, wv, o, kh, kw, bv, sh, sw, ph, pw, dh, dw, g)
  local oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
  local ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
  local cg, og = c // g, o // g
  local out = {}
  for b = 0, n - 1 do
    for oc = 0, o - 1 do
      local gi = oc // og
      for oy = 0, oh - 1 do
        for ox = 0, ow - 1 do
          local s = bv and bv[oc + 1] or 0
          for ci = 0, cg - 1 do
            for ki = 0, kh - 1 do
              for kj = 0, kw - 1 do
                local iy, ix = oy * sh - ph + ki * dh, ox * sw - pw + kj * dw
                if iy >= 0 and iy < h and ix >= 0 and ix < w then
                  s = s + xv[((b * c + gi * cg + ci) * h + iy) * w + ix + 1] * wv[((oc * cg + ci) * kh + ki) * kw + kj + 1]
                end
              end
            end
          end
          out[#out + 1] = s
        end
      end
    end
  end
  return out, oh, ow
end

test.case("conv2d: against a naive convolution, all options", function()
  local x, xv = randt{2, 4, 7, 6}
  local w, wv = randt{6, 2, 3, 3}
  local b, bv = randt{6}
  local y = x:conv2d(w, b, {stride = 2, padding = 1, dilation = 1, groups = 2})
  local want, oh, ow = ref_conv(xv, 2, 4, 7, 6, wv, 6, 3, 3, bv, 2, 2, 1, 1, 1, 1, 2)
  shape_eq(y, {2, 6, oh, ow})
  close(flat(y), want, 1e-5, "groups 2 stride 2")
  -- {h, w} pairs, dilation, no bias, options as the third argument
  local w2, w2v = randt{3, 4, 2, 3}
  local y2 = x:conv2d(w2, {stride = {1, 2}, padding = {2, 1}, dilation = {2, 1}})
  want, oh, ow = ref_conv(xv, 2, 4, 7, 6, w2v, 3, 2, 3, nil, 1, 2, 2, 1, 2, 1, 1)
  shape_eq(y2, {2, 3, oh, ow})
  close(flat(y2), want, 1e-5, "pairs")
  -- nil bias then options
  close(flat(x:conv2d(w2, nil, {stride = {1, 2}, padding = {2, 1}, dilation = {2, 1}})), want, 1e-5, "nil bias")
  -- defaults: 1x1, and 3x3 valid
  local w3, w3v = randt{5, 4, 1, 1}
  close(flat(x:conv2d(w3)), (ref_conv(xv, 2, 4, 7, 6, w3v, 5, 1, 1, nil, 1, 1, 0, 0, 1, 1, 1)), 1e-5, "1x1")
  shape_eq(T.conv2d(x, w3), {2, 5, 7, 6}, "T.conv2d")
end)

test.case("conv2d: larger images (bands per thread), batch and groups", function()
  local x, xv = randt{2, 4, 24, 20}
  local w, wv = randt{6, 2, 3, 3}
  local b, bv = randt{6}
  local y = x:conv2d(w, b, {padding = 1, groups = 2})
  local want, oh, ow = ref_conv(xv, 2, 4, 24, 20, wv, 6, 3, 3, bv, 1, 1, 1, 1, 1, 1, 2)
  shape_eq(y, {2, 6, oh, ow})
  close(flat(y), want, 1e-4, "24x20 groups 2")
end)

test.case("conv2d: 3-D input, f16/bf16 weights, non-contiguous input", function()
  local x, xv = randt{3, 5, 5}
  local w, wv = randt{2, 3, 3, 3}
  local y = x:conv2d(w, {padding = 1})
  shape_eq(y, {2, 5, 5})
  close(flat(y), (ref_conv(xv, 1, 3, 5, 5, wv, 2, 3, 3, nil, 1, 1, 1, 1, 1, 1, 1)), 1e-5, "unbatched")
  for _, dt in ipairs{"f16", "bf16"} do
    local wh = w:to(dt)
    close(flat(x:conv2d(wh, {padding = 1})), (ref_conv(xv, 1, 3, 5, 5, flat(wh:to("f32")), 2, 3, 3, nil, 1, 1, 1, 1, 1, 1, 1)), 1e-5, dt)
  end
  local xt = x:transpose(2, 3)  -- non-contiguous (3, 5, 5)
  local xtv = flat(xt:contiguous())
  close(flat(xt:conv2d(w, {padding = 1})), (ref_conv(xtv, 1, 3, 5, 5, wv, 2, 3, 3, nil, 1, 1, 1, 1, 1, 1, 1)), 1e-5, "transposed input")
end)

test.case("conv2d: errors name the op and the shapes", function()
  local x = T.ones{1, 3, 8, 8}
  test.raises(function() return x:conv2d(T.ones{4, 5, 3, 3}) end,
    "conv2d: input (1, 3, 8, 8) has 3 channels but weight (4, 5, 3, 3) expects 5")
  test.raises(function() return T.ones{1, 4, 8, 8}:conv2d(T.ones{4, 1, 3, 3}, {groups = 2}) end, "per group")
  test.raises(function() return x:conv2d(T.ones{4, 1, 3, 3}, {groups = 2}) end, "groups 2 must divide")
  test.raises(function() return x:conv2d(T.ones{4, 3, 3, 3}, {stride = 0}) end, "stride must be positive")
  test.raises(function() return x:conv2d(T.ones{4, 3, 3, 3}, {dilation = {1, 0}}) end, "dilation must be positive")
  test.raises(function() return x:conv2d(T.ones{4, 3, 3, 3}, {padding = -1}) end, "padding must be")
  test.raises(function() return x:conv2d(T.ones{4, 3, 3, 3}, {groups = 0}) end, "groups must be positive")
  test.raises(function() return x:conv2d(T.ones{4, 3, 3, 3}, {stride = "2"}) end, "stride")
  test.raises(function() return x:conv2d(T.ones{4, 3, 3, 3}, {stride = {1, 2, 3}}) end, "{h, w}")
  test.raises(function() return x:conv2d(T.ones{4, 3, 9, 9}) end, "too small")
  test.raises(function() return x:conv2d(T.ones{4, 3, 3}) end, "weight must be (O, C/groups, kh, kw)")
  test.raises(function() return T.ones{8, 8}:conv2d(T.ones{4, 3, 3, 3}) end, "input must be (N, C, H, W)")
  test.raises(function() return x:conv2d(T.ones{4, 3, 3, 3}, T.ones{5}) end, "conv2d: bias (5,) does not match weight (4, 3, 3, 3)")
  test.raises(function() return x:conv2d(T.ones({4, 3, 3, 3}, "i32")) end, "weight must be a float tensor")
  test.raises(function() return x:conv2d(T.ones{4, 3, 3, 3}, 7) end, "argument 3")
  test.raises(function() return x:conv2d(T.ones{4, 3, 3, 3}, nil, 7) end, "options must be a table")
end)

-- ---------------------------------------------------------------- attention

-- q, k, v flat (B,H,N,d) lists -> flat (B,H,N,dv) reference
local function ref_attn(qv, kv, vv, B, H, N, M, d, dv, scale, causal)
  local out = {}
  for bh = 0, B * H - 1 do
    for i = 0, N - 1 do
      local s, mx = {}, -math.huge
      local lim = causal and math.min(i + 1, M) or M
      for j = 0, lim - 1 do
        local t = 0
        for e = 0, d - 1 do t = t + qv[(bh * N + i) * d + e + 1] * kv[(bh * M + j) * d + e + 1] end
        s[j] = t * scale
        if s[j] > mx then mx = s[j] end
      end
      local sum = 0
      for j = 0, lim - 1 do s[j] = math.exp(s[j] - mx); sum = sum + s[j] end
      for e = 0, dv - 1 do
        local o = 0
        for j = 0, lim - 1 do o = o + s[j] * vv[(bh * M + j) * dv + e + 1] end
        out[#out + 1] = o / sum
      end
    end
  end
  return out
end

test.case("attention: against a naive softmax(QK^T)V; output layout", function()
  local B, H, N, M, d, dv = 2, 3, 5, 7, 4, 6
  local q, qv = randt{B, H, N, d}
  local k, kv = randt{B, H, M, d}
  local v, vv = randt{B, H, M, dv}
  local o = T.attention(q, k, v)
  shape_eq(o, {B, H, N, dv})
  close(flat(o), ref_attn(qv, kv, vv, B, H, N, M, d, dv, 1 / math.sqrt(d), false), 1e-5, "default scale")
  -- the (B, N, H, dv) buffer: transposing back is contiguous, so the reshape is free
  test.truthy(o:transpose(2, 3):is_contiguous(), "out:transpose(2,3) is contiguous")
  shape_eq(o:transpose(2, 3):reshape{B, N, H * dv}, {B, N, H * dv})
  close(flat(T.attention(q, k, v, {scale = 0.3})), ref_attn(qv, kv, vv, B, H, N, M, d, dv, 0.3, false), 1e-5, "scale")
  local qc, qcv = randt{B, H, M, d}
  close(flat(T.attention(qc, k, v, {causal = true})), ref_attn(qcv, kv, vv, B, H, M, M, d, dv, 1 / math.sqrt(d), true), 1e-5, "causal")
end)

test.case("attention: permuted views of (B, tokens, H*d) projections", function()
  local B, H, N, M, d = 1, 2, 6, 4, 3
  local qp = randt{B, N, H * d}
  local kp = randt{B, M, H * d}
  local vp = randt{B, M, H * d}
  local q = qp:view{B, N, H, d}:transpose(2, 3)
  local k = kp:view{B, M, H, d}:transpose(2, 3)
  local v = vp:view{B, M, H, d}:transpose(2, 3)
  test.truthy(not q:is_contiguous(), "q is a strided view")
  local o = T.attention(q, k, v)
  local want = ref_attn(flat(q:contiguous()), flat(k:contiguous()), flat(v:contiguous()), B, H, N, M, d, d, 1 / math.sqrt(d), false)
  close(flat(o), want, 1e-5, "views")
  -- a last dim with stride > 1 (copied) and k/v broadcast over the batch
  local q2 = randt{2, H, N, 2 * d}:view{2, H, N, d, 2}:select(5, 1)
  local kb, vb = randt{1, H, M, d}, randt{1, H, M, d}
  local o2 = T.attention(q2, kb, vb)
  shape_eq(o2, {2, H, N, d})
  local q2v, kbv, vbv = flat(q2:contiguous()), flat(kb), flat(vb)
  local kk, vv2 = {}, {}
  for r = 1, 2 do for i = 1, #kbv do kk[#kk + 1] = kbv[i]; vv2[#vv2 + 1] = vbv[i] end end
  close(flat(o2), ref_attn(q2v, kk, vv2, 2, H, N, M, d, d, 1 / math.sqrt(d), false), 1e-5, "broadcast k/v")
  -- f16 inputs are widened
  shape_eq(T.attention(q:to("f16"), k, v), {B, H, N, d}, "f16 q")
end)

test.case("attention: errors", function()
  local q, k, v = T.ones{1, 2, 5, 4}, T.ones{1, 2, 7, 4}, T.ones{1, 2, 7, 3}
  test.raises(function() return T.attention(T.ones{2, 5, 4}, k, v) end, "attention: q must be 4-D")
  test.raises(function() return T.attention(q, T.ones{1, 2, 7, 5}, v) end, "attention: q (1, 2, 5, 4) and k (1, 2, 7, 5) differ in head dimension")
  test.raises(function() return T.attention(q, k, T.ones{1, 2, 6, 3}) end, "differ in number of keys")
  test.raises(function() return T.attention(q, T.ones{1, 3, 7, 4}, T.ones{1, 3, 7, 3}) end, "must agree in batch and heads")
  test.raises(function() return T.attention(q, k, T.ones({1, 2, 7, 3}, "i32")) end, "attention: v must be a float tensor")
  test.raises(function() return T.attention(q, k, v, 3) end, "options must be a table")
  test.raises(function() return T.attention(q, k, v, {causal = 1}) end, "causal")
  test.raises(function() return T.attention(q, k, v, {scale = "x"}) end, "scale")
  test.raises(function() return T.attention(q, k, v, {scale = math.huge}) end, "scale must be finite")
  test.raises(function() return T.attention(q, k) end, "tensor expected")
  test.raises(function() return T.attention(T.ones{1, 2, 5, 0}, T.ones{1, 2, 7, 0}, v) end, "empty head dimension")
end)
