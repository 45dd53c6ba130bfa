"""Plain restatements of what each paper's released encoder code (or, where the papers load the
library model as is, the library's own call) returns as an expert's features, on the weights
of the expert under test. They share no code with models/experts: an expert whose features
drift from these fails tests/test_expert_fidelity.py.

Sources (read at their HEAD in this session):
- LLaVA-1.5's CLIP tower, as LLaVA-HR and MoVA carry it: luogen1996/LLaVA-HR
  llava_hr/model/multimodal_encoder/clip_encoder.py:107-125 (`hidden_states[layer][:, 1:]`),
  TempleX98/MoVA mova/model/multimodal_encoder/mova_encoder.py:150-157 (the same).
- Eagle: NVlabs/EAGLE eagle/model/multimodal_encoder/ hr_clip_encoder.py, sam_encoder.py,
  pix2struct_encoder.py, convnext_encoder.py; LLaVA-HR convnext_encoder.py:75-82.
- Pix2Struct's processor: transformers' Pix2StructImageProcessor, called as the library.

Each function takes (expert, pixels) with pixels the tensor the data side gives the expert,
and returns {hidden-state index: [B, C, H, W]} for `expert.layers`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _as_map(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """[B, side*side, C] row-major tokens -> [B, C, side, side]."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)


# --- CLIP ------------------------------------------------------------------------------------
def llava_clip(expert, pixels):
    """LLaVA's CLIPVisionTower: CLIPVisionModel with output_hidden_states, hidden_states[k]
    without the class token (clip_encoder.py:118-120). Above the checkpoint's side,
    transformers' own position interpolation (`interpolate_pos_encoding`) is the library's."""
    extra = ({"interpolate_pos_encoding": True}
             if expert.resolution != expert.hf_config.image_size else {})
    out = expert.model(pixel_values=pixels, output_hidden_states=True, **extra)
    side = expert.resolution // expert.hf_config.patch_size
    return {k: _as_map(out.hidden_states[k][:, 1:], side) for k in expert.layers}


def open_clip_vit(expert, pixels):
    """open_clip's VisionTransformer.forward_intermediates: block k's output as an NCHW map
    without the class token (the library's own indexing; index 0 is ln_pre's output, which
    forward_intermediates does not expose, so only blocks are compared here)."""
    blocks = [k for k in expert.layers if k > 0]
    out = expert.model.forward_intermediates(pixels, indices=[k - 1 for k in blocks],
                                             intermediates_only=True, output_fmt="NCHW")
    return dict(zip(blocks, out["image_intermediates"]))


def eagle_resample_pos_embed(posemb: torch.Tensor, new_size: int, num_prefix_tokens: int = 1
                             ) -> torch.Tensor:
    """hr_clip_encoder.py:48-82: the prefix rows kept, the square rest resized bicubic with
    antialias in float32."""
    side = int(math.sqrt(new_size - num_prefix_tokens))
    old = int(math.sqrt(posemb.shape[1] - num_prefix_tokens))
    prefix, rest = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    dtype = rest.dtype
    rest = rest.float().reshape(posemb.shape[0], old, old, -1).permute(0, 3, 1, 2)
    rest = F.interpolate(rest, size=[side, side], mode="bicubic", antialias=True)
    rest = rest.permute(0, 2, 3, 1).reshape(posemb.shape[0], -1, posemb.shape[-1]).to(dtype)
    return torch.cat([prefix, rest], 1)


def eagle_clip(expert, pixels):
    """HRCLIPVisionTower.forward (hr_clip_encoder.py:123-141) with the embeddings it installs
    (:31-45): class token + patches, the position table resized when the count differs, then
    the class token dropped before pre_layrnorm, every block run; block k's output is index k."""
    tower = getattr(expert.model, "vision_model", expert.model)
    emb = tower.embeddings
    patches = emb.patch_embedding(pixels.to(emb.patch_embedding.weight.dtype))
    patches = patches.flatten(2).transpose(1, 2)
    cls = emb.class_embedding.expand(pixels.shape[0], 1, -1)
    x = torch.cat([cls, patches], dim=1)
    positions = emb.position_embedding.weight.unsqueeze(0)
    if positions.shape[1] != x.shape[1]:
        positions = eagle_resample_pos_embed(positions, x.shape[1])
    x = tower.pre_layrnorm((x + positions)[:, 1:])
    side = expert.resolution // expert.hf_config.patch_size
    maps = {0: _as_map(x, side)}
    for k, blk in enumerate(tower.encoder.layers, start=1):
        x = blk(x, None)
        x = x[0] if isinstance(x, tuple) else x
        maps[k] = _as_map(x, side)
    return {k: maps[k] for k in expert.layers}


# --- ConvNeXt (timm trunks: timm's own, and inside open_clip) ----------------------------------
def convnext_stages(trunk, expert, pixels):
    """forward_features of Eagle's and LLaVA-HR's ConvNeXt towers (Eagle convnext_encoder.py
    :85-92, LLaVA-HR convnext_encoder.py:75-82): stem, then each stage; stage k's output is
    index k."""
    x = trunk.stem(pixels)
    maps = {}
    for k, stage in enumerate(trunk.stages, start=1):
        x = stage(x)
        maps[k] = x
    return {k: maps[k] for k in expert.layers}


def open_clip_convnext(expert, pixels):
    return convnext_stages(expert.model.trunk, expert, pixels)


def timm_convnext(expert, pixels):
    return convnext_stages(expert.model, expert, pixels)


# --- EVA-02 (timm) -----------------------------------------------------------------------------
def timm_eva02(expert, pixels):
    """timm's Eva forward: patch embedding, absolute positions and the rotary table, norm_pre,
    the blocks with that table; block k's patch tokens (prefix dropped) are index k."""
    m = expert.model
    x, rope = m._pos_embed(m.patch_embed(pixels))
    x = m.norm_pre(x)
    side = expert.resolution // m.patch_embed.patch_size[0]
    maps = {}
    for k, blk in enumerate(m.blocks, start=1):
        x = blk(x, rope=rope)
        maps[k] = _as_map(x[:, m.num_prefix_tokens:], side)
    return {k: maps[k] for k in expert.layers}


# --- SAM ---------------------------------------------------------------------------------------
def sam_library(expert, pixels):
    """transformers' SamVisionModel as MoVA/Eagle-style code reads it: hidden_states[k]
    ([B, H, W, C]) for the blocks, last_hidden_state (the neck's [B, C, H, W]) after them."""
    out = expert.model(pixel_values=pixels, output_hidden_states=True)
    depth = len(expert.model.vision_encoder.layers)
    return {k: (out.last_hidden_state if k == depth + 1
                else out.hidden_states[k].permute(0, 3, 1, 2)) for k in expert.layers}


def eagle_sam_neck(neck, blocks_out: torch.Tensor) -> torch.Tensor:
    """ShortSamVisionNeck.forward (sam_encoder.py:68-73) with SamLayerNorm channels_first
    (:50-57): 1x1 conv without bias, LayerNorm over channels in float32, eps 1e-6."""
    x = F.conv2d(blocks_out.permute(0, 3, 1, 2), neck.conv1.weight)
    dtype = x.dtype
    x = x.float()
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    x = ((x - u) / torch.sqrt(s + 1e-6)).to(dtype)
    ln = neck.layer_norm1
    return ln.weight[:, None, None] * x + ln.bias[:, None, None]


def eagle_sam(expert, pixels):
    """SAMVisionTower.forward (sam_encoder.py:107-114): the vision encoder with the short neck
    installed at :96; its last_hidden_state is the neck's output."""
    out = expert.model(pixel_values=pixels, output_hidden_states=True)
    depth = len(expert.model.vision_encoder.layers)
    neck = eagle_sam_neck(expert.model.vision_encoder.neck, out.hidden_states[depth])
    return {k: (neck if k == depth + 1 else out.hidden_states[k].permute(0, 3, 1, 2))
            for k in expert.layers}


# --- Pix2Struct --------------------------------------------------------------------------------
def pix2struct_processor(expert, pixels):
    """Pix2StructImageProcessor (the library, budget max_patches) on the 0-255 image, then
    the encoder: last_hidden_state's first rows*cols tokens (Eagle pix2struct_encoder.py:108-112
    takes [:, :2025], MoVA mova_encoder.py:92-95,335-338 the same processor and output);
    earlier indices are hidden_states[k] over the same tokens."""
    from transformers import Pix2StructImageProcessor

    processor = Pix2StructImageProcessor(is_vqa=False)
    patch = math.isqrt(expert.hf_config.patch_embed_hidden_size // 3)
    images = [(p * 255).float() for p in pixels]
    inputs = processor(images=images, max_patches=expert.max_patches,
                       patch_size={"height": patch, "width": patch}, return_tensors="pt")
    out = expert.model(flattened_patches=inputs["flattened_patches"],
                       attention_mask=inputs["attention_mask"], output_hidden_states=True)
    rows = int(inputs["flattened_patches"][0, :, 0].max())
    cols = int(inputs["flattened_patches"][0, :, 1].max())
    depth = expert.hf_config.num_hidden_layers
    maps = {}
    for k in expert.layers:
        tokens = out.last_hidden_state if k == depth else out.hidden_states[k]
        tokens = tokens[:, :rows * cols]
        maps[k] = tokens.transpose(1, 2).reshape(pixels.shape[0], -1, rows, cols)
    return maps


# --- DINOv2, SigLIP (the library's hidden states) ----------------------------------------------
def dinov2_library(expert, pixels):
    """Dinov2Model hidden_states[k] without the class token (MoVA's feature_select,
    mova_encoder.py:150-157,207, applies it to DINOv2 as to CLIP)."""
    out = expert.model(pixel_values=pixels, output_hidden_states=True)
    side = expert.resolution // expert.hf_config.patch_size
    return {k: _as_map(out.hidden_states[k][:, 1:], side) for k in expert.layers}


def siglip_library(expert, pixels):
    """SiglipVisionModel hidden_states[k], every token (no class token), as Dense Connector's
    SigLIP tower takes them (checked against its configuration in test_fusion_fidelity)."""
    extra = ({"interpolate_pos_encoding": True}
             if expert.resolution != expert.hf_config.image_size else {})
    out = expert.model(pixel_values=pixels, output_hidden_states=True, **extra)
    side = expert.resolution // expert.hf_config.patch_size
    return {k: _as_map(out.hidden_states[k][:, :side * side], side) for k in expert.layers}


# (expert family id, wrapper or None) -> reference; test_expert_fidelity fails for any family or
# wrapper in the registries that has none here
REFERENCES = {
    ("clip-vit", None): open_clip_vit,
    ("clip-vit-hf", None): llava_clip,
    ("clip-vit-hf", "eagle"): eagle_clip,
    ("clip-vit-hf", "eagle-released"): eagle_clip,
    ("clip-convnext", None): open_clip_convnext,
    ("convnext", None): timm_convnext,
    ("eva02", None): timm_eva02,
    ("sam", None): sam_library,
    ("sam", "eagle"): eagle_sam,
    ("pix2struct", None): pix2struct_processor,
    ("dinov2", None): dinov2_library,
    ("siglip", None): siglip_library,
}
