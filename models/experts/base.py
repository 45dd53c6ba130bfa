"""The VisionExpert contract every encoder family implements.

An expert takes images already preprocessed for it (its own input size, mean and std), returns
one feature map per requested layer as [B, C, H, W], and declares its channels and grid up
front so fusion widths are derived, not hard-coded. It asserts its effective input resolution
at run time: a model configured for 448 px that silently ran at 336 is the bug this prevents.

Layer indices follow Hugging Face's `hidden_states`: 0 is the patch-embedding output, k is the
output of block k (ViTs) or stage k (ConvNets), negatives count from the end. Papers that count
the patch embedding as layer 1 (Dense Connector) mean index k-1 by their "layer k".
"""
from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from core.contained import SAFE_NAME
from core.fields import ranged
from core.identity import ADDED_OPTION
from models.experts.pixels import PixelRecipe


@dataclass(frozen=True)
class TilingConfig:
    """Split the image into rows x cols tiles at the expert's resolution, optional thumbnail."""
    rows: int = ranged(2, ge=1)
    cols: int = ranged(2, ge=1)
    thumbnail: bool = False


@dataclass(frozen=True)
class InputView:
    """A controlled restriction of what an expert sees, applied by the preprocessing before
    the resize to the expert's input: for known-answer experiments (an expert that cannot see
    colour, fine detail or part of the field) and input ablations.

    crop: [left, top, right, bottom] as fractions, applied first; color: rgb | gray
    (luminance) | silhouette (ink vs. paper: luminance below `threshold` is black, the rest
    white); pixels: then shrink the image to this side and back (box filter), so detail finer
    than image/pixels is gone."""
    color: Literal["rgb", "gray", "silhouette"] = "rgb"
    pixels: int | None = ranged(None, ge=1)
    crop: list[float] | None = None
    threshold: int = ranged(210, ge=0, le=255)

    def __post_init__(self):
        if self.crop is not None and (len(self.crop) != 4 or not
                                      0 <= self.crop[0] < self.crop[2] <= 1 or not
                                      0 <= self.crop[1] < self.crop[3] <= 1):
            raise ValueError("view.crop must be [left, top, right, bottom] fractions with "
                             "0 <= left < right <= 1 and 0 <= top < bottom <= 1")


@dataclass(frozen=True)
class StandIn:
    """Build the preset's own architecture at a small width instead of its published one,
    random-init: the same backend class, depth, patch or stride and layer indices, with the
    native input side `resolution` (so position embeddings, windows and grids scale with it).
    What `ablate rehearse` runs in place of a full-size expert on a CPU."""
    resolution: int
    width: int = 32

    def __post_init__(self):
        if self.resolution < 1 or self.width < 16 or self.width % 16:
            raise ValueError("stand_in needs resolution >= 1 and a width that is a positive "
                             "multiple of 16 (heads of 16 channels)")

    @property
    def heads(self) -> int:
        return self.width // 16




@dataclass(frozen=True)
class ExpertConfig:
    """Typed constructor arguments of any vision expert.

    id: the family in the expert registry; preset: a named architecture of that family
    ("tiny" is the random-init CPU stand-in); pretrained: hub id or local path in the family's
    own format (None = random init); resolution: input side in pixels (None = the preset's own);
    wrapper: a paper's encoder wrapper on top of the library (None = the library's own).
    """
    id: str
    preset: str = "tiny"
    # names its per-expert stage folder and its `experts.NAME` module group
    name: str | None = ranged(None, pattern=SAFE_NAME)
    pretrained: str | None = None
    resolution: int | None = ranged(None, ge=1)
    # the hub commit `pretrained` is pinned to (written by `ablate fetch`'s lock; models.hub)
    revision: str | None = field(default=None, metadata=ADDED_OPTION)
    layers: list[int] = ranged(default_factory=lambda: [-1], min_items=1)
    freeze: bool = True
    lr: float | None = ranged(None, gt=0)
    resample: Literal["bilinear", "unshuffle", "avgpool"] = "bilinear"
    tiling: TilingConfig | None = None
    view: InputView | None = field(default=None, metadata=ADDED_OPTION)
    stand_in: StandIn | None = field(default=None, metadata=ADDED_OPTION)
    # what a paper's released encoder wrapper changes on top of the library (models.experts
    # .wrappers.WRAPPERS: e.g. "eagle"); None = the library's own model and processor
    wrapper: str | None = field(default=None, metadata=ADDED_OPTION)

    @property
    def key(self) -> str:
        return self.name or self.id


@dataclass
class ExpertOutput:
    """Per-layer maps [B, C, H, W] (tiles stitched), and the thumbnail's maps when tiled."""
    maps: dict[int, torch.Tensor]
    thumbnail: dict[int, torch.Tensor] | None = None


class VisionExpert(nn.Module, ABC):
    """Base class: resolution bookkeeping, tiling, layer validation and run-time assertions.

    Subclasses build the backend model in __init__ and implement `_maps(pixels)` for one
    un-tiled batch at `self.resolution`, plus `layer_channels`, `layer_grid` and `depth`.
    """

    min_index = 1  # the lowest hidden-state index the backend exposes

    def __init__(self, config: ExpertConfig, resolution: int):
        super().__init__()
        self.config = config
        self.resolution = resolution
        self.layers = [self.resolve_index(i) for i in config.layers]

    # --- pixels --------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def pixel_recipe(cls, config: ExpertConfig) -> PixelRecipe:
        """The pixels this family's library feeds the checkpoint `config` names (mean, std,
        resize, crop: models.experts.pixels), read from its configuration without building
        the network."""

    @functools.cached_property
    def pixels(self) -> PixelRecipe:
        return self.pixel_recipe(self.config)

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.pixels.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.pixels.std

    # --- declared geometry -------------------------------------------------------------
    @property
    @abstractmethod
    def depth(self) -> int:
        """Number of blocks (ViT) or stages (ConvNet): the largest hidden-state index."""

    @abstractmethod
    def layer_channels(self, index: int) -> int: ...

    @abstractmethod
    def layer_grid(self, index: int) -> tuple[int, int]:
        """Feature grid (H, W) of one tile at `self.resolution` for hidden-state `index`."""

    @abstractmethod
    def _maps(self, pixels: torch.Tensor) -> dict[int, torch.Tensor]:
        """Backend forward on [b, 3, res, res] -> {index: [b, C, H, W]} for self.layers."""

    def use_layers(self, layers: list[int]) -> None:
        """Serve these hidden states instead of the configured ones (a fusion asked)."""
        self.layers = [self.resolve_index(i) for i in layers]

    def resolve_index(self, index: int) -> int:
        resolved = index + self.depth + 1 if index < 0 else index
        if not self.min_index <= resolved <= self.depth:
            lowest = self.min_index - self.depth - 1
            raise ValueError(
                f"expert '{self.config.key}': layer index {index} is outside "
                f"{type(self).__name__}'s hidden states: "
                f"allowed {self.min_index}..{self.depth} or {lowest}..-1 "
                f"(0 = patch embedding, k = block/stage k)")
        return resolved

    @property
    def input_size(self) -> tuple[int, int]:
        t = self.config.tiling
        return (self.resolution * t.rows, self.resolution * t.cols) if t else (
            self.resolution, self.resolution)

    def output_grid(self, index: int) -> tuple[int, int]:
        h, w = self.layer_grid(index)
        t = self.config.tiling
        return (h * t.rows, w * t.cols) if t else (h, w)

    def output_channels(self) -> dict[int, int]:
        return {i: self.layer_channels(i) for i in self.layers}

    # --- forward -------------------------------------------------------------------------
    def forward(self, pixels: torch.Tensor) -> ExpertOutput:
        expected = self.input_size
        if tuple(pixels.shape[-2:]) != expected:
            raise RuntimeError(
                f"expert '{self.config.key}' expects {expected[0]}x{expected[1]} input "
                f"(resolution {self.resolution}, tiling {self.config.tiling}), got "
                f"{tuple(pixels.shape[-2:])}")
        t = self.config.tiling
        if t is None:
            maps = self._checked(self._maps(pixels))
            return ExpertOutput(maps)
        b, r = pixels.shape[0], self.resolution
        tiles = pixels.unfold(2, r, r).unfold(3, r, r)  # [B, 3, rows, cols, r, r]
        tiles = tiles.permute(0, 2, 3, 1, 4, 5).reshape(b * t.rows * t.cols, 3, r, r)
        stitched = {}
        for i, m in self._checked(self._maps(tiles)).items():
            c, h, w = m.shape[1:]
            m = m.reshape(b, t.rows, t.cols, c, h, w).permute(0, 3, 1, 4, 2, 5)
            stitched[i] = m.reshape(b, c, t.rows * h, t.cols * w)
        thumb = None
        if t.thumbnail:
            small = F.interpolate(pixels, size=(r, r), mode="bilinear", antialias=True,
                                  align_corners=False)
            thumb = self._checked(self._maps(small))
        return ExpertOutput(stitched, thumb)

    def _checked(self, maps: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        for i in self.layers:
            got = tuple(maps[i].shape[1:])
            want = (self.layer_channels(i), *self.layer_grid(i))
            if got != want:
                raise RuntimeError(f"expert '{self.config.key}' layer {i} produced {got}, "
                                   f"declared {want}")
        return maps

    # --- activation checkpointing ---------------------------------------------------------
    @abstractmethod
    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute each block's activations in backward instead of keeping them (a trained
        tower at high resolution: ConvNeXt-XXL at 1024 px keeps about 7.5 GiB per image
        otherwise), through the backend library's own switch."""

    @abstractmethod
    def checkpoint_units(self) -> list[nn.Module]:
        """The blocks that switch checkpoints one by one: with it on, a block keeps only its
        input until backward recomputes it (what `ablate plan` counts)."""

    def freeze_(self, frozen: bool) -> None:
        for p in self.parameters():
            p.requires_grad_(not frozen)


class BlockwiseViT(ABC):
    """A ViT that can be run one block at a time. Fusions that act *between* blocks need it
    (LLaVA-HR's MR-adapter adds the high-resolution path into the token stream after blocks
    L/4, L/2 and 3L/4, and later blocks must see that), and it gives hidden state 0 (the
    embeddings after any pre-norm) to fusions that average every layer (Dense Connector)."""

    prefix_tokens: int   # class/register tokens in front of the patch tokens
    checkpoint_blocks = False   # recompute each block in backward (blockwise_maps honours it)

    @abstractmethod
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, res, res] -> hidden state 0: [B, prefix + H*W, C]."""

    @abstractmethod
    def block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """Apply block `index` (1-based): hidden state index-1 -> hidden state index."""

    def patch_map(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[B, prefix + H*W, C] -> [B, C, H, W] (prefix tokens dropped)."""
        patches = tokens[:, self.prefix_tokens:]
        return patches.transpose(1, 2).reshape(patches.shape[0], -1, *grid)

    def blockwise_maps(self, pixels: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
        """The requested hidden states as maps, running only the blocks they need."""
        grid = self.layer_grid(0)
        tokens = self.embed(pixels)
        maps = {0: self.patch_map(tokens, grid)} if 0 in layers else {}
        for k in range(1, max(layers) + 1):
            if self.checkpoint_blocks and torch.is_grad_enabled():
                tokens = checkpoint(self.block, k, tokens, use_reentrant=False)
            else:
                tokens = self.block(k, tokens)
            if k in layers:
                maps[k] = self.patch_map(tokens, grid)
        return maps

