"""`ablate train` and `ablate validate`: commands on run config files (not specs), in this
process."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from core.errors import HarnessError
from harness.cli.arguments import add_workdir, positive
from harness.cli.command import Command


def train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="+", help="run config YAML files")
    add_workdir(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--nproc", type=positive, default=1,
                   help="run each config as N processes on this machine (one per GPU, or N "
                        "CPU processes with gloo), data-parallel or sharded by the config's "
                        "`parallel:` (default 1)")


def train(args) -> int:
    from harness.config.run_config import device_problem
    from harness.runs.pipeline import run
    from harness.runs.results import results_table
    from harness.specs.run_file import load_run_config
    from harness.training import split
    from harness.training.distributed import env_world_size
    configs = [load_run_config(p) for p in args.configs]  # validate all before running any
    ranks = args.nproc if env_world_size() <= 1 else env_world_size()
    for path, cfg in zip(args.configs, configs):
        problem = device_problem(cfg.device)
        if problem:
            raise HarnessError(f"{path}: {problem}")
        for stage in cfg.stages:   # the global batch must split over the ranks
            split(stage, ranks, cfg.parallel.micro_batch)
    if args.nproc > 1 and env_world_size() <= 1:
        from harness.training.launch import launch
        argv = [a for a in (args.argv or []) if a]
        return launch(argv, args.nproc)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    results = []
    for cfg in configs:
        if main_rank:
            print(f"== {cfg.name} (run {cfg.key})", flush=True)
        result = run(cfg, Path(args.workdir), progress=not args.no_progress)
        if main_rank:
            print(f"   run directory: {result.path}", flush=True)
        results.append(result)
    if main_rank:
        print()
        print(results_table(results).to_string())
    return 0


def validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="+")


def validate(args) -> int:
    from harness.specs.run_file import load_run_config
    for path in args.configs:
        cfg = load_run_config(path)
        print(f"{path}: ok (run {cfg.key}, {len(cfg.stages)} stages, "
              f"{len(cfg.model.experts)} experts)")
    return 0


TRAIN = Command("train", "train and evaluate run configs in-process; print a table",
                train_arguments, train)
VALIDATE = Command("validate", "check run configs without running anything",
                   validate_arguments, validate)
