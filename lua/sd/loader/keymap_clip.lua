-- Text encoder names: transformers CLIPTextModel (the internal scheme) <- the single-file layouts.
--
--   SD 1.x: cond_stage_model.transformer.text_model.* (transformers names already; very old files
--           lack the "text_model." level).
--   SD 2.x: cond_stage_model.model.* (OpenCLIP): token_embedding, positional_embedding,
--           transformer.resblocks.N.{ln_1, attn.in_proj_weight/bias (q;k;v stacked), attn.out_proj,
--           ln_2, mlp.c_fc, mlp.c_proj}, ln_final. q/k/v become narrow views of in_proj.
local arch = require "sd.arch"

local M = {}

M.HF_PREFIX = "cond_stage_model.transformer."
M.OPENCLIP_PREFIX = "cond_stage_model.model."

-- transformers name (inside text_model.) -> OpenCLIP name, for the non-layer parameters
M.OPENCLIP_TOP = {
  ["text_model.embeddings.token_embedding.weight"] = "token_embedding.weight",
  ["text_model.embeddings.position_embedding.weight"] = "positional_embedding",
  ["text_model.final_layer_norm.weight"] = "ln_final.weight",
  ["text_model.final_layer_norm.bias"] = "ln_final.bias",
}

-- layer leaf (transformers) -> {OpenCLIP leaf, q/k/v slot (0, 1, 2) of the fused in_proj or nil}
M.OPENCLIP_LAYER = {
  ["self_attn.q_proj.weight"] = {"attn.in_proj_weight", 0},
  ["self_attn.k_proj.weight"] = {"attn.in_proj_weight", 1},
  ["self_attn.v_proj.weight"] = {"attn.in_proj_weight", 2},
  ["self_attn.q_proj.bias"] = {"attn.in_proj_bias", 0},
  ["self_attn.k_proj.bias"] = {"attn.in_proj_bias", 1},
  ["self_attn.v_proj.bias"] = {"attn.in_proj_bias", 2},
  ["self_attn.out_proj.weight"] = {"attn.out_proj.weight"},
  ["self_attn.out_proj.bias"] = {"attn.out_proj.bias"},
  ["layer_norm1.weight"] = {"ln_1.weight"},
  ["layer_norm1.bias"] = {"ln_1.bias"},
  ["mlp.fc1.weight"] = {"mlp.c_fc.weight"},
  ["mlp.fc1.bias"] = {"mlp.c_fc.bias"},
  ["mlp.fc2.weight"] = {"mlp.c_proj.weight"},
  ["mlp.fc2.bias"] = {"mlp.c_proj.bias"},
  ["layer_norm2.weight"] = {"ln_2.weight"},
  ["layer_norm2.bias"] = {"ln_2.bias"},
}

-- SD 1.x single files: the transformers names under a prefix.
function M.build_hf(cfg, prefix)
  prefix = prefix or M.HF_PREFIX
  local params = arch.clip_params(cfg)
  local map = {}
  for _, p in ipairs(params) do map[p.name] = {src = prefix .. p.name, shape = p.shape} end
  return map, params
end

-- SD 2.x single files: OpenCLIP names; q/k/v are narrow views (dim 1) of the fused in_proj.
function M.build_openclip(cfg, prefix)
  prefix = prefix or M.OPENCLIP_PREFIX
  local H = cfg.hidden_size
  local params = arch.clip_params(cfg)
  local map = {}
  for _, p in ipairs(params) do
    local e
    if M.OPENCLIP_TOP[p.name] then
      e = {src = prefix .. M.OPENCLIP_TOP[p.name], shape = p.shape}
    else
      local i, leaf = p.name:match("^text_model%.encoder%.layers%.(%d+)%.(.+)$")
      local r = assert(M.OPENCLIP_LAYER[leaf], "keymap_clip: no OpenCLIP name for " .. p.name)
      e = {src = prefix .. "transformer.resblocks." .. i .. "." .. r[1], shape = p.shape}
      if r[2] then
        e.narrow = {1, r[2] * H, H}                 -- dim 1 (Lua, 1-based), start (0-based), length
        e.src_shape = #p.shape == 2 and {3 * H, H} or {3 * H}
      end
    end
    map[p.name] = e
  end
  return map, params
end

return M
