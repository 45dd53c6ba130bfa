"""Frozen weights held in the stage's compute dtype while it trains.

Under autocast every Linear and Conv casts its weight (and bias) to the compute dtype (bf16 or
fp16) on each call, so a frozen one kept in fp32 spends twice the memory on digits the step
never reads. Holding it in the compute dtype instead changes no number of the step (tested:
the same trained weights, bit for bit) and halves what frozen experts occupy on the GPU
(Eagle X5's five encoders in its stage 1, a one-GPU LoRA run's fp32 LLM). Only those modules:
norms, embeddings, positional tables and whatever autocast computes in fp32 stay as loaded,
and so does a parameter one of them shares (a tied embedding). A model trained in place gets
its loaded weights back when the stage ends (evaluation runs outside autocast); a sharded
copy is dropped after its stage, so nothing is kept for it.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

import torch
from torch import nn

LOWERED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def lowerable(model: nn.Module) -> list[nn.Parameter]:
    """The frozen fp32 parameters of Linear and Conv modules that no other module uses."""
    elsewhere = {id(p) for m in model.modules() if not isinstance(m, LOWERED)
                 for p in m.parameters(recurse=False)}
    found, seen = [], set()
    for module in model.modules():
        if not isinstance(module, LOWERED):
            continue
        params = list(module.parameters(recurse=False))
        if any(p.requires_grad for p in params):
            continue   # a module that trains keeps its fp32 master weights together
        for p in params:
            if p.dtype == torch.float32 and id(p) not in elsewhere and id(p) not in seen:
                seen.add(id(p))
                found.append(p)
    return found


def frozen_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes the model's frozen parameters occupy, by dtype (what the stage log records)."""
    held: Counter[str] = Counter()
    for p in model.parameters():
        if not p.requires_grad:
            held[str(p.dtype).removeprefix("torch.")] += p.numel() * p.element_size()
    return dict(held)


@contextlib.contextmanager
def held_in(model: nn.Module, dtype: torch.dtype, restore: bool) -> Iterator[None]:
    """Within the block, `lowerable(model)` holds `dtype` copies; with `restore`, the loaded
    weights (kept in host memory meanwhile) come back at the end, on their device."""
    saved = []
    for p in lowerable(model):
        if restore:
            saved.append((p, p.data.to("cpu"), p.device))
        p.data = p.data.to(dtype)
    try:
        yield
    finally:
        for p, loaded, device in saved:
            p.data = loaded.to(device)
