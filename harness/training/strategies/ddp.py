"""`ddp`: a full replica per rank, gradients all-reduced (small models, the CPU demo)."""
from __future__ import annotations

import contextlib

from harness.training.strategies.base import Strategy
from harness.training.strategies.registry import STRATEGIES


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
