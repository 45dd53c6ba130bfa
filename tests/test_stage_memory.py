"""A stage gives its memory back when it ends: on two gloo ranks, FSDP's sharded copy of the
model is gone as soon as train_stage returns (not when Python's cyclic collector happens to
run: it is switched off here, as it may not run for a long while on a GPU node), and a stage
paused at a rung leaves nothing of its training alive once the pipeline has the pause."""
from __future__ import annotations

import gc
import json
import os
import weakref
from pathlib import Path

import torch

import harness.training.strategies.fsdp as fsdp
from harness.data.batching import Collator, expert_transforms
from harness.data.llava import load_llava_json
from harness.runs.inputs import resolve_data
from harness.runs.rundir import RunDir
from harness.runs.stages import until_paused
from harness.specs.run_file import load_run_config
from harness.training import StagePaused, train_stage
from harness.training.distributed import init_world
from harness.training.kernels import seed_kernels
from models.builder import build_model
from models.templates import TEMPLATES
from tests.gloo_rank import on_two_ranks
from tests.tiny import tiny_run_yaml


def _rank(rank: int, size: int, port: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    gc.disable()   # only what the harness collects is collected
    tmp = Path(folder)
    world = init_world("cpu")
    cfg = load_run_config(tmp / "run.yaml")
    stage = cfg.stages[-1]
    seed_kernels(cfg.seed)
    data = resolve_data(cfg, tmp)
    model, llm = build_model(cfg.model, cfg.seed, tmp / "llm", data.corpus)
    records = load_llava_json(*data.sft)
    collate = Collator(llm.tokenizer, TEMPLATES.get(stage.template),
                       expert_transforms(model.experts, cfg.data.image_aspect_ratio),
                       data.sft[1])
    copies = []
    real = fsdp.meta_copy

    def watched(source):
        made = real(source)
        copies.append(weakref.ref(made))
        return made
    fsdp.meta_copy = watched

    def train(folder: str, pause_at: int | None = None):
        return train_stage(model, stage, records, collate, RunDir(tmp / folder), cfg.seed,
                           world, cfg.parallel, stop_after=None, progress=False,
                           pause_at=pause_at)
    train("done")
    finished_alive = copies[-1]() is not None
    paused = until_paused(lambda: train("paused", pause_at=1), world.device)
    paused_alive = copies[-1]() is not None
    if world.is_main:
        (tmp / "result.json").write_text(json.dumps({
            "finished_alive": finished_alive, "paused_alive": paused_alive,
            "paused": isinstance(paused, StagePaused) and paused.step == 1}))


def test_a_stage_frees_its_sharded_copy_when_it_ends(tmp_path):
    got = on_two_ranks(tmp_path, tiny_run_yaml("memory", sft_steps=2)
                       + "parallel: {strategy: fsdp}\n", _rank)
    assert got["paused"], got
    assert not got["finished_alive"], "the finished stage's FSDP copy outlives train_stage"
    assert not got["paused_alive"], "the paused stage's FSDP copy outlives its pause"
