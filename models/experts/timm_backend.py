"""Experts loaded through timm, the library their users load them with: ConvNeXt (e.g.
ConvNeXt-XXL, the high-resolution CNN expert of Eagle and LLaVA-HR) and EVA-02.

Pretrained weights: a local file in timm's format (.safetensors / .pth state dict) goes through
timm's own pretrained path (`pretrained_cfg_overlay=dict(file=...)`), which also resamples
position embeddings for a new resolution and patch size; anything else is taken as a timm
pretrained tag or an `hf-hub:` name.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import timm
import torch

from models.experts.base import ExpertConfig, VisionExpert
from models.experts.convnet import ConvNeXtExpert
from models.experts.pixels import PixelRecipe, timm_recipe
from models.experts.presets import Preset, check_divisible, pick


def create_timm(arch: str, pretrained: str | None, **kwargs) -> torch.nn.Module:
    if pretrained is None:
        return timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    if Path(pretrained).exists():
        return timm.create_model(arch, pretrained=True, num_classes=0,
                                 pretrained_cfg_overlay=dict(file=str(pretrained)), **kwargs)
    name = pretrained if pretrained.startswith("hf-hub:") else f"{arch}.{pretrained}"
    return timm.create_model(name, pretrained=True, num_classes=0, **kwargs)


class TimmExpert(VisionExpert):
    """Pixels from timm's pretrained config of the checkpoint named (ConvNeXt-XXL's
    `convnext_xxlarge.clip_laion2b_*` configs carry CLIP's mean and std, crop_pct 1.0); a
    stand-in keeps its preset's."""

    presets: dict[str, Preset]

    @classmethod
    def pixel_recipe(cls, config: ExpertConfig) -> PixelRecipe:
        return timm_recipe(pick(config.id, cls.presets, config.preset).arch, config.pretrained)


class TimmConvNeXt(ConvNeXtExpert, TimmExpert):
    """ConvNeXt from timm; hidden-state index k is the output of stage k (1..4)."""

    presets = {
        "xxlarge": Preset("convnext_xxlarge", 1024),
        "large": Preset("convnext_large", 768),
        "tiny": Preset("convnext_atto", 64, {"depths": (1, 1, 2, 1), "dims": (16, 32, 64, 128)}),
    }

    def __init__(self, config: ExpertConfig):
        preset = pick(config.id, self.presets, config.preset)
        if config.stand_in is not None:   # four stages and stride 32 kept, at the tiny widths
            preset = Preset(*dataclasses.astuple(self.presets["tiny"])[:1],
                            config.stand_in.resolution, self.presets["tiny"].kwargs)
        super().__init__(config, config.resolution or preset.resolution)
        self.model = create_timm(preset.arch, config.pretrained, **preset.kwargs)

    @property
    def trunk(self):
        return self.model


class TimmEVA02(TimmExpert):
    """EVA-02 from timm; index k is the output of block k. For Eagle this is a STAND-IN: Eagle
    runs a ViTDet-style EVA-02-L/16 at 1024 px (NVlabs/EAGLE eva_vit.py:1160-1182: 16 px
    patches, 16x16 windowed attention in all blocks but 2, 5, ..., 23, the COCO+O365
    detection checkpoint, multi_backbone_channel_concatenation_encoder.py:51-58); ours is
    timm's eva02_large_patch14_448 (global attention in every block) with its 14 px patch
    embedding resampled to 16 px when loading: the same 64x64 tokens, not the same features."""

    presets = {
        "large-1024": Preset("eva02_large_patch14_448", 1024, {"patch_size": 16}),
        "large-448": Preset("eva02_large_patch14_448", 448),
        "tiny": Preset("eva02_tiny_patch14_224", 64,
                       {"embed_dim": 64, "depth": 4, "num_heads": 4, "patch_size": 8}),
    }

    def __init__(self, config: ExpertConfig):
        preset = pick(config.id, self.presets, config.preset)
        if config.stand_in is not None:   # the preset's depth and patch at a small width
            s = config.stand_in
            preset = Preset(preset.arch, s.resolution, {**preset.kwargs, "embed_dim": s.width,
                                                        "num_heads": s.heads})
        resolution = config.resolution or preset.resolution
        self.patch = preset.kwargs.get("patch_size", 14)
        check_divisible(config.id, resolution, self.patch)
        model = create_timm(preset.arch, config.pretrained, img_size=resolution, **preset.kwargs)
        self._depth = len(model.blocks)
        super().__init__(config, resolution)
        self.model = model

    @property
    def depth(self) -> int:
        return self._depth

    def layer_channels(self, index: int) -> int:
        return self.model.embed_dim

    def layer_grid(self, index: int) -> tuple[int, int]:
        side = self.resolution // self.patch
        return side, side

    def set_activation_checkpointing(self, enabled: bool) -> None:
        self.model.set_grad_checkpointing(enabled)   # forward_intermediates honours it per block

    def checkpoint_units(self) -> list[torch.nn.Module]:
        return list(self.model.blocks)

    def _maps(self, pixels):
        out = self.model.forward_intermediates(pixels, indices=[i - 1 for i in self.layers],
                                               intermediates_only=True)
        return dict(zip(self.layers, out))
