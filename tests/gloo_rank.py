"""One of two gloo ranks (started by torch.multiprocessing.spawn) with the sft stage of the
run config in its folder prepared: the tests of what an FSDP stage holds on each rank start
here."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.multiprocessing as mp

from harness.runs.inputs import resolve_data
from harness.specs.run_file import load_run_config
from harness.training import param_groups
from harness.training.distributed import World, init_world
from harness.training.kernels import seed_kernels
from harness.training.launch import free_port
from models.builder import build_model
from models.llm import load_llm


def sft_on_rank(rank: int, size: int, port: int, folder: Path):
    """(world, run config, the sft stage, the model with the stage's parameters trainable)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world: World = init_world("cpu")
    cfg = load_run_config(folder / "run.yaml")
    stage = cfg.stages[-1]                              # sft: projector, LLM and CLIP train
    seed_kernels(cfg.seed)
    model, _ = build_model(cfg.model, cfg.seed, folder / "llm",
                           resolve_data(cfg, folder).corpus)
    param_groups(model, stage)
    return world, cfg, stage, model


def on_two_ranks(folder: Path, run_yaml: str, target, *args) -> dict:
    """Write the run config, build its LLM once (before the ranks, which share its folder),
    run `target(rank, 2, port, str(folder), *args)` on two spawned gloo ranks and return the
    result.json rank 0 wrote."""
    (folder / "run.yaml").write_text(run_yaml)
    cfg = load_run_config(folder / "run.yaml")
    load_llm(cfg.model.llm, folder / "llm", resolve_data(cfg, folder).corpus)
    mp.spawn(target, args=(2, free_port(), str(folder), *args), nprocs=2)
    return json.loads((folder / "result.json").read_text())
