"""How one stage's model is spread over the run's ranks, behind one seam (`Strategy`):

- `single`: one process, the model as is;
- `ddp`: a full replica per rank, gradients all-reduced (small models, the CPU demo);
- `fsdp`: torch FSDP2 (`fully_shard`) on every LLM decoder layer and the root, so each rank
  holds 1/world of the trainable parameters, their gradients and optimizer state; the layers
  are resharded after forward when the LLM trains (ZeRO-3, LLaVA-1.5's stage 2) and kept
  gathered when only the connector trains (ZeRO-2, its stage 1).

`auto` picks single on one rank, ddp below a billion parameters, fsdp above. Every strategy
computes in the run's precision with trainable parameters (and so their gradients, their
reduction and the optimizer) in fp32; frozen Linear and Conv weights are held in the compute
dtype for the stage (harness.training.frozen), the other frozen parts as loaded.

Under FSDP with bf16/fp16 the all-gathered parameters are the compute dtype (FSDP2's
MixedPrecisionPolicy; fp32 shards, fp32 gradient reduction): half the bytes on the wire, and
no fp32 copy of a whole layer cast again by autocast, whose cache would otherwise keep a bf16
copy of every unsharded layer alive until the forward ends (about 13 GB for a 7B LLM). This is
DeepSpeed's bf16 ZeRO-3, which LLaVA trains with: the layers compute with bf16 weights, norms
included. Gradients are reduce-scattered after every micro-batch, so they accumulate sharded:
skipping the reduction until the last micro-batch would keep an unsharded fp32 gradient of the
whole trainable model on every rank (about 27 GB more per GPU for a 7B LLM).
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod

import torch
from torch import nn

from core.registry import Registry
from harness.training.distributed import World

STRATEGIES: Registry[type] = Registry("parallel strategy")
AUTO_FSDP_PARAMETERS = 1_000_000_000


class Strategy(ABC):
    name: str
    wraps_in_place = False   # the module itself is changed (FSDP): train a copy of the model

    def __init__(self, world: World, reshard: bool = True,
                 compute_dtype: torch.dtype | None = None):
        self.world, self.reshard, self.compute_dtype = world, reshard, compute_dtype

    @abstractmethod
    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the loop calls (forward and backward)."""

    def sync_gradients(self, wrapped: nn.Module, sync: bool):
        """A context in which backward reduces gradients across ranks only when `sync` (the
        last micro-batch of an accumulation)."""
        return contextlib.nullcontext()

    def clip(self, params: list[torch.Tensor], max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


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


@STRATEGIES.register("single", "one process, the model as is")
class Single(Strategy):
    name = "single"

    def wrap(self, model):
        return model


@STRATEGIES.register("ddp", "a replica per rank, gradients all-reduced")
class DDP(Strategy):
    name = "ddp"

    def wrap(self, model):
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.world.device.index] if self.world.device.type == "cuda" else None
        # a step may leave parameters unused: a micro-batch of text-only samples (LLaVA's mix,
        # grouped by modality) never runs the vision side, and a router may skip an expert;
        # DDP must not wait for their gradients
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def sync_gradients(self, wrapped, sync):
        return contextlib.nullcontext() if sync else wrapped.no_sync()


@STRATEGIES.register("fsdp", "FSDP2 fully_shard on the LLM's decoder layers and the root")
class FSDP(Strategy):
    name = "fsdp"
    wraps_in_place = True

    def wrap(self, model):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        mesh = init_device_mesh(self.world.device.type, (self.world.size,))
        # inputs are not cast: pixels and the residual stream stay as autocast leaves them
        policy = MixedPrecisionPolicy(param_dtype=self.compute_dtype, reduce_dtype=torch.float32,
                                      cast_forward_inputs=False)
        for layer in decoder_layers(model):
            fully_shard(layer, mesh=mesh, reshard_after_forward=self.reshard, mp_policy=policy)
        fully_shard(model, mesh=mesh, reshard_after_forward=self.reshard, mp_policy=policy)
        return model

    # sync_gradients: the base class's (reduce-scatter after every micro-batch)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The LLM's transformer blocks (HF causal LMs keep them in `model.layers`)."""
    llm = getattr(model, "llm", None)
    inner = getattr(llm, "model", None)
    layers = getattr(inner, "layers", None)
    return list(layers) if layers is not None else []


def choose(name: str, world: World, model: nn.Module, llm_trains: bool,
           compute_dtype: torch.dtype | None = None) -> Strategy:
    """The strategy a stage runs with: `name` from the run's `parallel.strategy`;
    `compute_dtype` the autocast dtype of a bf16/fp16 stage (None: fp32)."""
    if name == "auto":
        if not world.distributed:
            name = "single"
        else:
            params = sum(p.numel() for p in model.parameters())
            name = "fsdp" if params >= AUTO_FSDP_PARAMETERS else "ddp"
    if name != "single" and not world.distributed:
        name = "single"   # one rank: nothing to spread (the same loop, no wrapper)
    if name == "single" and world.distributed:
        raise ValueError("parallel.strategy single cannot run on several ranks; use auto, "
                         "ddp or fsdp")
    return STRATEGIES.get(name)(world, reshard=llm_trains, compute_dtype=compute_dtype)
