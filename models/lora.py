"""LoRA adapters on an LLM's linear layers, through peft, for one training stage: added before
the stage trains (only they, and whatever else the stage lists, are trainable), then folded
into the base weights when the stage ends, so every later stage, evaluation and export sees
the plain model with its usual parameter names.

peft's `inject_adapter_in_model` puts a LoRA layer in place of each targeted linear layer
(its weight becomes `...q_proj.base_layer.weight`, the adapter `...q_proj.lora_A.default.
weight`); `fold` merges the adapter (W += B A * alpha / rank) and puts the base layer back."""
from __future__ import annotations

import torch
from torch import nn

ADAPTER = "default"


def add_lora(llm: nn.Module, rank: int, alpha: float, dropout: float,
             targets: list[str]) -> int:
    """Inject LoRA adapters into every linear layer of `llm` whose name ends in one of
    `targets`; returns the number of adapter parameters. A target that matches nothing is an
    error naming the layer names that exist."""
    from peft import LoraConfig, inject_adapter_in_model
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in llm.named_modules()
                     if isinstance(m, nn.Linear)})
    missing = [t for t in targets if t not in linear]
    if missing:
        raise ValueError(f"LoRA targets {missing} match no linear layer of the LLM; its linear "
                         f"layers: {', '.join(linear)}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=list(targets), bias="none")
    inject_adapter_in_model(config, llm, adapter_name=ADAPTER)
    return sum(p.numel() for n, p in llm.named_parameters() if is_adapter(n))


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or name.startswith(("lora_A.", "lora_B."))


def fold(llm: nn.Module, merge: bool = True) -> list[str]:
    """Put every LoRA layer's base layer back in its place, with the adapter merged into its
    weight (`merge`), or dropped (a rank that will load the merged weights from disk).
    Returns the names, relative to `llm`, of the base weights that changed."""
    from peft.tuners.lora import LoraLayer
    changed = []
    for name, module in [(n, m) for n, m in llm.named_modules() if isinstance(m, LoraLayer)]:
        if merge:
            with torch.no_grad():
                module.merge(safe_merge=True, adapter_names=[ADAPTER])
            changed.append(f"{name}.weight")
        parent_name, _, attr = name.rpartition(".")
        parent = llm.get_submodule(parent_name) if parent_name else llm
        setattr(parent, attr, module.get_base_layer())
    return changed
