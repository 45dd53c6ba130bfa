"""What a run costs, recorded next to what it scores: parameters (total and trainable, per
module), visual tokens, forward FLOPs per sample (counted by torch's FlopCounterMode on a
real batch of one), step time and peak memory."""
from __future__ import annotations

import resource
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.multimodal import MultimodalLM


def parameter_counts(model: MultimodalLM) -> dict[str, dict[str, int]]:
    modules = {f"experts.{n}": e for n, e in model.experts.items()}
    modules.update(fusion=model.fusion, projector=model.projector, llm=model.llm)
    return {name: {"total": sum(p.numel() for p in m.parameters()),
                   "trainable": sum(p.numel() for p in m.parameters() if p.requires_grad)}
            for name, m in modules.items()}


def forward_flops(model: MultimodalLM, batch: dict) -> int:
    """FLOPs of one training forward on `batch` (pass a batch of one for per-sample cost)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(**batch)
    return int(counter.get_total_flops())


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
