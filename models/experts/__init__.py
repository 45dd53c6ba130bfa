"""The expert zoo: one registry entry per vision-encoder family, each loaded through the
library its users load it with. `build_expert(ExpertConfig)` is the only entry point."""
from __future__ import annotations

from collections.abc import Callable

from core.registry import Registry
from models.experts.base import (
    ADDED_OPTION,
    ExpertConfig,
    ExpertOutput,
    InputView,
    TilingConfig,
    VisionExpert,
)
from models.experts.hf_backend import HFCLIP, HFSAM, HFDINOv2, HFPix2Struct, HFSigLIP
from models.experts.open_clip_backend import OpenClipConvNeXt, OpenClipViT
from models.experts.timm_backend import TimmConvNeXt, TimmEVA02
from models.experts.wrappers import WRAPPERS, wrapped_class

EXPERTS: Registry[Callable[[ExpertConfig], VisionExpert]] = Registry("expert")

for _id, _cls, _summary in [
    ("clip-vit", OpenClipViT, "CLIP ViT via open_clip (ViT-L/14-336, ...)"),
    ("clip-vit-hf", HFCLIP, "CLIP ViT via transformers CLIPVisionModel"),
    ("clip-convnext", OpenClipConvNeXt, "CLIP-ConvNeXt via open_clip (ConvNeXt-XXL, Eagle)"),
    ("convnext", TimmConvNeXt, "ConvNeXt via timm (ConvNeXt-XXL, LLaVA-HR)"),
    ("eva02", TimmEVA02, "EVA-02 via timm; STAND-IN for Eagle's EVA-02-L: timm's global-"
     "attention eva02_large_patch14_448 (patch embed resampled to 16) where Eagle runs a "
     "ViTDet-style EVA-02-L/16 with 16x16 windowed attention in 16 of 24 blocks and the COCO "
     "detection weights (eva_vit.py:1160-1182); see docs/papers.md"),
    ("sam", HFSAM, "SAM image encoder via transformers (neck output, Eagle/MoVA)"),
    ("pix2struct", HFPix2Struct, "Pix2Struct encoder via transformers (flattened patches)"),
    ("dinov2", HFDINOv2, "DINOv2 via transformers"),
    ("siglip", HFSigLIP, "SigLIP vision tower via transformers"),
]:
    EXPERTS.register(_id, _summary)(_cls)


def build_expert(config: ExpertConfig) -> VisionExpert:
    family = EXPERTS.get(config.id)   # an unknown family fails before its wrapper is looked up
    expert = (wrapped_class(config) or family)(config)
    expert.freeze_(config.freeze)
    return expert


def presets_of(family: str) -> list[str]:
    return list(EXPERTS.get(family).presets)


__all__ = ["ADDED_OPTION", "EXPERTS", "ExpertConfig", "ExpertOutput", "InputView",
           "TilingConfig", "VisionExpert", "WRAPPERS", "build_expert", "presets_of"]
