-- Shared by the LDM key maps of the U-Net and the VAE (keymap_unet, keymap_vae): a diffusers
-- parameter list (sd.arch) mapped onto LDM names through a table of modules (diffusers module
-- -> LDM module) and per-kind renames of the leaf names inside a module.
local M = {}

-- `leaf` renamed by the first {from, to} rule of rules[kind] that it starts with (else as is).
function M.rename_leaf(rules, kind, leaf)
  for _, r in ipairs(rules[kind] or {}) do
    if leaf:sub(1, #r[1]) == r[1] then return r[2] .. leaf:sub(#r[1] + 1) end
  end
  return leaf
end

-- diffusers name -> {src = prefix .. LDM module .. "." .. renamed leaf, shape = diffusers shape}
-- for every parameter of `params`. adjust(p, entry), when given, adds to an entry. `what` names
-- the map in errors.
function M.build(params, modules, rules, prefix, what, adjust)
  local map = {}
  for _, p in ipairs(params) do
    local lm = assert(modules[p.module], what .. ": no LDM module for " .. p.module)
    local e = {src = prefix .. lm .. "." .. M.rename_leaf(rules, p.kind, p.leaf), shape = p.shape}
    if adjust then adjust(p, e) end
    map[p.name] = e
  end
  return map
end

return M
