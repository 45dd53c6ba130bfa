"""Fusion strategies by id. Each entry is a Fusion subclass with a typed `Options` dataclass,
which the registry knows (a choice registry: a config's fusion id picks its options' type);
`build_fusion(id, inputs, options)` is the only entry point."""
from __future__ import annotations

from typing import Any

from core.registry import ChoiceRegistry
from models.fusion.base import BuildContext, FeatureSpec, Fusion, FusionOptionError, TextContext
from models.fusion.concat import ChannelConcat, SequenceAppend
from models.fusion.dense_connector import DenseConnector
from models.fusion.mini_gemini import DeformableMining, PatchInfoMining
from models.fusion.mova import MoVAAdapter
from models.fusion.mr_adapter import MRAdapter

FUSIONS: ChoiceRegistry[type[Fusion]] = ChoiceRegistry("fusion", lambda fusion: fusion.Options)
FUSIONS.register("channel_concat", "experts on a common grid, concatenated on channels")(
    ChannelConcat)
FUSIONS.register("sequence_append", "experts' tokens appended along the sequence")(
    SequenceAppend)
FUSIONS.register("dense_connector", "Dense Connector STI/SCI/DCI over one ViT's layers, "
                 "learned variants, Efficient DC")(DenseConnector)
FUSIONS.register("patch_info_mining", "Mini-Gemini: low-res queries attend to the high-res "
                 "window under them")(PatchInfoMining)
FUSIONS.register("deformable_mining", "Mini-Gemini variant: queries sample learned offsets "
                 "around their reference point")(DeformableMining)
FUSIONS.register("mr_adapter", "LLaVA-HR: a high-res ConvNet path injected into a ViT "
                 "between its blocks")(MRAdapter)
FUSIONS.register("mova", "MoVA's MoV-Adapter: routed experts into the base tokens through "
                 "gated cross-attention")(MoVAAdapter)


def build_fusion(fusion_id: str, inputs: list[FeatureSpec], options: Any = None,
                 context: BuildContext | None = None) -> Fusion:
    cls = FUSIONS.get(fusion_id)
    return cls(inputs, options if options is not None else cls.Options(),
               context or BuildContext())


__all__ = ["FUSIONS", "BuildContext", "FeatureSpec", "Fusion", "FusionOptionError", "TextContext",
           "build_fusion"]
