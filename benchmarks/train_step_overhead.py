"""Harness training step vs a bare PyTorch loop on the same tiny model and batches.

Both loops collate the same batches from the same LLaVA-format data, run forward, backward,
gradient clipping and AdamW; the harness adds accelerate, per-step metrics.jsonl records,
the progress bar and periodic atomic checkpoints. Steps alternate between the two loops in
blocks so machine noise hits both alike.

    python benchmarks/train_step_overhead.py [--config experiments/tiny/two_experts.yaml]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from harness.config.run_config import ParallelConfig
from harness.data.batching import Collator, ImageTransform
from harness.data.llava import load_llava_json
from harness.modelbuild import build_model
from harness.runs.pipeline import make_deterministic, resolve_data
from harness.runs.rundir import RunDir
from harness.spec.run_file import load_run_config
from harness.training import batch_indices, param_groups, train_stage
from harness.training.distributed import World
from models.templates import TEMPLATES


def bare_steps(model, stage, dataset, collate, seed, start, n) -> float:
    groups = param_groups(model, stage)
    opt = torch.optim.AdamW(groups, lr=stage.lr)
    params = [p for g in groups for p in g["params"]]
    model.train()
    t0 = time.perf_counter()
    for step in range(start, start + n):
        batch = collate([dataset[i] for i in batch_indices(step, stage.batch_size,
                                                            len(dataset), seed)])
        loss = model(**batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, stage.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / n


def harness_steps(model, stage, dataset, collate, seed, n, workdir) -> float:
    """Wall time per step of the whole stage: logging and checkpoints included."""
    stage = dataclasses.replace(stage, steps=n, checkpoint_every=max(1, n // 2))
    t0 = time.perf_counter()
    train_stage(model, stage, dataset, collate, RunDir(workdir), seed,
                World.single(torch.device("cpu")), ParallelConfig(), progress=False)
    return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/tiny/two_experts.yaml")
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--blocks", type=int, default=4)
    args = parser.parse_args()
    cfg = load_run_config(args.config)
    stage = cfg.stages[-1]
    with tempfile.TemporaryDirectory() as tmp:
        make_deterministic(cfg.seed)
        data = resolve_data(cfg, Path(tmp))
        model, llm = build_model(cfg.model, cfg.seed, Path(tmp) / "llm", data.corpus)
        transforms = {n: ImageTransform.for_expert(e) for n, e in model.experts.items()}
        collate = Collator(llm.tokenizer, TEMPLATES.get(stage.template), transforms,
                           getattr(data, stage.data)[1])
        dataset = load_llava_json(*getattr(data, stage.data))
        bare_steps(copy.deepcopy(model), stage, dataset, collate, cfg.seed, 0, 3)  # warm-up
        bare, ours = [], []
        for block in range(args.blocks):
            runs = [lambda: bare.append(bare_steps(copy.deepcopy(model), stage, dataset,
                                                   collate, cfg.seed, 0, args.steps)),
                    lambda block=block: ours.append(harness_steps(
                        copy.deepcopy(model), stage, dataset, collate, cfg.seed, args.steps,
                        Path(tmp) / f"stage{block}"))]
            for go in (runs if block % 2 == 0 else runs[::-1]):  # alternate who goes first
                go()
    b, h = statistics.median(bare), statistics.median(ours)
    print(f"batch {stage.batch_size}, {args.blocks} blocks x {args.steps} steps")
    print(f"bare PyTorch loop : {b * 1000:.1f} ms/step  (blocks: "
          + ", ".join(f"{x * 1000:.0f}" for x in bare) + ")")
    print(f"harness train loop: {h * 1000:.1f} ms/step  (blocks: "
          + ", ".join(f"{x * 1000:.0f}" for x in ours) + ")")
    print(f"overhead: {100 * (h - b) / b:+.1f}%")


if __name__ == "__main__":
    main()
