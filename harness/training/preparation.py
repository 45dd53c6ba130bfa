"""What every strategy does to a stage's model before it wraps it, whatever spreads it over
the ranks: trainable parameters upcast to fp32 masters, frozen Linear and Conv weights held in
the compute dtype (harness.training.frozen), activation checkpointing switched on. Each lasts
until the stage's scope closes."""
from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

from harness.config.run_config import ParallelConfig
from harness.training.frozen import frozen_bytes, held_in
from harness.training.kernels import COMPUTE_DTYPES
from models.llm import set_activation_checkpointing
from models.multimodal import MultimodalLM


def upcast_trainable(model: nn.Module) -> None:
    """fp32 master copies of what trains (an LLM loaded in bf16 and fine-tuned keeps fp32
    weights, gradients and AdamW state; autocast computes in bf16)."""
    upcast: dict[int, nn.Parameter] = {}   # a tied parameter stays one parameter
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
                if id(p) not in upcast:
                    upcast[id(p)] = nn.Parameter(p.detach().float(), requires_grad=True)
                setattr(module, name, upcast[id(p)])


@contextlib.contextmanager
def checkpointed(model: MultimodalLM, enabled: bool):
    """Activation checkpointing (non-reentrant) for the stage, on the LLM's decoder layers and
    on the blocks of every expert that trains: each block keeps only its input and recomputes
    the rest in backward. Frozen experts need none (they run without autograd's record).
    Through each library's own switch, so parameter names (and checkpoints, weights) stay
    those of the plain model."""
    if not enabled:
        yield
        return
    switches = []
    if getattr(model.llm, "supports_gradient_checkpointing", False):
        switches.append(functools.partial(set_activation_checkpointing, model.llm))
    switches += [expert.set_activation_checkpointing for expert in model.experts.values()
                 if any(p.requires_grad for p in expert.parameters())]
    for switch in switches:
        switch(True)
    try:
        yield
    finally:
        for switch in switches:
            switch(False)


def ready_for_stage(model: MultimodalLM, precision: str, parallel: ParallelConfig,
                    scope: contextlib.ExitStack, in_place: bool) -> dict[str, int]:
    """Trainables in fp32 and frozen weights in the compute dtype under autocast, activation
    checkpointing on, until `scope` closes; the frozen bytes by dtype (whole: before any
    sharding). `in_place`: `model` is the caller's, so its loaded weights come back when the
    scope closes (a stage's own copy is dropped instead)."""
    if precision != "no":
        upcast_trainable(model)
        if parallel.frozen_weights == "compute":
            scope.enter_context(held_in(model, COMPUTE_DTYPES[precision], restore=in_place))
    scope.enter_context(checkpointed(model, parallel.activation_checkpointing))
    return frozen_bytes(model)
