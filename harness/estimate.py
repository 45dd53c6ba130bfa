"""What a run will cost, known before it runs: visual tokens, parameters and training compute,
from the architecture built on the meta device (no weights, no memory).

Training compute per sample is 3x the forward FLOPs of every trained part and 1x of the frozen
vision side; the vision side is counted by torch's FlopCounterMode on a meta batch, the
projector and LLM as 2 x parameters x tokens, with the text part of each sample taken as
TEXT_TOKENS (a nominal length, stated in the plan). `ablate plan` sums this over the stages
still to train, counting a stage shared by several runs once."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.config import RunConfig, StageConfig, architecture_dict, content_hash, trainable_lrs
from harness.modelbuild import build_architecture, solo_config
from models.llm import llm_config

TEXT_TOKENS = 64


@dataclass(frozen=True)
class ArchitectureCost:
    visual_tokens: int        # what the LM sees
    fused_tokens: int         # what the projector sees (more when it is downsampled after)
    vision_params: int        # experts + fusion
    vision_forward_flops: float
    projector_params: int | None
    llm_params: int | None    # None: the LLM's config is not available here


def _llm_shape(cfg: RunConfig) -> tuple[int | None, int | None]:
    hf = llm_config(cfg.model.llm)
    if hf is None:
        return None, None
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf)
    return sum(p.numel() for p in model.parameters()), hf.hidden_size


def _measure(cfg: RunConfig) -> ArchitectureCost:
    from models.projectors import build_projector
    experts, fusion = build_architecture(cfg.model, meta=True)
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter, torch.device("meta"):
            fusion.encode(experts, {name: torch.empty(1, 3, *e.input_size)
                                    for name, e in experts.items()})
        vision_flops = float(counter.get_total_flops())
    except RuntimeError:
        # a backend that reads a tensor's value on the way (transformers' Pix2Struct) cannot
        # run on meta: count its encoders as 2 x parameters x patch tokens instead
        vision_flops = float(sum(2 * sum(p.numel() for p in e.parameters())
                                 * math.prod(e.output_grid(e.layers[0]))
                                 for e in experts.values()))
    vision_params = sum(p.numel() for m in (*experts.values(), fusion) for p in m.parameters())
    llm_params, hidden = _llm_shape(cfg)
    projector_params = None
    if hidden is not None:
        with torch.device("meta"):
            projector = build_projector(cfg.model.projector, fusion.channels, hidden)
        projector_params = sum(p.numel() for p in projector.parameters())
    return ArchitectureCost(fusion.output_tokens, fusion.num_tokens, vision_params,
                            vision_flops,
                            projector_params, llm_params)


_MEASURED: dict[str, ArchitectureCost] = {}


def architecture_cost(cfg: RunConfig) -> ArchitectureCost:
    key = content_hash(architecture_dict(cfg.model))
    if key not in _MEASURED:
        _MEASURED[key] = _measure(cfg)
    return _MEASURED[key]


def stage_samples(cfg: RunConfig, stage: StageConfig) -> int | None:
    if stage.steps is not None:
        return stage.steps * stage.batch_size
    syn = cfg.data.synthetic
    if syn is not None:
        n = syn.captions if stage.data == "align" else \
            syn.train_per_skill * len(syn.skills) + syn.text_only
    else:
        ref = getattr(cfg.data, stage.data)
        if ref.samples is not None:
            n = ref.samples
        elif Path(ref.json).is_file():
            n = len(json.loads(Path(ref.json).read_text()))
        else:
            return None   # neither the file nor its stated size
    return int(stage.epochs * n)


def stage_flops(cfg: RunConfig, stage: StageConfig, expert: str | None = None
                ) -> float | None:
    """Training FLOPs of one stage (None when the LLM's size is unknown); of one expert's
    part of a per-expert stage when `expert` is given."""
    if expert is not None:
        lone = next(e for e in cfg.model.experts if e.key == expert)
        cfg = dataclasses.replace(cfg, model=solo_config(cfg.model, lone))
    cost = architecture_cost(cfg)
    samples = stage_samples(cfg, stage)
    if cost.llm_params is None or samples is None:
        return None
    trains = trainable_lrs(cfg.model.experts, stage)
    vision_factor = 3 if any(n.startswith("experts.") for n in trains) else 1
    tokens = cost.visual_tokens + TEXT_TOKENS
    per_sample = (vision_factor * cost.vision_forward_flops
                  + 3 * 2 * cost.projector_params * cost.fused_tokens
                  + 3 * 2 * cost.llm_params * tokens)
    return per_sample * samples
