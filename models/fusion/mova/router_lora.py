"""The routing LoRA of MoVA's context-aware router (Zong et al., 2024, Sec. 3.2): low-rank
adapters on the LLM's linear layers that are on only while the LLM routes, so one LLM both
names the experts a question needs and, with them off, answers it.

Unlike a stage's LoRA (models.lora, through peft, merged into the LLM when its stage ends),
this adapter must stay apart from the LLM for good: it is switched on and off per pass, and
later stages may train the LLM in full underneath it. So it is its own module: each target
layer gets a forward hook that adds `up(down(dropout(x))) * alpha / rank` while the adapter
is on. The LLM keeps its plain parameter names (stage weights, FSDP wrapping and exports do
not change), and the adapter's parameters are ordinary model parameters under `router.`,
saved, reused and sharded like any module's. The hook is a bound method of the pair's module,
so a deep copy of the model (a sharded stage trains one) hooks the copy's own adapters."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from core.fields import ranged

# every linear layer of a Llama decoder layer (what LLaVA-1.5's LoRA recipe targets)
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class RouterLoRAOptions:
    rank: int = ranged(8, ge=1)
    alpha: float = ranged(16.0, gt=0)
    dropout: float = ranged(0.05, ge=0, lt=1)
    targets: list[str] = ranged(default_factory=lambda: list(LLAMA_LINEAR), min_items=1)


class _LowRankPair(nn.Module):
    """One target layer's adapter; `hook` adds its update to the layer's output."""

    def __init__(self, linear: nn.Linear, rank: int, scale: float, dropout: float):
        super().__init__()
        self.down = nn.Linear(linear.in_features, rank, bias=False,
                              device=linear.weight.device, dtype=linear.weight.dtype)
        self.up = nn.Linear(rank, linear.out_features, bias=False,
                            device=linear.weight.device, dtype=linear.weight.dtype)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)    # the adapter starts as the identity
        self.drop = nn.Dropout(dropout)
        self.scale = scale
        self.on = False

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if not self.on:
            return output
        x = args[0].to(self.down.weight.dtype)
        return output + (self.up(self.down(self.drop(x))) * self.scale).to(output.dtype)


class RoutingLoRA(nn.Module):
    """Adapters on every linear layer of `llm` whose name ends in one of the targets."""

    def __init__(self, llm: nn.Module, options: RouterLoRAOptions):
        super().__init__()
        existing = sorted({n.rsplit(".", 1)[-1] for n, m in llm.named_modules()
                           if isinstance(m, nn.Linear)})
        missing = [t for t in options.targets if t not in existing]
        if missing:
            raise ValueError(f"router LoRA targets {missing} match no linear layer of the LLM; "
                             f"its linear layers: {', '.join(existing)}")
        layers = [m for n, m in llm.named_modules()
                  if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in options.targets]
        scale = options.alpha / options.rank
        self.pairs = nn.ModuleList(_LowRankPair(m, options.rank, scale, options.dropout)
                                   for m in layers)
        for layer, pair in zip(layers, self.pairs):
            layer.register_forward_hook(pair.hook)

    @property
    def is_on(self) -> bool:
        return bool(self.pairs) and self.pairs[0].on

    def switch(self, on: bool) -> None:
        for pair in self.pairs:
            pair.on = on

    @contextlib.contextmanager
    def active(self):
        before = self.is_on
        self.switch(True)
        try:
            yield
        finally:
            self.switch(before)
