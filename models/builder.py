"""Assembling a MultimodalLM from a ModelConfig (models.model_config) through the registries, as
timm's create_model builds a network from its name: `build_model` for a whole model,
`build_architecture` for its experts and fusion alone, which on the meta device validates a
config without reading any weights."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from models.experts import ExpertConfig, VisionExpert, build_expert
from models.experts.base import BlockwiseViT
from models.fusion import FUSIONS, BuildContext, FeatureSpec, Fusion, build_fusion
from models.hub import pinned_expert, pinned_llm
from models.llm import LoadedLLM, llm_hidden_size, load_llm
from models.model_config import ModelConfig, solo_config
from models.multimodal import MultimodalLM
from models.projectors import build_projector


class ExpertBuildError(ValueError):
    """An expert's config cannot be built; `expert` names which (several may share a family)."""

    def __init__(self, expert: str, message: str):
        super().__init__(message)
        self.expert = expert


def feature_specs(experts: dict[str, VisionExpert]) -> list[FeatureSpec]:
    specs = []
    for name, expert in experts.items():
        for layer in expert.layers:
            thumb = expert.layer_grid(layer) if (expert.config.tiling and
                                                expert.config.tiling.thumbnail) else None
            specs.append(FeatureSpec(name, layer, expert.layer_channels(layer),
                                     expert.output_grid(layer), expert.config.resample, thumb))
    return specs


# On the meta device an LM whose config cannot be read (no hub) still validates: the text
# width only sizes gate weights, never a shape the checks depend on.
_PLACEHOLDER_TEXT_WIDTH = 8


def build_architecture(model_cfg: ModelConfig, meta: bool = False,
                       text_width: int | None = None, read_files: bool = True
                       ) -> tuple[dict[str, VisionExpert], Fusion]:
    """Experts and fusion. On meta, pretrained weights are not touched: only geometry;
    read_files false (planning without the data) lets a fusion skip its option files."""
    device = torch.device("meta") if meta else torch.empty(0).device
    fusion_cls = FUSIONS.get(model_cfg.fusion.id)
    options = model_cfg.fusion.options
    options = options if options is not None else fusion_cls.Options()
    if text_width is None:
        text_width = llm_hidden_size(model_cfg.llm) or (_PLACEHOLDER_TEXT_WIDTH if meta else None)
    with device:
        experts = {}
        for cfg in model_cfg.experts:
            if meta:
                cfg = dataclasses.replace(cfg, pretrained=None)
            else:
                cfg = pinned_expert(cfg)
            try:
                experts[cfg.key] = build_expert(cfg)
            except ValueError as exc:
                raise ExpertBuildError(cfg.key, str(exc)) from None
        for name, layers in fusion_cls.requested_layers(options, experts).items():
            experts[name].use_layers(layers)
        context = BuildContext(text_width, {n: e.depth for n, e in experts.items()},
                               frozenset(n for n, e in experts.items()
                                         if isinstance(e, BlockwiseViT)), read_files)
        fusion = build_fusion(model_cfg.fusion.id, feature_specs(experts), options, context)
    return experts, fusion


def build_solo(model_cfg: ModelConfig, expert_cfg: ExpertConfig, seed: int,
               llm: LoadedLLM) -> MultimodalLM:
    """solo_config's model, initialised from the seed alone, sharing `llm`'s (frozen) module."""
    return assemble(solo_config(model_cfg, expert_cfg), seed, llm)


def assemble(model_cfg: ModelConfig, seed: int, llm: LoadedLLM) -> MultimodalLM:
    """Experts, fusion and projector initialised from the seed, around `llm`'s module."""
    hidden = llm.model.config.hidden_size
    torch.manual_seed(seed)
    experts, fusion = build_architecture(model_cfg, text_width=hidden)
    projector = build_projector(model_cfg.projector, fusion.channels, hidden)
    # the adapter of the fusion's pass before answering (MoVA's routing LoRA), seeded with
    # the rest
    router = fusion.pass_adapter(llm.model)
    return MultimodalLM(experts, fusion, projector, llm.model,
                        pad_token_id=llm.tokenizer.pad_token_id,
                        max_length=model_cfg.max_length, router=router)


def build_model(model_cfg: ModelConfig, seed: int, cache_dir: Path, corpus: list[str]
                ) -> tuple[MultimodalLM, LoadedLLM]:
    """Deterministic given the seed: experts, fusion and projector are initialised from it;
    the LM comes from its own (pretrained or fixed-seed) weights. `corpus` is the text a
    locally trained tokenizer learns (a tiny LLM's): the data's, plus the fusion's own
    (`Fusion.text_corpus`: an LLM router's questions and answers), which the caller adds."""
    llm = load_llm(pinned_llm(model_cfg.llm), cache_dir, corpus)
    return assemble(model_cfg, seed, llm), llm
