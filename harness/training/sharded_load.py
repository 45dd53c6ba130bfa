"""The sharded training copy of a model, built without any rank holding a second whole copy.

A stage that shards its module in place (FSDP) trains a copy, so the caller's model stays
whole for evaluation. Copying it with `deepcopy` and then upcasting what trains would hold, on
every rank and for a moment, the whole model twice, the trainable part in fp32: for
LLaVA-1.5's stage 2 (Vicuna-7B loaded in bf16) about 14 GB + 28 GB of host memory per rank,
some 340 GB on an 8-GPU node. Instead the copy is a skeleton on the meta device (same
modules, parameters and buffers, no storage); the stage sets its dtypes there (free on meta),
the strategy shards it, and only then does each rank allocate its own shards and fill them
from its slice of the caller's weights, one tensor at a time and without any collective
(every rank already holds the caller's model, which it evaluates with). So a rank allocates
about 1/world of the model in the stage's dtypes, and never a full trainable tensor in fp32.
torch's own full-state load (`set_model_state_dict(..., full_state_dict=True)`) is not used:
it moves each whole tensor to the device and scatters it from rank 0 with a collective, and
leaves out non-persistent buffers.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.distributed.tensor import DTensor, Replicate, Shard


def meta_copy(model: nn.Module) -> nn.Module:
    """`model`'s structure with every parameter and buffer on the meta device (same names,
    shapes, dtypes, requires_grad and ties; hooks and plain attributes copied as deepcopy
    copies them)."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        twin = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
        twin.__dict__.update(p.__dict__)   # flags libraries set on parameters
        memo[id(p)] = twin
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _local_slice(target: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """The part of `full` that this rank's shard of `target` holds (FSDP2's even chunks on
    dim `d`: rank r holds rows [r*ceil(n/R), ...), the last ones fewer or none)."""
    if not isinstance(target, DTensor):
        return full
    if len(target.placements) != 1:
        raise NotImplementedError("sharded load: only a 1-D device mesh (FSDP) is supported, "
                                  f"not placements {target.placements}")
    placement = target.placements[0]
    local = target.to_local()
    if isinstance(placement, Replicate):
        return full
    if not isinstance(placement, Shard):
        raise NotImplementedError(f"sharded load: unsupported placement {placement}")
    dim, n = placement.dim, full.size(placement.dim)
    chunk = -(-n // target.device_mesh.size())
    start = min(target.device_mesh.get_local_rank() * chunk, n)
    piece = full.narrow(dim, start, local.size(dim))
    if piece.shape != local.shape:
        raise RuntimeError(f"sharded load: a shard of shape {tuple(local.shape)} does not match "
                           f"the slice {tuple(piece.shape)} of a tensor {tuple(full.shape)}")
    return piece


@torch.no_grad()
def load_local_shards(target: nn.Module, source: nn.Module, device: torch.device) -> None:
    """Allocate `target`'s (a sharded meta_copy of `source`) local shards on `device` and
    fill them from `source`'s tensors of the same names, cast to the target's dtypes."""
    target.to_empty(device=device)
    for tensors in (nn.Module.named_parameters, nn.Module.named_buffers):
        full = dict(tensors(source))
        for name, t in tensors(target):
            (t.to_local() if isinstance(t, DTensor) else t).copy_(_local_slice(t, full[name]))
