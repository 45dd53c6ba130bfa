"""Dense Connector (Yao et al., 2024, "Dense Connector for MLLMs"): one ViT's final-layer
tokens enriched with its shallower layers, three ways.

- STI (sparse token integration): each selected layer's tokens are 1-D average-pooled over
  the sequence with kernel = stride = alpha and appended after the final layer's tokens.
- SCI (sparse channel integration): the selected layers are concatenated with the final layer
  on channels.
- DCI (dense channel integration): layers 1..final are split into G contiguous groups, each
  group averaged, and the G means concatenated with the final layer on channels.

Layer numbers are the paper's: it counts the patch embedding as layer 1, so paper layer k is
hidden-state index k-1 (index 0 = embeddings, index k = block k). With CLIP ViT-L/14 (24
blocks) the paper's final layer 24 is hidden state 23, LLaVA's penultimate `-2`; its "layers
8, 16" are hidden states 7 and 15; DCI's two groups are hidden states 0-11 and 12-23.

`learned: true` gives the parameterized variants of the paper's Table 6: a 1-D conv (kernel =
stride = alpha, one per selected layer) instead of STI's average pooling, a 3x3 conv shared by
the selected layers before SCI's concatenation, and a LayerNorm per layer followed by one
shared Linear before DCI's group means. `downsample: 12` is Efficient DC: the projected
tokens are bilinearly resized on their 2-D grid (576 -> 144 for a 24x24 grid)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from core.fields import grid_side, ranged
from models.experts.base import VisionExpert
from models.fusion.base import BuildContext, FeatureSpec, Fusion, FusionOptionError


@dataclass(frozen=True)
class DenseConnectorOptions:
    mode: Literal["sti", "sci", "dci"] = "sci"
    layers: list[int] = ranged(default_factory=lambda: [8, 16], ge=1)  # paper numbering
    groups: int = ranged(2, ge=1)           # dci
    final: int | None = ranged(None, ge=1)  # paper numbering; None = the expert's depth
    alpha: int = ranged(8, ge=1)            # sti: pooling kernel and stride
    learned: bool = False                   # Table 6's parameterized variants
    downsample: int | None = grid_side(None, ge=1)  # Efficient DC: grid side of the output
    # dci: the groups split paper layers 1..groups_up_to (None: 1..final). The official code
    # on SigLIP-so400m drops its last block, takes hidden state 26 (final: 27) and averages
    # layers 1-13 and 14-26 (hidden 0-12, 13-25): groups_up_to: 26
    groups_up_to: int | None = ranged(None, ge=1, metadata={"omit_if_default": True})


def paper_to_index(layer: int) -> int:
    """The paper's layer k (1 = patch embedding) is hidden-state index k - 1."""
    return layer - 1


class DenseConnector(Fusion):
    Options = DenseConnectorOptions

    @staticmethod
    def plan(options: DenseConnectorOptions, depth: int) -> tuple[int, list[list[int]]]:
        """(final index, [selected index groups]) for an expert with hidden states 0..depth:
        one group per selected layer for STI/SCI, G contiguous groups for DCI."""
        top = depth + 1   # the paper's numbering runs 1..depth+1
        final = options.final if options.final is not None else depth
        if not 1 <= final <= top:
            raise FusionOptionError("final", f"dense_connector: final layer {final} is outside "
                                    f"the expert's layers 1..{top} (paper numbering: 1 = patch "
                                    f"embedding)")
        if options.mode == "dci":
            span = options.groups_up_to if options.groups_up_to is not None else final
            if not 1 <= span <= final:
                raise FusionOptionError("groups_up_to", f"dense_connector: groups_up_to {span} "
                                        f"is outside the layers 1..{final} below the final one")
            if options.groups < 1 or span % options.groups:
                raise FusionOptionError("groups", f"dense_connector: {options.groups} DCI groups "
                                        f"do not divide the {span} layers 1..{span}; allowed: "
                                        + ", ".join(str(g) for g in range(1, span + 1)
                                                    if span % g == 0)
                                        + " (or set groups_up_to)")
            size = span // options.groups
            groups = [[paper_to_index(k) for k in range(g * size + 1, (g + 1) * size + 1)]
                      for g in range(options.groups)]
            return paper_to_index(final), groups
        if not options.layers:
            raise FusionOptionError("layers", "dense_connector: STI and SCI need at least one "
                                    "selected layer")
        for k in options.layers:
            if not 1 <= k < final:
                raise FusionOptionError("layers", f"dense_connector: layer {k} is not below the "
                                        f"final layer {final}; allowed: 1..{final - 1} (paper "
                                        f"numbering: 1 = patch embedding)")
        return paper_to_index(final), [[paper_to_index(k)] for k in options.layers]

    @classmethod
    def requested_layers(cls, options: DenseConnectorOptions,
                         experts: Mapping[str, VisionExpert]) -> dict[str, list[int]]:
        if len(experts) != 1:
            raise FusionOptionError("", f"dense_connector reads the layers of one ViT expert; "
                                    f"the model has {len(experts)}: {', '.join(experts)}")
        (name, expert), = experts.items()
        if options.alpha < 1:
            raise FusionOptionError("alpha", "dense_connector: alpha must be >= 1")
        final, groups = cls.plan(options, expert.depth)
        needed = sorted({final, *(i for g in groups for i in g)})
        if needed[0] < expert.min_index:
            raise FusionOptionError("mode", f"dense_connector {options.mode} needs hidden state "
                                    f"{needed[0]} (paper layer {needed[0] + 1}), which expert "
                                    f"'{name}' does not expose (lowest: {expert.min_index})")
        return {name: needed}

    def __init__(self, inputs: list[FeatureSpec], options: DenseConnectorOptions,
                 context: BuildContext | None = None):
        super().__init__(inputs)
        context = context or BuildContext()
        by_layer = {s.layer: s for s in inputs}
        depth = context.depths.get(inputs[0].expert, max(by_layer))
        self.options = options
        self.final, self.groups = self.plan(options, depth)
        missing = {self.final, *(i for g in self.groups for i in g)} - set(by_layer)
        if missing:
            raise ValueError(f"dense_connector: inputs lack hidden states {sorted(missing)}")
        spec = by_layer[self.final]
        self.width, self.grid = spec.channels, spec.grid
        self.position = {layer: i for i, layer in enumerate(s.layer for s in inputs)}
        n = self.grid[0] * self.grid[1]
        c = self.width
        if options.mode == "sti":
            self._tokens, self._channels = n + len(self.groups) * (n // options.alpha), c
            if n // options.alpha < 1:
                raise FusionOptionError("alpha", f"dense_connector: alpha {options.alpha} pools "
                                        f"the {n} tokens to nothing")
        else:
            self._tokens, self._channels = n, c * (1 + len(self.groups))
        if options.learned:
            if options.mode == "sti":
                self.pools = nn.ModuleList(nn.Conv1d(c, c, options.alpha, stride=options.alpha)
                                           for _ in self.groups)
            elif options.mode == "sci":
                self.shared_conv = nn.Conv2d(c, c, 3, padding=1)
            else:
                self.norms = nn.ModuleDict({str(i): nn.LayerNorm(c)
                                            for g in self.groups for i in g})
                self.shared_linear = nn.Linear(c, c)
        if options.downsample is not None:
            side = math.isqrt(self._tokens)
            if options.mode == "sti" or side * side != self._tokens:
                raise FusionOptionError("downsample", "dense_connector: Efficient DC resizes a "
                                        "square token grid; use it with sci or dci")
            if not 1 <= options.downsample <= side:
                raise FusionOptionError("downsample", f"dense_connector: downsample grid must be "
                                        f"1..{side}, got {options.downsample}")

    @property
    def num_tokens(self) -> int:
        return self._tokens

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def output_tokens(self) -> int:
        d = self.options.downsample
        return d * d if d is not None else self._tokens

    def _tokens_of(self, maps, layer: int) -> torch.Tensor:
        return maps[self.position[layer]].flatten(2).transpose(1, 2)   # [B, N, C]

    def fuse(self, maps, thumbs, text=None):
        final = self._tokens_of(maps, self.final)
        mode, learned = self.options.mode, self.options.learned
        if mode == "sti":
            parts = [final]
            for g, (layer,) in enumerate(self.groups):
                seq = self._tokens_of(maps, layer).transpose(1, 2)       # [B, C, N]
                pooled = (self.pools[g](seq) if learned else
                          F.avg_pool1d(seq, self.options.alpha, self.options.alpha))
                parts.append(pooled.transpose(1, 2))
            return torch.cat(parts, dim=1)
        if mode == "sci":
            parts = []
            for (layer,) in self.groups:
                m = maps[self.position[layer]]
                if learned:
                    m = self.shared_conv(m)
                parts.append(m.flatten(2).transpose(1, 2))
            return torch.cat([final, *parts], dim=-1)
        means = []
        for group in self.groups:
            members = [self._tokens_of(maps, i) for i in group]
            if learned:
                members = [self.shared_linear(self.norms[str(i)](t))
                           for i, t in zip(group, members)]
            means.append(torch.stack(members).mean(0))
        return torch.cat([final, *means], dim=-1)

    def after_projector(self, tokens):
        side = self.options.downsample
        if side is None:
            return tokens
        b, n, d = tokens.shape
        grid = math.isqrt(n)
        image = tokens.transpose(1, 2).reshape(b, d, grid, grid)
        small = F.interpolate(image, size=(side, side), mode="bilinear", align_corners=False)
        return small.flatten(2).transpose(1, 2)
