"""The Fusion contract: experts' feature maps in, visual tokens [B, T, C] out.

A fusion is built from the declared geometry of its inputs (one FeatureSpec per expert and
layer), so it states T and C before seeing data; the projector width and the LM sequence
length are derived from those. `forward` also receives an optional text context ([B, L, D]
embeddings and mask) for strategies whose gates read the question (MoVA)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from models.experts.base import ExpertOutput


@dataclass(frozen=True)
class FeatureSpec:
    """One expert layer as the fusion will receive it."""
    expert: str
    layer: int
    channels: int
    grid: tuple[int, int]
    resample: str = "bilinear"          # how to bring it onto a common grid
    thumbnail_grid: tuple[int, int] | None = None


@dataclass
class TextContext:
    embeddings: torch.Tensor   # [B, L, D] LM input embeddings of the prompt
    mask: torch.Tensor         # [B, L] 1 for real tokens


class Fusion(nn.Module, ABC):
    def __init__(self, inputs: list[FeatureSpec]):
        super().__init__()
        if not inputs:
            raise ValueError("a fusion needs at least one expert feature map")
        self.inputs = list(inputs)

    @property
    @abstractmethod
    def num_tokens(self) -> int: ...

    @property
    @abstractmethod
    def channels(self) -> int: ...

    @abstractmethod
    def fuse(self, maps: list[torch.Tensor], thumbs: list[torch.Tensor | None],
             text: TextContext | None) -> torch.Tensor:
        """maps[i] is [B, C_i, H_i, W_i] for self.inputs[i]; returns [B, T, C]."""

    def forward(self, outputs: dict[str, ExpertOutput], text: TextContext | None = None
                ) -> torch.Tensor:
        maps, thumbs = [], []
        for spec in self.inputs:
            out = outputs[spec.expert]
            maps.append(out.maps[spec.layer])
            thumbs.append(out.thumbnail[spec.layer] if out.thumbnail else None)
        tokens = self.fuse(maps, thumbs, text)
        if tokens.shape[1:] != (self.num_tokens, self.channels):
            raise RuntimeError(f"{type(self).__name__} produced {tuple(tokens.shape[1:])}, "
                               f"declared {(self.num_tokens, self.channels)}")
        return tokens

    def added_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
