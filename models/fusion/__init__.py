"""Fusion strategies by id. Each entry is a Fusion subclass with a typed `Options` dataclass;
`build_fusion(id, inputs, options)` is the only entry point."""
from __future__ import annotations

from typing import Any

from models.fusion.base import FeatureSpec, Fusion, TextContext
from models.fusion.concat import ChannelConcat, SequenceAppend
from models.registry import Registry

FUSIONS: Registry[type[Fusion]] = Registry("fusion")
FUSIONS.register("channel_concat", "experts on a common grid, concatenated on channels")(
    ChannelConcat)
FUSIONS.register("sequence_append", "experts' tokens appended along the sequence")(
    SequenceAppend)


def build_fusion(fusion_id: str, inputs: list[FeatureSpec], options: Any = None) -> Fusion:
    cls = FUSIONS.get(fusion_id)
    return cls(inputs, options if options is not None else cls.Options())


__all__ = ["FUSIONS", "FeatureSpec", "Fusion", "TextContext", "build_fusion"]
