"""FSDP's training copy is built on the meta device and loaded shard by shard: on two gloo
ranks, preparing a bf16-loaded LLM's fine-tuning stage allocates no whole trainable tensor
in fp32 and only its half of the stage's copy per rank, and the sharded copy holds
exactly the caller's weights in the stage's dtypes (trainables in fp32, frozen Linear and
Conv weights in bf16), buffers and the caller's model untouched."""
from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from unittest import mock

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import harness.training.strategies.fsdp as fsdp
from harness.training.loop import stage_strategy
from tests.gloo_rank import on_two_ranks, sft_on_rank
from tests.tiny import tiny_run_yaml

# an LLM big enough that a second whole copy of it shows beside everything else
LLM = ("{id: tiny-llama, hidden_size: 128, layers: 4, heads: 4, intermediate_size: 512, "
       "vocab_size: 300, dtype: bfloat16}")


class _Allocations(TorchDispatchMode):
    """Every tensor storage an op creates in host memory (meta tensors cost nothing)."""

    def __init__(self):
        super().__init__()
        self.storages: dict[int, tuple[int, torch.dtype]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {_storage(t) for t in tree_flatten((args, kwargs))[0]}
        for t in tree_flatten(out)[0]:
            key = _storage(t)
            if key is not None and key not in inputs:
                local = _local(t)
                self.storages[key] = (local.untyped_storage().nbytes(), local.dtype)
        return out


def _local(t: torch.Tensor) -> torch.Tensor:
    """What holds a tensor's memory: a DTensor's local shard (the mode sees the DTensor op,
    not the op on its shard), or the tensor itself."""
    return t.to_local() if isinstance(t, DTensor) else t


def _storage(t) -> int | None:
    """The address of a host tensor's storage (None: not a tensor, on meta, or empty)."""
    if not isinstance(t, torch.Tensor) or t.device.type == "meta":
        return None
    storage = _local(t).untyped_storage()
    return storage.data_ptr() if storage.nbytes() else None


def _rank(rank: int, size: int, port: int, folder: str, deep_copy: bool) -> None:
    tmp = Path(folder)
    world, cfg, stage, model = sft_on_rank(rank, size, port, tmp)
    caller = {n: t.detach().clone() for n, t in model.state_dict().items()}
    caller_buffers = {n: b.clone() for n, b in model.named_buffers()}   # non-persistent too
    strategy = stage_strategy("fsdp", world, model, stage)
    allocations = _Allocations()
    # deep_copy: what the stage did before, a whole copy of the model to shard
    copying = (mock.patch.object(fsdp, "meta_copy", copy.deepcopy) if deep_copy
               else contextlib.nullcontext())
    with contextlib.ExitStack() as scope, copying:
        with allocations:
            trained, _, _ = strategy.prepare(model, cfg.precision, cfg.parallel, scope)
        gathered = get_model_state_dict(trained, options=StateDictOptions(
            full_state_dict=True))
        buffers = dict(trained.named_buffers())
    if not world.is_main:
        return
    stored = allocations.storages.values()
    (tmp / "result.json").write_text(json.dumps({
        "allocated": sum(nbytes for nbytes, _ in stored),
        "fp32_largest": max((nbytes for nbytes, d in stored if d == torch.float32), default=0),
        "whole": sum(t.nbytes for t in caller.values()),
        "stage_whole": sum(t.nbytes for t in gathered.values()),
        "largest_fp32_trainable": max(4 * p.numel() for p in model.parameters()
                                      if p.requires_grad),
        "mismatched": [n for n, t in gathered.items()
                       if not torch.equal(t, caller[n].to(t.dtype))],
        "dtypes": {n: str(t.dtype) for n, t in gathered.items()},
        "buffers_equal": buffers.keys() == caller_buffers.keys() and all(
            torch.equal(b, caller_buffers[n]) for n, b in buffers.items()),
        "caller_untouched": all(torch.equal(t, caller[n])
                                for n, t in model.state_dict().items()),
        "trainable_llm": [n for n, p in model.named_parameters()
                          if p.requires_grad and n.startswith("llm.")][:1]}))


def _prepare(tmp: Path, deep_copy: bool = False) -> dict:
    yaml = tiny_run_yaml("sharded", sft_steps=2).replace(
        "{id: tiny-llama, hidden_size: 32, layers: 1, heads: 2, intermediate_size: 64,\n"
        "        vocab_size: 300}", LLM)
    assert LLM in yaml
    return on_two_ranks(tmp, yaml + "precision: bf16\n", _rank, deep_copy)


def test_fsdp_builds_its_copy_shard_by_shard_with_the_callers_weights(tmp_path):
    got = _prepare(tmp_path)
    assert got["trainable_llm"], "the stage must fine-tune the bf16-loaded LLM"
    # no whole trainable tensor in fp32: the largest fp32 storage is at most a half (+pad)
    assert 0 < got["fp32_largest"] <= got["largest_fp32_trainable"] // 2 + 4 * 512
    # each rank allocates its half of the model in the stage's dtypes (trainables upcast),
    # never the whole copy (padding and replicated buffers: a few percent)
    assert got["allocated"] < 0.55 * got["stage_whole"], got
    assert got["mismatched"] == []
    assert got["buffers_equal"] and got["caller_untouched"]
    assert got["dtypes"]["llm.model.embed_tokens.weight"] == "torch.float32"
    assert "torch.bfloat16" in got["dtypes"].values()   # the frozen expert, held in bf16


def test_the_memory_check_catches_a_whole_copy(tmp_path):
    """The check above fails on what the stage did before (deepcopy, then upcast whole)."""
    got = _prepare(tmp_path, deep_copy=True)
    assert got["fp32_largest"] == got["largest_fp32_trainable"]
    assert got["allocated"] > got["whole"] + got["stage_whole"] / 2
