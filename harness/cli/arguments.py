"""Argument types and argument groups that several commands share (the work directory, the
spec, the executor and its options, decoding workers), so each is declared once."""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_WORKDIR = "ablate-work"
DEFAULT_REHEARSAL_WORKDIR = "ablate-rehearse"


class RegistryChoices:
    """argparse choices read from a registry when they are first needed (checking a value, or
    --help), so the CLI lists what the registry holds without importing it for every
    command: the executors' module pulls in submitit and torch, which `ablate report` does
    not need."""

    def __init__(self, module: str, registry: str):
        self.module, self.registry = module, registry

    def _names(self) -> list[str]:
        import importlib
        return getattr(importlib.import_module(self.module), self.registry).names()

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __iter__(self):
        return iter(self._names())


EXECUTOR_CHOICES = RegistryChoices("harness.scheduler.executors", "EXECUTORS")


def workdir(text: str) -> str:
    """A work directory: an existing folder, or a path that can become one."""
    path = Path(text).expanduser()
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise argparse.ArgumentTypeError(f"{part} exists and is not a folder; give a "
                                                 "folder (or a new path) for the work directory")
            break
    return text


def at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}")
        return value
    return parse


positive, non_negative = at_least(1), at_least(0)


def add_workdir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default=DEFAULT_WORKDIR, type=workdir,
                   help=f"runs, records and caches live here (default: ./{DEFAULT_WORKDIR})")


def add_spec(p: argparse.ArgumentParser) -> None:
    """The experiment spec a command works on, and the work directory it works in."""
    p.add_argument("spec", help="experiment spec YAML")
    add_workdir(p)


def add_workers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=positive, default=None,
                   help="processes decoding images (default: this machine's cores, at "
                        "most 32)")


def add_executor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", default="local", choices=EXECUTOR_CHOICES,
                   metavar="EXECUTOR", help="%(choices)s. local: jobs on this machine "
                   "(default); slurm: one job array per submission; inline: in this "
                   "process, for debugging")
    p.add_argument("--max-parallel", type=positive, default=1,
                   help="local executor: jobs at once (default 1)")
    p.add_argument("--gpus-per-job", type=non_negative, default=None,
                   help="local executor: GPUs (and ranks) per job, each job its own "
                        "(default: 1 where a run's device is cuda or auto and this "
                        "machine has a GPU, else 0)")
    p.add_argument("--profile", help="slurm executor: resources profile, e.g. "
                                     "slurm/local.yaml")
    p.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. http://host:5000 "
                                          "(default: sqlite file WORKDIR/mlflow.db)")
