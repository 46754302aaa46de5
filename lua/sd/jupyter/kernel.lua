-- The sdlua Jupyter kernel: the Jupyter messaging protocol (version 5.3) over ZeroMQ
-- (sd.core.zmq), with Lua 5.4 and the sd module as the language.
--
--   bin/sdlua lua/sd/jupyter/kernel.lua CONNECTION_FILE      (what the kernelspec runs)
--
-- Each cell is compiled on its own, as at the sdlua prompt: globals persist between cells,
-- locals live for one cell. A cell that is an expression (or ends in a `return`) shows its values
-- as the execute_result. print / io.write / io.stdout / io.stderr go to the notebook as stream
-- output; sd.display(x) sends images as image/png. Interrupts: SIGINT (the kernelspec's
-- interrupt_mode "signal") or an interrupt_request on the control channel stop the running cell
-- with the error "interrupted!" (Lua code stops at once; a C kernel finishes its call first).
--
-- `require "sd.jupyter.kernel"` gives the pieces without starting a kernel (tests use them):
-- K.is_complete(code), K.complete(code, cursor_pos), K.format_values(...), K.sign(key, parts).
local core = require "sd.core"
local cjson = require "cjson"
local zmq = core.zmq

local K = {}
local PROTOCOL = "5.3"
local EMPTY_ARRAY = "@@sdlua_empty_array@@" -- lua-cjson 2.1 writes {} for every empty table

-- ---- values as text (as the sdlua prompt shows them) ------------------------------------------
local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function is_ident(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil
end

local function show(v, depth, budget)
  if type(v) == "string" then return depth > 0 and string.format("%q", v) or v end
  if type(v) ~= "table" or getmetatable(v) and getmetatable(v).__tostring then return tostring(v) end
  if depth >= 3 then return "{...}" end
  local n = #v
  local parts, keys = {}, {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_order)
  for i = 1, n do
    if budget.left <= 0 then parts[#parts + 1] = "..."; return "{" .. table.concat(parts, ", ") .. "}" end
    budget.left = budget.left - 1
    parts[#parts + 1] = show(v[i], depth + 1, budget)
  end
  for _, k in ipairs(keys) do
    if budget.left <= 0 then parts[#parts + 1] = "..."; break end
    budget.left = budget.left - 1
    local ks = is_ident(k) and k or ("[" .. show(k, depth + 1, budget) .. "]")
    parts[#parts + 1] = ks .. " = " .. show(v[k], depth + 1, budget)
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- The values of a cell, tab separated: tostring, except plain tables (contents on one line,
-- keys sorted, three levels, 40 items at most).
function K.format_values(...)
  local out = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    out[i] = type(v) == "string" and string.format("%q", v) or show(v, 0, {left = 40})
  end
  return table.concat(out, "\t")
end

-- ---- is_complete / complete -----------------------------------------------------------------
-- "complete", "incomplete" (an open block, string or bracket: load fails at <eof>) or "invalid".
function K.is_complete(code)
  if load("return " .. code, "=cell") or load(code, "=cell") then return "complete" end
  local _, err = load(code, "=cell")
  if err and err:find("<eof>", 1, true) then return "incomplete" end
  return "invalid"
end

local keywords = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto",
  "if", "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"}

-- The __index table of v's metatable; an __index function stands for the first table among its
-- upvalues other than _ENV (the tensor methods of the C __index, sd's lazy-module list).
local function index_table(v)
  local mt = getmetatable(v)
  if type(mt) ~= "table" then return nil end
  local idx = rawget(mt, "__index")
  if type(idx) == "function" then
    for i = 1, 8 do
      local name, up = debug.getupvalue(idx, i)
      if not name then break end
      if type(up) == "table" and name ~= "_ENV" then return up end
    end
    return nil
  end
  return type(idx) == "table" and idx or nil
end

-- field of v without running code (raw, following __index tables)
local function lookup(v, key)
  for _ = 1, 6 do
    if type(v) == "table" then
      local r = rawget(v, key)
      if r ~= nil then return r end
    end
    v = index_table(v)
    if v == nil then return nil end
  end
  return nil
end

local function add_keys(set, v, want_fn)
  for _ = 1, 6 do
    if type(v) == "table" then
      for k, x in next, v do
        if is_ident(k) and (not want_fn or type(x) == "function") then set[k] = true end
      end
      -- sd's lazy modules (sd.load, sd.image, ...) are keys of the table the __index closes over
      local mt = getmetatable(v)
      if type(mt) == "table" and type(rawget(mt, "__index")) == "function" then
        local t = index_table(v)
        if t then for k in next, t do if is_ident(k) then set[k] = true end end end
        return
      end
    end
    v = index_table(v)
    if v == nil then return end
  end
end

-- Completion of the Lua name before cursor_pos (a count of Unicode characters, as the protocol
-- gives it): globals and keywords, fields after "a.b.", methods after "x:". Never runs user
-- code. -> matches (sorted), cursor_start, cursor_end.
function K.complete(code, cursor_pos, env)
  env = env or _G
  local byte_pos = #code
  if cursor_pos and cursor_pos >= 0 then
    byte_pos = utf8.offset(code, cursor_pos + 1)
    byte_pos = byte_pos and byte_pos - 1 or #code
  end
  local before = code:sub(1, byte_pos)
  local cursor_end = cursor_pos or utf8.len(code)
  local text = K.open_string(before)
  if text then -- inside a string literal: file names
    local matches, partial = K.complete_file(text)
    return matches, cursor_end - utf8.len(partial), cursor_end
  end
  local word = before:match("[%a_][%w_%.:]*$") or ""
  local path, sep, partial = word:match("^(.-)([%.:]?)([%w_]*)$")
  local set = {}
  if sep == "" then
    add_keys(set, env)
    for _, k in ipairs(keywords) do set[k] = true end
  else
    local v = env
    for name in path:gmatch("[^%.:]+") do
      v = lookup(v, name)
      if v == nil then break end
    end
    if v ~= nil then add_keys(set, v, sep == ":") end
  end
  local matches = {}
  for k in pairs(set) do
    if k:sub(1, #partial) == partial then matches[#matches + 1] = k end
  end
  table.sort(matches)
  return matches, cursor_end - #partial, cursor_end
end

-- The text of a short string literal left open at the end of `before` (on its last line), or nil.
function K.open_string(before)
  local line = before:match("[^\n]*$")
  local quote, start, i = nil, nil, 1
  while i <= #line do
    local ch = line:sub(i, i)
    if quote then
      if ch == "\\" then i = i + 1
      elseif ch == quote then quote = nil end
    elseif ch == '"' or ch == "'" then
      quote, start = ch, i + 1
    elseif line:sub(i, i + 1) == "--" then
      return nil -- a comment
    end
    i = i + 1
  end
  return quote and line:sub(start) or nil
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- File names completing `text` (a path typed so far): matches are whole paths as typed, folders
-- end in "/". Returns the matches and the part of `text` they replace (after the last "/").
function K.complete_file(text)
  local dir, base = text:match("^(.*/)([^/]*)$")
  if not dir then dir, base = "", text end
  local listing = dir == "" and "." or dir
  if listing:sub(1, 2) == "~/" then listing = (os.getenv("HOME") or "~") .. listing:sub(2) end
  local matches = {}
  local p = io.popen("ls -1Ap -- " .. shell_quote(listing) .. " 2>/dev/null")
  if p then
    for name in p:lines() do
      if name:sub(1, #base) == base and (base:sub(1, 1) == "." or name:sub(1, 1) ~= ".") then
        matches[#matches + 1] = name
      end
      if #matches >= 500 then break end
    end
    p:close()
  end
  table.sort(matches)
  return matches, base
end

-- A cell as a function: the whole cell as an expression list ("return " .. code, as the sdlua
-- prompt does), else the cell with its last line returned (so a final expression or call shows
-- its values, as in other notebook kernels), else the cell as statements. -> f or nil, error.
function K.compile(code, name)
  local f = load("return " .. code, name)
  if f then return f end
  local body = code:gsub("%s+$", "")
  local head, tail = body:match("^(.*\n)([^\n]*)$")
  -- the last line must be an expression on its own: "return end" would compile inside a block
  if tail and tail:match("%S") and not tail:match("^%s*%-%-") and load("return " .. tail) then
    f = load(head .. "return " .. tail, name)
    if f then return f end
  end
  return load(code, name)
end

-- Paths of installed modules in messages shortened to "sd/...lua", so that tracebacks read the
-- same wherever sdlua lives (notebook outputs are compared across machines).
local function short_paths(s)
  return (s:gsub("[^%s'\"<]*/lua/(sd/[%w_/]+%.lua)", "%1"))
end
K.short_paths = short_paths

-- ---- messages -----------------------------------------------------------------------------
local function hexbytes(n)
  local f = io.open("/dev/urandom", "rb")
  local s = f and f:read(n)
  if f then f:close() end
  if not s or #s < n then
    s = {}
    for i = 1, n do s[i] = string.char(math.random(0, 255)) end
    s = table.concat(s)
  end
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function uuid()
  local h = hexbytes(16)
  return string.format("%s-%s-%s-%s-%s", h:sub(1, 8), h:sub(9, 12), h:sub(13, 16), h:sub(17, 20), h:sub(21, 32))
end

local function now_iso()
  local t = os.time()
  local frac = core.clock and math.floor((core.clock() % 1) * 1e6) or 0
  return os.date("!%Y-%m-%dT%H:%M:%S", t) .. string.format(".%06dZ", frac)
end

local function encode(v)
  return (cjson.encode(v):gsub('"' .. EMPTY_ARRAY .. '"', "[]"))
end
K.encode, K.EMPTY_ARRAY = encode, EMPTY_ARRAY

-- HMAC-SHA256 of the four JSON parts (hex), "" without a key.
function K.sign(key, parts)
  if not key or key == "" then return "" end
  return core.hmac_sha256(key, table.concat(parts))
end

-- Wire frames -> identities, header, parent, metadata, content, buffers (decoded), or nil, why.
function K.parse(frames, key)
  local i = 1
  local ids = {}
  while frames[i] and frames[i] ~= "<IDS|MSG>" do ids[#ids + 1] = frames[i]; i = i + 1 end
  if not frames[i] then return nil, "no <IDS|MSG> delimiter" end
  local sig = frames[i + 1]
  local parts = {frames[i + 2], frames[i + 3], frames[i + 4], frames[i + 5]}
  if #parts < 4 or not parts[4] then return nil, "too few frames" end
  if key and key ~= "" and sig ~= K.sign(key, parts) then return nil, "bad signature" end
  local ok, header = pcall(cjson.decode, parts[1])
  if not ok or type(header) ~= "table" then return nil, "bad header" end
  local msg = {ids = ids, header = header}
  for n, name in ipairs({"parent_header", "metadata", "content"}) do
    local ok2, v = pcall(cjson.decode, parts[n + 1])
    msg[name] = (ok2 and type(v) == "table") and v or {}
  end
  msg.buffers = {table.unpack(frames, i + 6)}
  return msg
end

-- A message as wire frames.
function K.frames(key, session, msg_type, content, parent, ids, metadata)
  local header = {msg_id = uuid(), session = session, username = "sdlua", date = now_iso(),
    msg_type = msg_type, version = PROTOCOL}
  local parts = {encode(header), parent and encode(parent) or "{}", metadata and encode(metadata) or "{}",
    encode(content or {})}
  local frames = {}
  for _, id in ipairs(ids or {}) do frames[#frames + 1] = id end
  frames[#frames + 1] = "<IDS|MSG>"
  frames[#frames + 1] = K.sign(key, parts)
  for _, p in ipairs(parts) do frames[#frames + 1] = p end
  return frames, header
end

-- ---- the kernel -----------------------------------------------------------------------------
local Kernel = {}
Kernel.__index = Kernel

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then error("cannot read connection file: " .. tostring(err), 0) end
  local s = f:read("a")
  f:close()
  return s
end

function K.new(connection_file)
  local cfg = cjson.decode(read_file(connection_file))
  if cfg.signature_scheme and cfg.signature_scheme ~= "hmac-sha256" then
    error("unsupported signature scheme " .. tostring(cfg.signature_scheme), 0)
  end
  local self = setmetatable({cfg = cfg, key = cfg.key or "", session = uuid(), count = 0}, Kernel)
  local function ep(port)
    local tr = cfg.transport or "tcp"
    return tr == "ipc" and string.format("ipc://%s-%d", cfg.ip, port) or string.format("%s://%s:%d", tr, cfg.ip, port)
  end
  self.ctx = zmq.context()
  local function open(kind, port)
    local s = self.ctx:socket(kind)
    s:setopt("linger", 1000)
    s:bind(ep(port))
    return s
  end
  self.shell = open("ROUTER", cfg.shell_port)
  self.control = open("ROUTER", cfg.control_port)
  self.stdin = open("ROUTER", cfg.stdin_port)
  self.iopub = open("PUB", cfg.iopub_port)
  local hb = self.ctx:socket("REP")
  hb:bind(ep(cfg.hb_port))
  zmq.echo(hb) -- answered by a thread, also while a cell runs
  return self
end

function Kernel:send(sock, msg_type, content, parent, ids, metadata)
  local frames = K.frames(self.key, self.session, msg_type, content, parent and parent.header, ids, metadata)
  sock:send(frames)
end

-- iopub messages go to the topic kernel.<session>.<type>
function Kernel:publish(msg_type, content, parent, metadata)
  self:send(self.iopub, msg_type, content, parent, {"kernel." .. self.session .. "." .. msg_type}, metadata)
end

function Kernel:status(state, parent)
  self:publish("status", {execution_state = state}, parent)
end

-- ---- output capture -----------------------------------------------------------------------
local real = {print = print, write = io.write, stdout = io.stdout, stderr = io.stderr, read = io.read}

function Kernel:flush_streams()
  for _, name in ipairs({"stdout", "stderr"}) do
    local buf = self.streams and self.streams[name]
    if buf and #buf > 0 then
      self:publish("stream", {name = name, text = table.concat(buf)}, self.parent)
      self.streams[name] = {}
    end
  end
  if self.streams then self.streams.size, self.streams.last = 0, core.clock() end
end

function Kernel:write_stream(name, s)
  if not self.parent then
    local f = name == "stderr" and real.stderr or real.stdout
    f:write(s)
    return
  end
  local st = self.streams
  local buf = st[name]
  buf[#buf + 1] = s
  st.size = st.size + #s
  if st.size > 65536 or core.clock() - st.last > 0.25 then self:flush_streams() end
end

local function stream_file(kernel, name)
  local f = {}
  local function write(_, ...)
    for i = 1, select("#", ...) do
      local v = select(i, ...)
      if type(v) ~= "string" and type(v) ~= "number" then
        error(string.format("bad argument #%d to 'write' (string expected, got %s)", i, type(v)), 2)
      end
      kernel:write_stream(name, tostring(v))
    end
    return f
  end
  f.write = write
  f.flush = function() kernel:flush_streams(); return f end
  f.setvbuf = function() return true end
  f.close = function() return true end
  f.seek = function() return nil, "cannot seek a notebook stream" end
  f.lines = function() error("cannot read from " .. name) end
  f.read = function() return nil end
  return setmetatable(f, {__name = "FILE*", __tostring = function() return "file (notebook " .. name .. ")" end})
end

-- io.read/io.lines on the notebook: an input_request on the stdin channel when the frontend
-- allows it (allow_stdin), else an error.
function Kernel:input(prompt, password)
  if not (self.parent and self.parent.content.allow_stdin) then
    error("this frontend does not support input (allow_stdin is false)", 3)
  end
  self:flush_streams()
  self:send(self.stdin, "input_request", {prompt = prompt or "", password = password or false}, self.parent, self.parent.ids)
  while true do
    local ready = zmq.poll({self.stdin, self.control}, -1)
    if ready[2] then self:handle_control_during_run() end
    if ready[1] then
      local msg = K.parse(self.stdin:recv(), self.key)
      if msg and msg.header.msg_type == "input_reply" then return msg.content.value or "" end
    end
  end
end

function Kernel:install_io()
  local kernel = self
  local out, err = stream_file(self, "stdout"), stream_file(self, "stderr")
  _G.print = function(...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    kernel:write_stream("stdout", table.concat(parts, "\t") .. "\n")
  end
  io.write = function(...) return out.write(out, ...) end
  io.stdout, io.stderr = out, err
  io.read = function(fmt, ...)
    if select("#", ...) > 0 then error("io.read: one format at a time in a notebook", 2) end
    local line = kernel:input("")
    fmt = fmt or "l"
    if fmt == "n" or fmt == "*n" then return tonumber(line) end
    if fmt == "L" or fmt == "*L" then return line .. "\n" end
    return line
  end
  local display = require "sd.display"
  display.set_publisher(function(data, metadata)
    kernel:flush_streams()
    kernel:publish("display_data", {data = data, metadata = metadata or {}, transient = {}}, kernel.parent)
  end)
end

-- ---- requests -----------------------------------------------------------------------------
local function kernel_info()
  local sd = require "sd"
  return {status = "ok", protocol_version = PROTOCOL, implementation = "sdlua",
    implementation_version = sd.version,
    language_info = {name = "lua", version = _VERSION:match("[%d%.]+"), mimetype = "text/x-lua",
      file_extension = ".lua", pygments_lexer = "lua", codemirror_mode = "lua"},
    banner = string.format("sdlua %s (%s): Stable Diffusion in C and Lua", sd.version, _VERSION),
    help_links = EMPTY_ARRAY}
end

-- Traceback lines of an error, without the kernel's own frames.
local function traceback_handler(e)
  local msg
  if type(e) == "string" then msg = e
  else
    local mt = getmetatable(e)
    msg = (mt and mt.__tostring) and tostring(e) or string.format("(error object is a %s value)", type(e))
  end
  msg = short_paths(msg)
  local tb = short_paths(debug.traceback(msg, 2))
  local lines = {}
  for line in (tb .. "\n"):gmatch("(.-)\n") do
    if line:find("sd/jupyter/kernel.lua", 1, true) or line:find("in function 'xpcall'", 1, true) then break end
    lines[#lines + 1] = line
  end
  if lines[#lines] == "stack traceback:" then lines[#lines] = nil end
  return {msg = msg, lines = lines}
end

function Kernel:handle_control_during_run()
  local msg = K.parse(self.control:recv(), self.key)
  if not msg then return end
  local t = msg.header.msg_type
  if t == "interrupt_request" then
    self:send(self.control, "interrupt_reply", {status = "ok"}, msg, msg.ids)
    error("interrupted!", 0)
  elseif t == "shutdown_request" then
    self:send(self.control, "shutdown_reply", {status = "ok", restart = msg.content.restart or false}, msg, msg.ids)
    self:stop()
  elseif t == "kernel_info_request" then
    self:send(self.control, "kernel_info_reply", kernel_info(), msg, msg.ids)
  end
end

function Kernel:execute(msg)
  local c = msg.content
  local code = type(c.code) == "string" and c.code or ""
  local silent = c.silent == true
  local store = not silent and c.store_history ~= false
  if store then self.count = self.count + 1 end
  local n = self.count
  if not silent then self:publish("execute_input", {code = code, execution_count = n}, msg) end
  local f, err = K.compile(code, "=In[" .. n .. "]")
  local result
  if not f then
    result = {ok = false, err = {msg = err, lines = {err}}, ename = "SyntaxError"}
  else
    self.parent, self.streams = msg, {stdout = {}, stderr = {}, size = 0, last = core.clock()}
    zmq.interruptible(true)
    -- an interrupt_request on the control channel stops the cell (checked every 100000 instructions)
    local kernel = self
    debug.sethook(function()
      if zmq.poll({kernel.control}, 0)[1] then kernel:handle_control_during_run() end
    end, "", 100000)
    local r = table.pack(xpcall(f, traceback_handler))
    debug.sethook()
    zmq.interruptible(false)
    result = {ok = r[1]}
    if r[1] then
      result.n = r.n - 1
      result.values = table.pack(table.unpack(r, 2, r.n))
    else
      result.err = r[2]
      if type(result.err) ~= "table" then -- the message handler itself failed (interrupted in it)
        result.err = {msg = tostring(result.err), lines = {tostring(result.err)}}
      end
      -- "interrupted!", possibly after the position of the function that was running
      result.ename = result.err.msg:sub(-12) == "interrupted!" and "Interrupted" or "LuaError"
    end
    self:flush_streams()
  end
  if result.ok then
    if not silent and result.values.n > 0 then
      local ok, text = pcall(K.format_values, table.unpack(result.values, 1, result.values.n))
      if not ok then text = "(cannot show the value: " .. tostring(text) .. ")" end
      self:publish("execute_result", {execution_count = n, data = {["text/plain"] = text}, metadata = {}}, msg)
    end
    self.parent = nil
    self:send(self.shell, "execute_reply", {status = "ok", execution_count = n, user_expressions = {},
      payload = EMPTY_ARRAY}, msg, msg.ids)
  else
    local e = result.err
    local content = {ename = result.ename, evalue = e.msg, traceback = e.lines}
    if #e.lines == 0 then content.traceback = {e.msg} end
    if not silent then self:publish("error", content, msg) end
    self.parent = nil
    content.status, content.execution_count = "error", n
    -- what is queued now, before the reply (a frontend that waits for the reply to send the
    -- next cell must not see that cell aborted), was queued behind the failed cell
    local queued = c.stop_on_error ~= false and self:take_queued() or {}
    self:send(self.shell, "execute_reply", content, msg, msg.ids)
    self:abort(queued)
  end
  self.parent = nil
  collectgarbage()
end

-- After an error, cells already queued ("Run all") are not run: their execute_requests get
-- status "aborted", as other kernels do. Other queued requests are handled normally.
function Kernel:take_queued()
  local queued = {}
  while true do
    local frames = self.shell:recv(true)
    if not frames then return queued end
    queued[#queued + 1] = K.parse(frames, self.key)
  end
end

function Kernel:abort(queued)
  for _, msg in ipairs(queued) do
    if msg.header.msg_type == "execute_request" then
      self:status("busy", msg)
      self:send(self.shell, "execute_reply", {status = "aborted", execution_count = self.count}, msg, msg.ids)
      self:status("idle", msg)
    else
      self:handle(self.shell, msg)
    end
  end
end

function Kernel:inspect(msg)
  local code, pos = msg.content.code or "", msg.content.cursor_pos
  local bp = utf8.offset(code, (pos or utf8.len(code)) + 1)
  bp = bp and bp - 1 or #code
  local word = code:sub(1, bp):match("[%a_][%w_%.:]*$") or ""
  word = word .. (code:sub(bp + 1):match("^[%w_]*") or "")
  local v = _G
  for name in word:gmatch("[^%.:]+") do
    v = lookup(v, name)
    if v == nil then break end
  end
  if word == "" or v == nil then
    return {status = "ok", found = false, data = {}, metadata = {}}
  end
  local text = word .. ": " .. type(v) .. "\n" .. K.format_values(v)
  return {status = "ok", found = true, data = {["text/plain"] = text}, metadata = {}}
end

function Kernel:handle(sock, msg)
  local t = msg.header.msg_type
  local reply_type = t:gsub("_request$", "_reply")
  self:status("busy", msg)
  if t == "execute_request" then
    self:execute(msg)
  elseif t == "kernel_info_request" then
    self:send(sock, reply_type, kernel_info(), msg, msg.ids)
  elseif t == "is_complete_request" then
    local status = K.is_complete(msg.content.code or "")
    local content = {status = status}
    if status == "incomplete" then content.indent = "  " end
    self:send(sock, reply_type, content, msg, msg.ids)
  elseif t == "complete_request" then
    local matches, s, e = K.complete(msg.content.code or "", msg.content.cursor_pos)
    self:send(sock, reply_type, {status = "ok", matches = #matches > 0 and matches or EMPTY_ARRAY,
      cursor_start = s, cursor_end = e, metadata = {}}, msg, msg.ids)
  elseif t == "inspect_request" then
    self:send(sock, reply_type, self:inspect(msg), msg, msg.ids)
  elseif t == "history_request" then
    self:send(sock, reply_type, {status = "ok", history = EMPTY_ARRAY}, msg, msg.ids)
  elseif t == "comm_info_request" then
    self:send(sock, reply_type, {status = "ok", comms = {}}, msg, msg.ids)
  elseif t == "interrupt_request" then
    self:send(sock, reply_type, {status = "ok"}, msg, msg.ids)
  elseif t == "shutdown_request" then
    self:send(sock, reply_type, {status = "ok", restart = msg.content.restart or false}, msg, msg.ids)
    self:status("idle", msg)
    self:stop()
  elseif t:match("_request$") then
    -- unknown request: an error reply so the frontend does not wait forever
    self:send(sock, reply_type, {status = "error", ename = "NotImplemented",
      evalue = "sdlua does not handle " .. t, traceback = EMPTY_ARRAY}, msg, msg.ids)
  end -- comm_open/comm_msg/... are ignored
  self:status("idle", msg)
end

function Kernel:stop()
  for _, s in ipairs({self.shell, self.control, self.stdin, self.iopub}) do s:close() end
  self.ctx:term()
  os.exit(0)
end

function Kernel:run()
  zmq.trap_sigint()
  self:install_io()
  self:status("starting")
  while true do
    local ready = zmq.poll({self.control, self.shell}, -1)
    for i, sock in ipairs({self.control, self.shell}) do
      if ready[i] then
        local frames = sock:recv(true)
        local msg = frames and K.parse(frames, self.key)
        if msg then
          local ok, err = xpcall(self.handle, debug.traceback, self, sock, msg)
          if not ok then
            -- e.g. an interrupt landing outside the cell's own protected call: still answer
            self.parent = nil
            real.stderr:write("sdlua kernel: ", tostring(err), "\n")
            if msg.header.msg_type == "execute_request" then
              pcall(self.send, self, sock, "execute_reply", {status = "error", execution_count = self.count,
                ename = "KernelError", evalue = tostring(err), traceback = {tostring(err)}}, msg, msg.ids)
            end
            pcall(self.status, self, "idle", msg)
          end
        elseif frames then
          real.stderr:write("sdlua kernel: message dropped\n")
        end
      end
    end
  end
end

-- Started as a script (the kernelspec): `...` is the connection file.
local first = ...
if first and first ~= "sd.jupyter.kernel" then
  local kernel = K.new(first)
  kernel:run()
  return
end
return K
