"""Harness training step vs a bare PyTorch loop on the same model, batches and strategy.

Both loops collate the same global batches from the same LLaVA-format data, wrap the model
with the same strategy (harness.training.strategies: one process, DDP or FSDP2), and run
forward, backward, gradient clipping and AdamW on each rank's share of the batch. The harness
adds what a real stage does: the answer-token count summed over ranks before the step, the
per-step metrics.jsonl records, rank 0's broadcast decisions and two sharded (DCP)
checkpoints. Steps alternate between the two loops in blocks so machine noise hits both
alike; each block gives the whole stage's wall time (wrapping and checkpoints included) over
its steps, measured on rank 0 between barriers, and the median step from a collated batch.

    python benchmarks/train_step_overhead.py [--config experiments/tiny/two_experts.yaml]
    python benchmarks/train_step_overhead.py --nproc 2 --strategy fsdp   # gloo ranks on CPUs
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from harness.config.run_config import ParallelConfig
from harness.data.batching import Collator, ImageTransform, to_device
from harness.data.llava import load_llava_json
from harness.runs.inputs import resolve_data
from harness.runs.rundir import RunDir
from harness.specs.run_file import load_run_config
from harness.training import batch_indices, param_groups, train_stage
from harness.training.distributed import World, barrier, init_world, shard
from harness.training.kernels import seed_kernels
from harness.training.launch import free_port
from harness.training.loop import stage_strategy
from harness.training.strategies import strategy_choices
from models.builder import build_model
from models.llm import load_llm
from models.templates import TEMPLATES


def bare_steps(model, stage, dataset, collate, seed, n, world: World, strategy: str
               ) -> tuple[float, float]:
    """The plainest loop of the same strategy: this rank's slice of each global batch, its
    mean loss over its answer tokens, backward, clip, AdamW. Wall time per step with the
    wrapping, and the median step from a collated batch."""
    barrier(world)
    t0 = time.perf_counter()
    chosen = stage_strategy(strategy, world, model, stage)
    param_groups(model, stage)
    wrapped = chosen.wrap(model)
    groups = param_groups(model, stage)
    opt = torch.optim.AdamW(groups, lr=stage.lr)
    params = [p for g in groups for p in g["params"]]
    wrapped.train()
    steps = []
    for step in range(n):
        mine = shard(batch_indices(step, stage.batch_size, len(dataset), seed), world)
        batch = to_device(collate([dataset[i] for i in mine]), world.device)
        t = time.perf_counter()   # as the harness's step_time: from a prepared batch
        # the summed form: it keeps every trainable vision part in the graph, which FSDP
        # needs on a rank whose share has no image
        loss, count = wrapped(**batch, reduction="sum")
        (loss / count.clamp_min(1)).backward()
        if stage.grad_clip:
            chosen.clip(params, stage.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps.append(time.perf_counter() - t)
    barrier(world)
    return (time.perf_counter() - t0) / n, statistics.median(steps)


def harness_steps(model, stage, dataset, collate, seed, n, workdir: Path, world: World,
                  strategy: str) -> tuple[float, float]:
    """Wall time per step of the whole stage (logging and checkpoints included), and the
    median of the loop's own step times (its metrics.jsonl): the step without them."""
    stage = dataclasses.replace(stage, steps=n, checkpoint_every=max(1, n // 2))
    barrier(world)
    t0 = time.perf_counter()
    folder = RunDir(workdir)
    train_stage(model, stage, dataset, collate, folder, seed, world,
                ParallelConfig(strategy=strategy), progress=False)
    barrier(world)
    wall = (time.perf_counter() - t0) / n
    if not world.is_main:
        return wall, float("nan")
    return wall, statistics.median(r["step_time"] for r in folder.metrics_log()
                                   if "step_time" in r)


def measure(world: World, args, tmp: Path) -> dict:
    cfg = load_run_config(args.config)
    stage = cfg.stages[-1]
    seed_kernels(cfg.seed)
    data = resolve_data(cfg, tmp)
    model, llm = build_model(cfg.model, cfg.seed, tmp / "llm", data.corpus)
    transforms = {n: ImageTransform.for_expert(e) for n, e in model.experts.items()}
    collate = Collator(llm.tokenizer, TEMPLATES.get(stage.template), transforms,
                       getattr(data, stage.data)[1])
    dataset = load_llava_json(*getattr(data, stage.data))
    bare_steps(copy.deepcopy(model), stage, dataset, collate, cfg.seed, 2, world,
               args.strategy)   # warm-up
    bare, ours = [], []
    for block in range(args.blocks):
        runs = [lambda: bare.append(bare_steps(copy.deepcopy(model), stage, dataset, collate,
                                               cfg.seed, args.steps, world, args.strategy)),
                lambda block=block: ours.append(harness_steps(
                    copy.deepcopy(model), stage, dataset, collate, cfg.seed, args.steps,
                    tmp / f"stage{block}", world, args.strategy))]
        for go in (runs if block % 2 == 0 else runs[::-1]):  # alternate who goes first
            go()
    return {"batch": stage.batch_size, "bare": bare, "harness": ours}


def _rank(rank: int, size: int, port: int, args, tmp: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    world = init_world("cpu")
    result = measure(world, args, Path(tmp))
    if world.is_main:
        (Path(tmp) / "result.json").write_text(json.dumps(result))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/tiny/two_experts.yaml")
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--nproc", type=int, default=1, help="ranks (gloo CPU processes)")
    parser.add_argument("--strategy", default="auto", choices=strategy_choices())
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per rank when --nproc > 1")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.nproc == 1:
            result = measure(World.single(torch.device("cpu")), args, Path(tmp))
        else:
            cfg = load_run_config(args.config)   # data and LM files once, before the ranks
            load_llm(cfg.model.llm, Path(tmp) / "llm", resolve_data(cfg, Path(tmp)).corpus)
            mp.spawn(_rank, args=(args.nproc, free_port(), args, tmp), nprocs=args.nproc)
            result = json.loads((Path(tmp) / "result.json").read_text())
    print(f"batch {result['batch']}, {args.nproc} rank(s), strategy {args.strategy}, "
          f"{args.blocks} blocks x {args.steps} steps")
    for i, what in enumerate(("whole stage per step", "median step")):
        b = statistics.median(x[i] for x in result["bare"])
        h = statistics.median(x[i] for x in result["harness"])
        result[what] = {"bare": b, "harness": h, "overhead": (h - b) / b}
        print(f"{what}: bare {b * 1000:.1f} ms, harness {h * 1000:.1f} ms "
              f"({100 * (h - b) / b:+.1f}%; blocks bare "
              + ", ".join(f"{x[i] * 1000:.0f}" for x in result["bare"]) + ", harness "
              + ", ".join(f"{x[i] * 1000:.0f}" for x in result["harness"]) + ")")
    return result


if __name__ == "__main__":
    main()
