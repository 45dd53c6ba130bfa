"""What a trained vision expert keeps for backward, per image, known before it runs: the
expert is built on the meta device and run once with autograd's saved-tensor hooks, each saved
storage counted once and attributed to the checkpointed block (`checkpoint_units`) it was
saved in. Without activation checkpointing the expert keeps all of it; with it, every block
keeps only its input, what runs outside the blocks keeps its own, and backward recomputes one
block at a time (the largest one is the peak).

The meta run holds the tower in the stage's compute dtype, as autocast computes its matrix
products; the fp32 parts under autocast (norms, a residual stream of fp32 weights) make the
real number somewhat larger (tests/test_vision_memory.py measures the gap on real towers).
A backend that reads a tensor's value on the way (transformers' Pix2Struct) cannot run on
meta: its blocks are counted by the transformer-layer rule the LLM's are (34 bytes per token
and hidden unit in bf16, Korthikanti et al. 2022)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.experts import VisionExpert

LAYER_ACTIVATION_BYTES = 34   # per token and hidden unit, bf16, fused attention


@dataclass(frozen=True)
class KeptForBackward:
    """Bytes per image of one expert: outside its blocks, each block's own, each block's
    input."""
    outside: int
    blocks: tuple[int, ...]
    inputs: tuple[int, ...]

    def total(self, checkpointed: bool) -> int:
        if not checkpointed:
            return self.outside + sum(self.blocks)
        return self.outside + sum(self.inputs) + max(self.blocks, default=0)


def _storage(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s._cdata, s.nbytes()


def measure_on_meta(expert: VisionExpert, dtype: torch.dtype) -> KeptForBackward:
    """One image through `expert` (built on meta), all its parameters trainable."""
    units = expert.checkpoint_units()
    expert.to(dtype).requires_grad_(True).train()
    weights = {_storage(p)[0] for p in expert.parameters()}
    blocks, inputs = [0] * len(units), [0] * len(units)
    seen: set[int] = set()
    state = {"unit": None, "outside": 0}

    def enter(i):
        def hook(module, args, kwargs=None):
            state["unit"] = i
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if first is not None:
                inputs[i] = first.numel() * first.element_size()
        return hook

    def leave(module, args, out):
        state["unit"] = None

    def pack(t):
        key, nbytes = _storage(t)
        if key not in seen and key not in weights:
            seen.add(key)
            if state["unit"] is None:
                state["outside"] += nbytes
            else:
                blocks[state["unit"]] += nbytes
        return t

    handles = [h for i, u in enumerate(units) for h in (u.register_forward_pre_hook(enter(i)),
                                                          u.register_forward_hook(leave))]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            expert(torch.empty(1, 3, *expert.input_size, dtype=dtype, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return KeptForBackward(state["outside"], tuple(blocks), tuple(inputs))


def by_layer_rule(expert: VisionExpert, dtype: torch.dtype) -> KeptForBackward:
    """The transformer-layer rule, for a backend that cannot run on meta."""
    units = expert.checkpoint_units()
    h, w = expert.output_grid(expert.layers[-1])
    tokens, width = h * w, expert.layer_channels(expert.layers[-1])
    scale = torch.finfo(dtype).bits / 16
    block = int(LAYER_ACTIVATION_BYTES * tokens * width * scale)
    return KeptForBackward(0, (block,) * len(units),
                           (int(2 * tokens * width * scale),) * len(units))


def kept_for_backward(expert: VisionExpert, dtype: torch.dtype) -> KeptForBackward:
    try:
        return measure_on_meta(expert, dtype)
    except (RuntimeError, NotImplementedError):
        return by_layer_rule(expert, dtype)
