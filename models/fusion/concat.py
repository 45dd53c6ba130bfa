"""The two fusions every mixture-of-encoders paper starts from (Eagle Sec. 3.3):
channel concatenation on a common grid, and sequence append."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.fields import grid_side, ranged
from models.fusion.base import BuildContext, FeatureSpec, Fusion, TextContext
from models.fusion.resample import resample, resampled_channels


@dataclass(frozen=True)
class ChannelConcatOptions:
    """grid: the common grid side (None: the first input's). align_corners: a bilinear
    resize onto it maps corner to corner, as Eagle's encoder resizes
    (F.interpolate(..., mode="bilinear", align_corners=True)); false resizes by pixel
    centres (align_corners=False)."""
    grid: int | None = grid_side(None, ge=1)
    align_corners: bool = True


class ChannelConcat(Fusion):
    """Every map onto a grid x grid by its expert's resample method, concatenated on channels:
    T = grid^2, C = sum of (resampled) channels. Eagle's best fusion."""

    Options = ChannelConcatOptions

    def __init__(self, inputs: list[FeatureSpec], options: ChannelConcatOptions,
                 context: BuildContext | None = None):
        super().__init__(inputs)
        for spec in inputs:
            if spec.thumbnail_grid is not None:
                raise ValueError(f"channel_concat cannot place expert '{spec.expert}''s tiling "
                                 f"thumbnail on the grid; use sequence_append, or tiling "
                                 f"without a thumbnail")
        self.grid = options.grid or inputs[0].grid[0]
        self.align_corners = options.align_corners
        self._channels = sum(resampled_channels(s, self.grid) for s in inputs)

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def channels(self) -> int:
        return self._channels

    def fuse(self, maps, thumbs, text: TextContext | None = None):
        fused = torch.cat([resample(m, s.resample, self.grid, self.align_corners)
                           for m, s in zip(maps, self.inputs)], dim=1)
        return fused.flatten(2).transpose(1, 2)


@dataclass(frozen=True)
class SequenceAppendOptions:
    width: int | None = ranged(None, ge=1)   # common token width; None = the widest input
    grid: int | None = grid_side(None, ge=1)    # optional common grid per input; None: own


class SequenceAppend(Fusion):
    """Each map flattened to tokens and appended along the sequence (thumbnails too). Inputs
    narrower than `width` get a linear map to it, so T = sum of grids and C = width."""

    Options = SequenceAppendOptions

    def __init__(self, inputs: list[FeatureSpec], options: SequenceAppendOptions,
                 context: BuildContext | None = None):
        super().__init__(inputs)
        self.grid = options.grid
        self.width = options.width or max(resampled_channels(s, self.grid) if self.grid
                                          else s.channels for s in inputs)
        self.adapters = nn.ModuleList()
        self._tokens = 0
        for s in inputs:
            c = resampled_channels(s, self.grid) if self.grid else s.channels
            self.adapters.append(nn.Identity() if c == self.width else nn.Linear(c, self.width))
            h, w = (self.grid, self.grid) if self.grid else s.grid
            self._tokens += h * w
            if s.thumbnail_grid:
                self._tokens += (self.grid ** 2 if self.grid
                                 else s.thumbnail_grid[0] * s.thumbnail_grid[1])

    @property
    def num_tokens(self) -> int:
        return self._tokens

    @property
    def channels(self) -> int:
        return self.width

    def fuse(self, maps, thumbs, text: TextContext | None = None):
        parts = []
        for m, t, s, adapter in zip(maps, thumbs, self.inputs, self.adapters):
            for x in (m, t):
                if x is None:
                    continue
                if self.grid:
                    x = resample(x, s.resample, self.grid)
                parts.append(adapter(x.flatten(2).transpose(1, 2)))
        return torch.cat(parts, dim=1)
