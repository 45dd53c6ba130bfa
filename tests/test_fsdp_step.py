"""What an FSDP step holds on each rank, on two gloo ranks with a bf16 stage: gradients
accumulate sharded (reduce-scattered after every micro-batch, no unsharded gradient of the
whole trainable model between micro-batches), and the decoder layers compute with bf16
weights gathered as bf16 (FSDP2's MixedPrecisionPolicy), not fp32 weights that autocast casts
and caches for the whole forward."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from harness.training.loop import _autocast, stage_strategy
from harness.training.step_probe import placeholder_batch
from harness.training.strategies import decoder_layers
from tests.gloo_rank import on_two_ranks, sft_on_rank
from tests.tiny import tiny_run_yaml


def _rank(rank: int, size: int, port: int, folder: str) -> None:
    tmp = Path(folder)
    world, cfg, stage, model = sft_on_rank(rank, size, port, tmp)
    strategy = stage_strategy("fsdp", world, model, stage, cfg.precision)
    gathered_dtypes = set()
    with contextlib.ExitStack() as scope:
        trained, wrapped, _ = strategy.prepare(model, cfg.precision, cfg.parallel, scope)
        layer = decoder_layers(trained)[0]
        layer.register_forward_pre_hook(lambda m, *a: gathered_dtypes.update(
            str(p.dtype) for p in m.parameters()))
        params = [p for p in trained.parameters() if p.requires_grad]
        unsharded_between = []
        for k in range(2):                               # two micro-batches, one step
            with strategy.sync_gradients(wrapped, k == 1), _autocast(world, "bf16"):
                batch = placeholder_batch(trained, 2, 12, 200, world.device,
                                          torch.Generator().manual_seed(10 * rank + k))
                loss, count = wrapped(**batch, reduction="sum")
            (loss / count.clamp_min(1)).backward()
            if k == 0:
                # a gradient held whole on the rank (a DTensor's full shape in local memory)
                unsharded_between = [
                    tuple(p.shape) for p in params
                    if p.grad is None or not isinstance(p.grad, DTensor)
                    or p.grad.to_local().numel() == p.numel() > 1]
    if world.is_main:
        (tmp / "result.json").write_text(json.dumps({
            "unsharded_between": unsharded_between,
            "gathered_dtypes": sorted(gathered_dtypes),
            "trainable": len(params)}))


def test_fsdp_accumulates_sharded_gradients_and_gathers_bf16_weights(tmp_path):
    got = on_two_ranks(tmp_path, tiny_run_yaml("fsdp_step", sft_steps=2) + "precision: bf16\n",
                       _rank)
    assert got["trainable"] > 0
    assert got["unsharded_between"] == [], got
    assert got["gathered_dtypes"] == ["torch.bfloat16"], got
