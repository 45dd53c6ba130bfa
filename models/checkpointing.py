"""Activation checkpointing through each library's own switch, for the LLM and the vision
experts alike: a checkpointed block keeps only its input and recomputes the rest in backward.

transformers 5 renamed `gradient_checkpointing_*` to `activation_checkpointing_*`; older
releases (a GPU node's stack, say) have only the old name. Both are called non-reentrant: the
reentrant form gives no gradient to a block whose input does not require one (a trainable
vision tower's first block sees pixels)."""
from __future__ import annotations

from torch import nn


def set_hf_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Non-reentrant checkpointing of a transformers model's layers (parameter names stay
    those of the plain model, so checkpoints and weights are unchanged)."""
    new = hasattr(model, "activation_checkpointing_enable")
    if enabled:
        kwargs = {"use_reentrant": False}
        if new:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    elif new:
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


def hf_checkpoint_units(model: nn.Module) -> list[nn.Module]:
    """The layers transformers' switch checkpoints one by one (its GradientCheckpointingLayer
    subclasses)."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:   # before transformers 4.52: the model checkpoints its layer lists
        return [layer for m in model.modules() if hasattr(m, "gradient_checkpointing")
                for child in m.children() if isinstance(child, nn.ModuleList)
                for layer in child]
    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
