"""Bringing a feature map onto a target grid, the three ways the papers do it: bilinear
resize (keeps channels), average pooling (keeps channels, grid must divide), pixel-unshuffle
(folds an r x r neighbourhood into channels: SAM's 256 x 64x64 neck -> 1024 x 32x32)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from models.fusion.base import FeatureSpec


def resampled_channels(spec: FeatureSpec, grid: int) -> int:
    h, w = spec.grid
    if spec.resample == "unshuffle":
        if h != w or h % grid:
            raise ValueError(f"expert '{spec.expert}' layer {spec.layer}: pixel-unshuffle needs "
                             f"a square grid that is a multiple of {grid}, got {h}x{w}")
        return spec.channels * (h // grid) ** 2
    if spec.resample == "avgpool" and (h % grid or w % grid):
        raise ValueError(f"expert '{spec.expert}' layer {spec.layer}: average pooling from "
                         f"{h}x{w} to {grid}x{grid} needs a grid that divides it")
    if spec.resample not in ("bilinear", "avgpool", "unshuffle"):
        raise ValueError(f"unknown resample '{spec.resample}'; allowed: bilinear, avgpool, "
                         f"unshuffle")
    return spec.channels


def resample(x: torch.Tensor, method: str, grid: int, align_corners: bool = False
             ) -> torch.Tensor:
    h, w = x.shape[-2:]
    if (h, w) == (grid, grid):
        return x
    if method == "unshuffle":
        return F.pixel_unshuffle(x, h // grid)
    if method == "avgpool":
        return F.avg_pool2d(x, kernel_size=(h // grid, w // grid))
    return F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=align_corners)
