-- LDM (CompVis / original single-file) <-> diffusers names for the UNet2DConditionModel.
--
-- The map is data: `modules(cfg)` lists, for every module of the architecture (walked by the same
-- loops as sd.arch.unet_params), the LDM module that holds its weights; `LEAF` renames the
-- parameter names inside a module by kind. `build(cfg)` combines both into
-- diffusers name -> {src = LDM name}.
local arch = require "sd.arch"
local keymap = require "sd.loader.keymap"

local M = {}

M.PREFIX = "model.diffusion_model."

-- Inside-module renames (diffusers leaf prefix -> LDM leaf prefix), by module kind.
M.LEAF = {
  resnet = {
    {"norm1.", "in_layers.0."}, {"conv1.", "in_layers.2."}, {"time_emb_proj.", "emb_layers.1."},
    {"norm2.", "out_layers.0."}, {"conv2.", "out_layers.3."}, {"conv_shortcut.", "skip_connection."},
  },
  time_embedding = {{"linear_1.", "0."}, {"linear_2.", "2."}},
  transformer = {}, -- same names in both layouts
  conv = {},
  norm = {},
}

local CROSS = {CrossAttnDownBlock2D = true, CrossAttnUpBlock2D = true}

-- diffusers module path -> LDM module path (without the model.diffusion_model. prefix)
function M.modules(cfg)
  local m = {}
  local n, L = #cfg.block_out_channels, cfg.layers_per_block
  m.conv_in = "input_blocks.0.0"
  m.time_embedding = "time_embed"
  for i = 0, n - 1 do
    for j = 0, L - 1 do
      local k = 1 + i * (L + 1) + j
      m[("down_blocks.%d.resnets.%d"):format(i, j)] = ("input_blocks.%d.0"):format(k)
      m[("down_blocks.%d.attentions.%d"):format(i, j)] = ("input_blocks.%d.1"):format(k)
    end
    if i < n - 1 then
      m[("down_blocks.%d.downsamplers.0.conv"):format(i)] = ("input_blocks.%d.0.op"):format(1 + i * (L + 1) + L)
    end
  end
  m["mid_block.resnets.0"] = "middle_block.0"
  m["mid_block.attentions.0"] = "middle_block.1"
  m["mid_block.resnets.1"] = "middle_block.2"
  for i = 0, n - 1 do
    for j = 0, L do
      local k = i * (L + 1) + j
      m[("up_blocks.%d.resnets.%d"):format(i, j)] = ("output_blocks.%d.0"):format(k)
      m[("up_blocks.%d.attentions.%d"):format(i, j)] = ("output_blocks.%d.1"):format(k)
    end
    if i < n - 1 then
      local has_attn = CROSS[cfg.up_block_types[i + 1]]
      m[("up_blocks.%d.upsamplers.0.conv"):format(i)] =
        ("output_blocks.%d.%d.conv"):format(i * (L + 1) + L, has_attn and 2 or 1)
    end
  end
  m.conv_norm_out = "out.0"
  m.conv_out = "out.2"
  return m
end

-- diffusers name -> {src = LDM name, shape = diffusers shape}, and the ordered parameter list.
function M.build(cfg, prefix)
  local mods = M.modules(cfg)
  local params = arch.unet_params(cfg)
  return keymap.build(params, mods, M.LEAF, prefix or M.PREFIX, "keymap_unet"), params
end

return M
