-- The Jupyter kernel (lua/sd/jupyter/kernel.lua) at the protocol level: the kernel runs as a
-- subprocess with a generated connection file (ipc transport, signed messages) and this file
-- talks to it through sd.core.zmq as a frontend would. The last case runs a notebook through
-- Jupyter's own client (nbconvert) and is skipped by name when Jupyter is not installed.
local test = require "test"
local sd = require "sd"
local cjson = require "cjson"
local zmq = sd.core.zmq

local K = require "sd.jupyter.kernel"
local sdlua = test.sdlua()
local kernel_path = assert(package.searchpath("sd.jupyter.kernel", package.path))
if not kernel_path:match("^/") then kernel_path = io.popen("pwd"):read("l") .. "/" .. kernel_path end

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end

local quote = test.quote

-- ---- pieces that need no kernel process -----------------------------------------------------
test.case("zmq: sockets, multipart, poll timeout, echo thread", function()
  local ctx = zmq.context()
  local a = ctx:socket("ROUTER"):bind("tcp://127.0.0.1:*")
  local b = ctx:socket("DEALER"):connect(a:endpoint())
  b:send({"one", "t\0o", ""})
  local ready, n = zmq.poll({a}, 2000)
  test.truthy(ready[1] and n == 1, "readable")
  local m = a:recv()
  test.eq(#m, 4, "frames (identity + 3)")
  test.eq(m[3], "t\0o", "binary frame")
  test.eq(m[4], "", "empty frame")
  test.eq(select(2, a:recv(true)), "again", "nothing more")
  local t0 = sd.clock()
  ready, n = zmq.poll({a, b}, 50)
  test.truthy(not ready[1] and not ready[2] and n == 0 and sd.clock() - t0 >= 0.04, "timeout")
  local hb = ctx:socket("REP"):bind("tcp://127.0.0.1:*")
  local q = ctx:socket("REQ"):connect(hb:endpoint())
  zmq.echo(hb)
  q:send("ping")
  test.eq(q:recv()[1], "ping", "echo")
  test.raises(function() hb:send("x") end, "closed", "socket handed to the echo thread")
  test.raises(function() ctx:socket("NOPE") end, "unknown socket type")
  test.raises(function() a:bind("bogus://x") end, "zmq.bind")
  test.raises(function() ctx:term() end, "still open")
  for _, s in ipairs({a, b, q}) do s:close() end
  ctx:term()
end)

test.case("kernel pieces: is_complete, complete, values, signing", function()
  test.eq(K.is_complete("x = 1"), "complete")
  test.eq(K.is_complete("1 + 1"), "complete")
  test.eq(K.is_complete("function f()\n  return 1"), "incomplete")
  test.eq(K.is_complete("t = {1, 2,"), "incomplete")
  test.eq(K.is_complete("x = = 1"), "invalid")
  local env = {sd = sd, string = string, strange = 1, x = sd.tensor.zeros{2}}
  local m, s, e = K.complete("str", 3, env)
  test.eq(table.concat(m, ","), "strange,string", "globals")
  test.eq(s .. ":" .. e, "0:3", "cursor range")
  m, s = K.complete("y = sd.tensor.ze", 16, env)
  test.truthy(m[1] == "zeros", "sd.tensor.ze -> zeros")
  test.eq(s, 14, "cursor_start after the dot")
  m = K.complete("x:resh", 6, env)
  test.eq(m[1], "reshape", "tensor method")
  m = K.complete("sd.ima", 6, env)
  test.eq(m[1], "image", "lazy module of sd")
  m = K.complete("wh", 2, env)
  test.eq(m[1], "while", "keyword")
  m = K.complete("é = str", 7, env) -- cursor_pos counts characters, not bytes
  test.eq(#m, 2, "after a non-ASCII character")
  -- inside a string: file names (the tests run from the repository root)
  local dir = test.tmpdir()
  os.execute("mkdir -p " .. dir .. "/sub && touch " .. dir .. "/model.safetensors " .. dir .. "/.hidden")
  local code = 'pipe = sd.load("' .. dir .. '/m'
  m, s, e = K.complete(code, #code, env)
  test.eq(table.concat(m, ","), "model.safetensors", "file name")
  test.eq(e - s, 1, "replaces the part after the last /")
  code = "f('" .. dir .. "/"
  m = K.complete(code, #code, env)
  test.eq(table.concat(m, ","), "model.safetensors,sub/", "folder listing, hidden files left out")
  os.execute("rm -rf " .. dir)
  test.eq(K.open_string('print("a\\"b'), 'a\\"b', "escaped quote")
  test.eq(K.open_string('x = "a" .. b'), nil, "closed string")
  test.eq(K.format_values(1, "a", {2, 3, k = {x = true}}), '1\t"a"\t{2, 3, k = {x = true}}')
  test.eq(K.sign("", {"a"}), "", "no key, no signature")
  test.eq(K.sign("key", {"ab", "c"}), sd.core.hmac_sha256("key", "abc"))
  local frames = K.frames("k", "sess", "x_request", {v = K.EMPTY_ARRAY}, nil, {"id1"})
  local msg = assert(K.parse(frames, "k"))
  test.eq(msg.ids[1], "id1")
  test.eq(msg.header.msg_type, "x_request")
  test.truthy(frames[#frames]:find('"v":[]', 1, true), "empty array written as []")
  frames[#frames] = '{"v":1}'
  test.eq(select(2, K.parse(frames, "k")), "bad signature")
end)

test.case("sd.display outside a kernel prints a summary; base64", function()
  local display = require "sd.display"
  test.eq(display.base64(""), "")
  test.eq(display.base64("f"), "Zg==")
  test.eq(display.base64("fo"), "Zm8=")
  test.eq(display.base64("foobar"), "Zm9vYmFy")
  test.truthy(sd.display == display, "sd.display is set")
  local png = display.png_bytes(sd.tensor.ones{3, 8, 8} * 0.5)
  test.eq(png:sub(1, 8), "\137PNG\r\n\26\n", "PNG signature")
end)

test.case("sd.plot draws reproducible charts", function()
  local plot = require "sd.plot"
  local opts = {title = "Sigmas (20 steps)", xlabel = "step", ylabel = "sigma", width = 320, height = 200,
    series = {{name = "a", y = {14.6, 6, 2.5, 1, 0.3, 0}}, {name = "b", x = {0, 2, 5}, y = {10, 3, 0.1}}}}
  local img = plot.lines(opts)
  test.eq(table.concat(img.shape, "x"), "1x3x200x320")
  test.eq(img.dtype, "f32")
  test.truthy(img:min():item() >= 0 and img:max():item() <= 1, "range")
  test.eq(img:get(1, 1, 1, 1), 1.0, "white background")
  test.truthy(img:min():item() < 0.1, "something is drawn")
  -- the first palette colour (the first series) appears
  local c = plot.palette[1]
  local r, g, b = img[1][1], img[1][2], img[1][3]
  local hit = ((r - c[1] / 255):abs() + (g - c[2] / 255):abs() + (b - c[3] / 255):abs()):min():item()
  test.truthy(hit < 1e-6, "first series colour present")
  local display = require "sd.display"
  test.eq(sd.core.sha256(display.png_bytes(img)), sd.core.sha256(display.png_bytes(plot.lines(opts))), "same bytes twice")
  opts.log_y = true
  test.eq(plot.lines(opts).shape[4], 320, "log scale (zeros left out)")
  test.raises(function() plot.lines{series = {}} end, "non-empty")
  test.raises(function() plot.lines{series = {{y = {1, "x"}}}} end, "not a number")
  test.raises(function() plot.lines{series = {{x = {1}, y = {1, 2}}}} end, "1 x and 2 y")
  test.raises(function() plot.lines{width = 30, height = 20, title = "t", series = {{y = {1, 2}}}} end, "too small")
  local cv = plot.canvas(20, 10)
  cv:text(1, 1, "Az09?", {0, 0, 0})
  test.eq(cv:tensor():min():item(), 0.0, "text drawn")
end)

-- ---- the kernel as a process --------------------------------------------------------------
local dir = test.tmpdir()
local key = "0123456789abcdef-test-key"
local conn = {transport = "ipc", ip = dir .. "/k", shell_port = 1, iopub_port = 2, stdin_port = 3,
  control_port = 4, hb_port = 5, key = key, signature_scheme = "hmac-sha256", kernel_name = "sdlua"}
local conn_file = dir .. "/kernel.json"
do
  local f = assert(io.open(conn_file, "w"))
  f:write(cjson.encode(conn))
  f:close()
end
local pid = sh(string.format("%s %s %s >%s 2>&1 & echo $!", quote(sdlua), quote(kernel_path), quote(conn_file),
  quote(dir .. "/kernel.log"))):match("%d+")

local ctx = zmq.context()
local function ep(port) return string.format("ipc://%s-%d", conn.ip, port) end
-- as Jupyter's clients do, shell and stdin share one identity: the kernel's input_request goes to
-- the identity of the execute_request's sender
local shell = ctx:socket("DEALER"):setopt("identity", "test-client"):connect(ep(1))
local iopub = ctx:socket("SUB"):setopt("subscribe", ""):connect(ep(2))
local control = ctx:socket("DEALER"):connect(ep(4))
local stdin = ctx:socket("DEALER"):setopt("identity", "test-client"):connect(ep(3))
local hb = ctx:socket("REQ"):connect(ep(5))
local session = "test-session"

local function send(sock, msg_type, content)
  local frames, header = K.frames(key, session, msg_type, content)
  sock:send(frames)
  return header.msg_id
end

local function recv(sock, seconds)
  local ready = zmq.poll({sock}, (seconds or 20) * 1000)
  if not ready[1] then error("no message within " .. (seconds or 20) .. " s", 2) end
  return assert(K.parse(sock:recv(), key))
end

-- the reply to msg_id on sock and the iopub messages of that request up to status idle
local function request(sock, msg_type, content, seconds)
  local id = send(sock, msg_type, content)
  local reply = recv(sock, seconds)
  test.eq(reply.parent_header.msg_id, id, "reply's parent")
  local pub = {}
  while true do
    local m = recv(iopub, seconds)
    if m.parent_header.msg_id == id then
      pub[#pub + 1] = m
      if m.header.msg_type == "status" and m.content.execution_state == "idle" then break end
    end
  end
  return reply, pub
end

local function outputs(pub, msg_type)
  local r = {}
  for _, m in ipairs(pub) do if m.header.msg_type == msg_type then r[#r + 1] = m.content end end
  return r
end

local function stream_text(pub)
  local t = {}
  for _, c in ipairs(outputs(pub, "stream")) do t[#t + 1] = c.text end
  return table.concat(t)
end

local started = test.case("kernel: starts and answers kernel_info (also the heartbeat)", function()
  test.truthy(pid, "kernel pid")
  -- the DEALER queues the request until the kernel has bound its sockets
  local id = send(shell, "kernel_info_request", {})
  local reply = recv(shell, 30)
  test.eq(reply.parent_header.msg_id, id)
  test.truthy(reply, "kernel_info_reply")
  test.eq(reply.header.msg_type, "kernel_info_reply")
  test.eq(reply.content.language_info.name, "lua")
  test.eq(reply.content.implementation, "sdlua")
  test.eq(reply.content.protocol_version, "5.3")
  -- iopub is a PUB socket: what it sent before our subscription took effect is lost; drain,
  -- then one more round trip whose iopub messages we must see
  sh("sleep 0.3")
  while zmq.poll({iopub}, 0)[1] do iopub:recv() end
  local r2, pub = request(shell, "kernel_info_request", {})
  test.eq(r2.content.status, "ok")
  test.eq(pub[1].content.execution_state, "busy", "busy first")
  hb:send("ping")
  test.truthy(zmq.poll({hb}, 5000)[1], "heartbeat answers")
  test.eq(hb:recv()[1], "ping")
end)

local function execute(code, extra)
  local content = {code = code, silent = false, store_history = true, user_expressions = {},
    allow_stdin = false, stop_on_error = true}
  for k, v in pairs(extra or {}) do content[k] = v end
  return request(shell, "execute_request", content)
end

if not started then
  test.skip("kernel: protocol cases", "the kernel did not start; log: " .. sh("cat " .. quote(dir .. "/kernel.log")))
else
  test.case("kernel: execute with printed output and the value of the last expression", function()
    local reply, pub = execute('print("hello", 1)\nio.write("a", 2, "\\n")\nx = 40\nx + 2')
    test.eq(reply.content.status, "ok")
    test.eq(reply.content.execution_count, 1)
    test.eq(stream_text(pub), "hello\t1\na2\n", "stdout")
    local res = outputs(pub, "execute_result")
    test.eq(#res, 1, "one execute_result")
    test.eq(res[1].data["text/plain"], "42")
    test.eq(res[1].execution_count, 1)
    test.eq(outputs(pub, "execute_input")[1].code:sub(1, 5), "print")
    -- an expression cell, several values, a table; a statement cell shows nothing
    reply, pub = execute("x, {1, 2, n = 'a'}")
    test.eq(outputs(pub, "execute_result")[1].data["text/plain"], '40\t{1, 2, n = "a"}')
    test.eq(reply.content.execution_count, 2)
    reply, pub = execute("y = x * 2")
    test.eq(#outputs(pub, "execute_result"), 0, "no result for a statement")
    reply, pub = execute("y", {silent = true})
    test.eq(#outputs(pub, "execute_result"), 0, "silent")
    test.eq(reply.content.execution_count, 3, "silent does not count")
    reply, pub = execute("io.stderr:write('warn\\n')")
    test.eq(outputs(pub, "stream")[1].name, "stderr")
  end)

  test.case("kernel: errors carry ename, evalue and a Lua traceback", function()
    local reply, pub = execute("local function inner() error('boom') end\nfunction outer() inner() end\nouter()")
    test.eq(reply.content.status, "error")
    test.eq(reply.content.ename, "LuaError")
    test.truthy(reply.content.evalue:find("boom", 1, true), "evalue")
    local err = outputs(pub, "error")[1]
    test.truthy(err, "error on iopub")
    local tb = table.concat(err.traceback, "\n")
    test.truthy(tb:find("stack traceback:", 1, true) and tb:find("In%[%d+%]:2") and tb:find("outer"),
      "traceback names the cell, line and function: " .. tb)
    test.truthy(not tb:find("kernel.lua", 1, true), "kernel frames left out")
    reply = execute("x = = 1")
    test.eq(reply.content.ename, "SyntaxError")
    test.truthy(reply.content.evalue:find("In%[%d+%]:1"), "syntax error names the cell")
    reply, pub = execute("error({code = 1})")
    test.truthy(reply.content.evalue:find("table value", 1, true), "non-string error")
    -- "Run all": after an error, the queued cells are aborted
    local id1 = send(shell, "execute_request", {code = "local t = sd.clock() while sd.clock() - t < 0.5 do end\nerror('first')",
      stop_on_error = true})
    local id2 = send(shell, "execute_request", {code = "ran = true", stop_on_error = true})
    local r1, r2 = recv(shell), recv(shell)
    test.eq(r1.parent_header.msg_id .. r2.parent_header.msg_id, id1 .. id2, "replies in order")
    test.eq(r1.content.status, "error")
    test.eq(r2.content.status, "aborted")
    sh("sleep 0.2")
    while zmq.poll({iopub}, 0)[1] do iopub:recv() end
    reply, pub = execute("ran")
    test.eq(outputs(pub, "execute_result")[1].data["text/plain"], "nil", "the queued cell did not run")
    reply, pub = execute("'still alive'")
    test.eq(outputs(pub, "execute_result")[1].data["text/plain"], '"still alive"')
  end)

  test.case("kernel: is_complete and complete requests", function()
    local r = request(shell, "is_complete_request", {code = "for i = 1, 3 do"})
    test.eq(r.content.status, "incomplete")
    test.eq(r.content.indent, "  ")
    r = request(shell, "is_complete_request", {code = "print(1)"})
    test.eq(r.content.status, "complete")
    r = request(shell, "is_complete_request", {code = "print(1))"})
    test.eq(r.content.status, "invalid")
    r = request(shell, "complete_request", {code = "sd.tensor.li", cursor_pos = 12})
    test.eq(r.content.status, "ok")
    test.eq(table.concat(r.content.matches, ","), "linear,linspace")
    test.eq(r.content.cursor_start, 10)
    test.eq(r.content.cursor_end, 12)
    execute("img = sd.tensor.zeros{1, 3, 8, 8}")
    r = request(shell, "complete_request", {code = "img:perm", cursor_pos = 8})
    test.eq(r.content.matches[1], "permute")
    r = request(shell, "complete_request", {code = "zzzq", cursor_pos = 4})
    test.eq(#r.content.matches, 0, "no matches: an empty list")
    r = request(shell, "inspect_request", {code = "sd.version", cursor_pos = 5, detail_level = 0})
    test.truthy(r.content.found and r.content.data["text/plain"]:find(sd.version, 1, true), "inspect")
  end)

  test.case("kernel: sd.display sends image/png display_data", function()
    local _, pub = execute("print('before')\nsd.display(img + 0.5)\nsd.display({a = 1})")
    local d = outputs(pub, "display_data")
    test.eq(#d, 2, "display_data outputs (" .. cjson.encode(outputs(pub, "error")) .. ")")
    local png = d[1].data["image/png"]
    test.truthy(png and png:sub(1, 8) == "iVBORw0K", "base64 PNG")
    test.eq(d[1].metadata["image/png"].width, 8)
    test.eq(d[2].data["text/plain"], "{a = 1}")
    -- the stream printed before the image comes before it
    local order = {}
    for _, m in ipairs(pub) do order[#order + 1] = m.header.msg_type end
    local s = table.concat(order, " ")
    test.truthy(s:find("stream display_data display_data", 1, true), s)
  end)

  test.case("kernel: io.read asks the frontend (stdin channel)", function()
    local id = send(shell, "execute_request", {code = "line = io.read()\nline .. '!'", allow_stdin = true})
    local req = recv(stdin)
    test.eq(req.header.msg_type, "input_request")
    test.eq(req.parent_header.msg_id, id)
    send(stdin, "input_reply", {value = "typed"})
    local reply = recv(shell)
    test.eq(reply.content.status, "ok")
    local _, pub = execute("line")
    test.eq(outputs(pub, "execute_result")[1].data["text/plain"], '"typed"')
    reply = execute("io.read()")
    test.eq(reply.content.status, "error", "no stdin allowed")
  end)

  test.case("kernel: interrupt by SIGINT and by interrupt_request, many times", function()
    for i = 1, 4 do
      -- a loop in the cell itself, or inside a function (the message then starts with a position)
      local code = i <= 2 and "while true do end" or "function spin() local n = 0 while true do n = n + 1 end end\nspin()"
      local id = send(shell, "execute_request", {code = code, silent = false})
      -- wait until the cell runs, then interrupt it; again every second until it stops (an
      -- interrupt that lands while the kernel is idle is ignored, by design)
      while true do
        local m = recv(iopub)
        if m.parent_header.msg_id == id and m.header.msg_type == "execute_input" then break end
      end
      local reply
      for _ = 1, 20 do
        sh("sleep 0.1")
        if i % 2 == 1 then
          sh("kill -INT " .. pid)
        else
          local cid = send(control, "interrupt_request", {})
          local cr = recv(control)
          test.eq(cr.parent_header.msg_id, cid)
          test.eq(cr.header.msg_type, "interrupt_reply")
        end
        if zmq.poll({shell}, 1000)[1] then
          reply = assert(K.parse(shell:recv(), key))
          break
        end
      end
      test.truthy(reply, "the cell stopped")
      test.eq(reply.parent_header.msg_id, id)
      test.eq(reply.content.status, "error")
      test.eq(reply.content.ename, "Interrupted")
      test.truthy(reply.content.evalue:find("interrupted!", 1, true), "evalue")
    end
    -- idle interrupts are ignored
    sh("kill -INT " .. pid .. "; sleep 0.2; kill -INT " .. pid .. "; sleep 0.3")
    local _, pub = execute("1 + 1")
    test.eq(outputs(pub, "execute_result")[1].data["text/plain"], "2", "alive after interrupts")
  end)

  test.case("kernel: shutdown", function()
    local id = send(control, "shutdown_request", {restart = false})
    local r = recv(control)
    test.eq(r.parent_header.msg_id, id)
    test.eq(r.content.status, "ok")
    local gone = false
    for _ = 1, 50 do
      if sh("kill -0 " .. pid .. " 2>/dev/null && echo alive") == "" then gone = true; break end
      sh("sleep 0.1")
    end
    test.truthy(gone, "the kernel process ended")
  end)
end

for _, s in ipairs({shell, iopub, control, stdin, hb}) do s:close() end
ctx:term()
if pid then sh("kill -9 " .. pid .. " 2>/dev/null") end

-- ---- through Jupyter's own client -------------------------------------------------------------
local have_jupyter = sh("jupyter-nbconvert --version >/dev/null 2>&1 && echo yes")
  :match("yes")
if not have_jupyter then
  test.skip("jupyter: nbconvert runs a notebook on the sdlua kernel", "Jupyter is not installed (make deps)")
else
  test.case("jupyter: nbconvert runs a notebook on the sdlua kernel", function()
    local kdir = dir .. "/jupyter/kernels/sdlua-test"
    sh("mkdir -p " .. quote(kdir))
    local f = assert(io.open(kdir .. "/kernel.json", "w"))
    f:write(cjson.encode({argv = {sdlua, kernel_path, "{connection_file}"}, display_name = "sdlua test",
      language = "lua", interrupt_mode = "signal"}))
    f:close()
    local nb = {nbformat = 4, nbformat_minor = 5, metadata = {kernelspec = {name = "sdlua-test",
      display_name = "sdlua test", language = "lua"}}, cells = {
      {cell_type = "code", id = "c1", metadata = {}, source = "print('hi')\n21 * 2", outputs = K.EMPTY_ARRAY,
        execution_count = cjson.null},
      {cell_type = "code", id = "c2", metadata = {}, source = "sd.display(sd.tensor.ones{3, 4, 4})",
        outputs = K.EMPTY_ARRAY, execution_count = cjson.null}}}
    f = assert(io.open(dir .. "/t.ipynb", "w"))
    f:write(K.encode(nb))
    f:close()
    local out = sh(string.format("cd %s && JUPYTER_PATH=%s JUPYTER_DATA_DIR=%s jupyter-nbconvert --to notebook --execute "
      .. "--ExecutePreprocessor.timeout=60 --output out.ipynb t.ipynb 2>&1", quote(dir), quote(dir .. "/jupyter"),
      quote(dir .. "/jupyter")))
    local g = io.open(dir .. "/out.ipynb", "r")
    test.truthy(g, "nbconvert wrote a notebook: " .. out)
    local res = cjson.decode(g:read("a"))
    g:close()
    local o1 = res.cells[1].outputs
    test.eq(o1[1].name, "stdout")
    test.eq(table.concat(type(o1[1].text) == "table" and o1[1].text or {o1[1].text}), "hi\n")
    local d = o1[2].data["text/plain"]
    test.eq(type(d) == "table" and table.concat(d) or d, "42")
    test.eq(res.cells[2].outputs[1].output_type, "display_data")
    test.truthy(res.cells[2].outputs[1].data["image/png"], "image/png")
  end)
end

sh("rm -rf " .. quote(dir))
