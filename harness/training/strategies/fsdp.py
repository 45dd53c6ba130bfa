"""`fsdp`: torch FSDP2 (`fully_shard`) on every LLM decoder layer and the root, so each rank
holds 1/world of the trainable parameters, their gradients and optimizer state; the layers are
resharded after forward when the LLM trains (ZeRO-3, LLaVA-1.5's stage 2) and kept gathered
when only the connector trains (ZeRO-2, its stage 1).

Under bf16/fp16 the all-gathered parameters are the compute dtype (FSDP2's
MixedPrecisionPolicy; fp32 shards, fp32 gradient reduction): half the bytes on the wire, and
no fp32 copy of a whole layer cast again by autocast, whose cache would otherwise keep a bf16
copy of every unsharded layer alive until the forward ends (about 13 GB for a 7B LLM). This is
DeepSpeed's bf16 ZeRO-3, which LLaVA trains with: the layers compute with bf16 weights, norms
included. Gradients are reduce-scattered after every micro-batch, so they accumulate sharded:
skipping the reduction until the last micro-batch would keep an unsharded fp32 gradient of the
whole trainable model on every rank (about 27 GB more per GPU for a 7B LLM).

`fully_shard` changes the module it wraps, so the stage trains a copy and the caller's model
stays whole for evaluation: the copy is built on the meta device and loaded shard by shard
(harness.training.sharded_load), so a rank never holds the model twice or what trains whole in
fp32; the caller's model waits meanwhile, in host memory on a GPU."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from harness.training.distributed import World
from harness.training.sharded_load import load_local_shards, meta_copy
from harness.training.strategies.base import Strategy
from harness.training.strategies.registry import STRATEGIES


@STRATEGIES.register("fsdp", "FSDP2 fully_shard on the LLM's decoder layers and the root")
class FSDP(Strategy):
    name = "fsdp"
    shards_state = True

    def stage_copy(self, model, scope):
        scope.enter_context(on_host(model, self.world))
        return meta_copy(model)

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

    def fill(self, trained, source):
        load_local_shards(trained, source, self.world.device)

    # sync_gradients: the base class's (reduce-scatter after every micro-batch)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The LLM's transformer blocks (HF causal LMs keep them in `model.layers`)."""
    llm = getattr(model, "llm", None)
    inner = getattr(llm, "model", None)
    layers = getattr(inner, "layers", None)
    return list(layers) if layers is not None else []


@contextlib.contextmanager
def on_host(model: nn.Module, world: World):
    """The caller's model in host memory while a sharded copy of it trains (the copy's
    shards are allocated on the GPU), so the GPU holds only this rank's shards; back on its
    device afterwards. Nothing to do on a CPU."""
    if world.device.type == "cpu":
        yield
        return
    model.to("cpu")
    try:
        yield
    finally:
        model.to(world.device)
