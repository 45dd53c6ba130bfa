"""The strategy registry and the one choice of a strategy that training (on its ranks) and
planning (for the ranks it plans) both make, apart from the modules that register into it;
importing harness.training.strategies registers them all."""
from __future__ import annotations

import torch
from torch import nn

from core.registry import Registry
from harness.training.distributed import World
from harness.training.strategies.base import Strategy

STRATEGIES: Registry[type[Strategy]] = Registry("parallel strategy")
AUTO = "auto"   # parallel.strategy's default: chosen by the ranks and the model's size
AUTO_FSDP_PARAMETERS = 1_000_000_000


def strategy_choices() -> list[str]:
    """What parallel.strategy may say."""
    return [AUTO, *STRATEGIES.names()]


def pick(requested: str, ranks: int, parameters: int) -> type[Strategy]:
    """The strategy a stage of a model with `parameters` parameters runs with on `ranks`
    ranks, `requested` being the run's parallel.strategy: `auto` is single on one rank, ddp
    below AUTO_FSDP_PARAMETERS, fsdp above; any strategy on one rank is single (nothing to
    spread: the same loop, no wrapper)."""
    if requested == AUTO:
        requested = ("single" if ranks == 1 else
                     "fsdp" if parameters >= AUTO_FSDP_PARAMETERS else "ddp")
    elif ranks == 1:
        requested = "single"
    return STRATEGIES.get(requested)


def choose(name: str, world: World, model: nn.Module, llm_trains: bool,
           compute_dtype: torch.dtype | None = None) -> Strategy:
    """The strategy a stage runs with on this world: `name` from the run's
    `parallel.strategy`, through `pick`; it reshards after forward only when the LLM trains
    (`llm_trains`); `compute_dtype` is the autocast dtype of a bf16/fp16 stage (None: fp32)."""
    chosen = pick(name, world.size, sum(p.numel() for p in model.parameters()))
    if world.distributed and not chosen.spans_ranks:
        spanning = [c for c in strategy_choices() if c == AUTO or STRATEGIES.get(c).spans_ranks]
        raise ValueError(f"parallel.strategy {chosen.name} cannot run on several ranks; use "
                         + " or ".join(spanning))
    return chosen(world, reshard=llm_trains, compute_dtype=compute_dtype)
