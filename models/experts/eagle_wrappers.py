"""What NVlabs/EAGLE's encoder wrappers change on top of the libraries' models, so the Eagle
specs' experts give the features Eagle's released code gives (cited as
eagle/model/multimodal_encoder/FILE:LINE at NVlabs/EAGLE HEAD).

- SAM (`sam_encoder.py`): the mixture feeds every tower the ConvNeXt processor's tensor
  (`multi_backbone_channel_concatenation_encoder.py:100,106-116`), i.e. CLIP-normalized at
  1024; SAM's two-conv neck is replaced by a new 1x1 conv (no bias) + channels-first
  LayerNorm (`sam_encoder.py:61-73,96`), random-init and trained with the LLM (`:73`).
- CLIP (`hr_clip_encoder.py`, LLaVA-HR's): the class token is dropped before the pre-LayerNorm
  and the blocks (`:126-127`), the last block is the feature (`:130-141`), and the position
  table is resized bicubic *with* antialias (`:48-82`). The paper runs it at 448; the released
  code at 336 (`multi_backbone_channel_concatenation_encoder.py:91-97`), its 24x24 output
  brought to the 32x32 grid by the mixture (`:128-129`: our channel_concat's `grid: 32`).
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from models.experts.base import ExpertConfig
from models.experts.hf_backend import HFCLIP, HFSAM
from models.experts.pixels import PixelRecipe, hf_recipe


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channels of [B, C, H, W], computed in float32 and cast back before
    the affine (sam_encoder.py:47-58)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        centred = x - x.mean(1, keepdim=True)
        x = (centred / torch.sqrt(centred.pow(2).mean(1, keepdim=True) + self.eps)).to(dtype)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ShortNeck(nn.Module):
    """Eagle's SAM neck: [B, H, W, C] blocks' output -> 1x1 conv -> LayerNorm -> [B, C', H, W]
    (sam_encoder.py:61-73; Eagle permutes back to channels-last at :72 and flattens at :114,
    we keep the map)."""

    def __init__(self, hidden: int, out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(hidden, out, kernel_size=1, bias=False)
        self.layer_norm1 = ChannelsFirstLayerNorm(out)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.layer_norm1(self.conv1(hidden_states.permute(0, 3, 1, 2)))


class EagleSAM(HFSAM):
    """SAM as Eagle's wrapper runs it: CLIP mean/std, the short neck (see the module doc)."""

    @classmethod
    def pixel_recipe(cls, config: ExpertConfig) -> PixelRecipe:
        """Eagle feeds SAM the image its CLIP processor made, CLIP-normalized
        (sam_encoder.py:94-114), not SamImageProcessor's."""
        clip = hf_recipe("CLIPVisionModel", None)
        return dataclasses.replace(clip, source=f"Eagle sam_encoder.py:94-114: {clip.source}")

    def __init__(self, config: ExpertConfig):
        if config.freeze:
            raise ValueError(f"expert '{config.key}': wrapper 'eagle' replaces SAM's neck with a "
                             "new random-init 1x1 conv + LayerNorm that Eagle trains "
                             "(sam_encoder.py:96, multi_backbone_channel_concatenation_encoder"
                             ".py:73); set freeze: false")
        super().__init__(config)
        self.model.vision_encoder.neck = ShortNeck(self.hf_config.hidden_size,
                                                   self.hf_config.output_channels)


def resample_positions(table: torch.Tensor, side: int) -> torch.Tensor:
    """[P, C] patch position table of a square grid -> [side*side, C], bicubic with antialias,
    in float32 (hr_clip_encoder.py:56-73)."""
    old = math.isqrt(table.shape[0])
    if old == side:
        return table
    grid = table.float().reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(side, side), mode="bicubic", antialias=True)
    return grid.permute(0, 2, 3, 1).reshape(side * side, -1).to(table.dtype)


class EagleCLIP(HFCLIP):
    """CLIP as hr_clip_encoder.py runs it: no class token in the blocks, antialiased bicubic
    position resize; hidden state k = block k's output over the patch tokens only."""
    prefix_tokens = 0

    def embed(self, pixels):
        emb = self._tower.embeddings
        patches = emb.patch_embedding(pixels.to(emb.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)
        positions = resample_positions(emb.position_embedding.weight[1:], self.layer_grid(0)[0])
        return self._tower.pre_layrnorm(patches + positions)

    def _maps(self, pixels):
        return self.blockwise_maps(pixels, self.layers)


class EagleReleasedCLIP(EagleCLIP):
    """The same at 336 px, as the released mixture feeds it (see the module doc)."""

    def __init__(self, config: ExpertConfig):
        super().__init__(config)
        if self.resolution != self.native_resolution():
            raise ValueError(
                f"expert '{config.key}': wrapper 'eagle-released' runs CLIP at its native "
                f"{self.native_resolution()} px as NVlabs/EAGLE's released code does "
                "(multi_backbone_channel_concatenation_encoder.py:93), got resolution "
                f"{self.resolution}; drop `resolution` or use wrapper 'eagle' (the paper's 448)")
