-- LDM (first_stage_model.*) <-> diffusers AutoencoderKL names.
--
-- Data: `modules(cfg)` gives the LDM module of every diffusers module (the decoder's up_blocks run
-- in the opposite order of LDM's decoder.up.N, N = resolution level); `LEAF` renames inside
-- modules. The mid-block attention's q/k/v/proj_out are 1x1 convolutions [C, C, 1, 1] in the LDM
-- layout and linear [C, C] in diffusers: those entries carry `view`.
local arch = require "sd.arch"
local keymap = require "sd.loader.keymap"

local M = {}

M.PREFIX = "first_stage_model."

M.LEAF = {
  resnet = {{"conv_shortcut.", "nin_shortcut."}},
  vae_attention = {
    {"group_norm.", "norm."}, {"to_q.", "q."}, {"to_k.", "k."}, {"to_v.", "v."}, {"to_out.0.", "proj_out."},
  },
  conv = {},
  norm = {},
}

function M.modules(cfg)
  local m = {}
  local n, L = #cfg.block_out_channels, cfg.layers_per_block
  for _, part in ipairs{"encoder", "decoder"} do
    m[part .. ".conv_in"] = part .. ".conv_in"
    m[part .. ".conv_norm_out"] = part .. ".norm_out"
    m[part .. ".conv_out"] = part .. ".conv_out"
    m[part .. ".mid_block.resnets.0"] = part .. ".mid.block_1"
    m[part .. ".mid_block.attentions.0"] = part .. ".mid.attn_1"
    m[part .. ".mid_block.resnets.1"] = part .. ".mid.block_2"
  end
  for i = 0, n - 1 do
    for j = 0, L - 1 do
      m[("encoder.down_blocks.%d.resnets.%d"):format(i, j)] = ("encoder.down.%d.block.%d"):format(i, j)
    end
    m[("encoder.down_blocks.%d.downsamplers.0.conv"):format(i)] = ("encoder.down.%d.downsample.conv"):format(i)
    local level = n - 1 - i
    for j = 0, L do
      m[("decoder.up_blocks.%d.resnets.%d"):format(i, j)] = ("decoder.up.%d.block.%d"):format(level, j)
    end
    m[("decoder.up_blocks.%d.upsamplers.0.conv"):format(i)] = ("decoder.up.%d.upsample.conv"):format(level)
  end
  m.quant_conv = "quant_conv"
  m.post_quant_conv = "post_quant_conv"
  return m
end

function M.build(cfg, prefix)
  local mods = M.modules(cfg)
  local params = arch.vae_params(cfg)
  local map = keymap.build(params, mods, M.LEAF, prefix or M.PREFIX, "keymap_vae", function(p, e)
    if p.kind == "vae_attention" and #p.shape == 2 then
      e.src_shape = {p.shape[1], p.shape[2], 1, 1} -- 1x1 conv weight in the LDM layout
    end
  end)
  return map, params
end

return M
