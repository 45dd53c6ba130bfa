"""The seam every strategy fills: how a stage's model is prepared and wrapped for the ranks,
how gradients are synchronised and clipped, and how it shards state (which the plan's memory
estimate reads)."""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import nn

from harness.config.run_config import ParallelConfig
from harness.training.distributed import World
from harness.training.preparation import ready_for_stage
from models.multimodal import MultimodalLM


class PreparedModel(NamedTuple):
    """A stage's model ready to train: the module whose parameters train (the caller's, or a
    strategy's own copy), the module the loop calls (forward and backward), and the frozen
    bytes by dtype."""
    model: nn.Module
    wrapped: nn.Module
    frozen: dict[str, int]


class Strategy(ABC):
    """One way of spreading a stage over the ranks. A subclass registers in
    harness.training.strategies.registry.STRATEGIES under its `name`."""
    name: str
    # each rank holds 1/ranks of the trainable parameters, their gradients and optimizer
    # state, gathering parameters to compute (the plan divides by the ranks and counts the
    # gathered ones; the optimizer takes the unfused path, whose temporaries are a shard's)
    shards_state = False
    # False: one process only (asked for on several ranks, the stage refuses)
    spans_ranks = True

    def __init__(self, world: World, reshard: bool = True,
                 compute_dtype: torch.dtype | None = None):
        self.world, self.reshard, self.compute_dtype = world, reshard, compute_dtype

    @classmethod
    def state_shards(cls, ranks: int) -> int:
        """Over how many ranks the trainable state is divided (for the plan)."""
        return ranks if cls.shards_state else 1

    def prepare(self, model: MultimodalLM, precision: str, parallel: ParallelConfig,
                scope: contextlib.ExitStack) -> PreparedModel:
        """The stage's model in its dtypes, activation checkpointing on, wrapped, until `scope`
        closes (harness.training.preparation)."""
        trained = self.stage_copy(model, scope)
        frozen = ready_for_stage(trained, precision, parallel, scope,
                                 in_place=trained is model)
        wrapped = self.wrap(trained)
        if trained is not model:
            self.fill(trained, model)
        return PreparedModel(trained, wrapped, frozen)

    def stage_copy(self, model: nn.Module, scope: contextlib.ExitStack) -> nn.Module:
        """The module the stage trains: the caller's model itself, unless the strategy changes
        the module it wraps (then a copy, filled by `fill` once wrapped)."""
        return model

    def fill(self, trained: nn.Module, source: nn.Module) -> None:
        """Load the caller's weights into the wrapped copy `stage_copy` made."""
        raise NotImplementedError(f"strategy {self.name} trains a copy of the model and must "
                                  "fill it with the caller's weights")

    @abstractmethod
    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the loop calls (forward and backward)."""

    def sync_gradients(self, wrapped: nn.Module, sync: bool):
        """A context in which backward reduces gradients across ranks only when `sync` (the
        last micro-batch of an accumulation)."""
        return contextlib.nullcontext()

    def clip(self, params: list[torch.Tensor], max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
