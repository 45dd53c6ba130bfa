"""The job entry point: what every executor runs for one harness run.

It is a submitit Checkpointable: on preemption or at the time limit submitit calls
`checkpoint`, which resubmits this same callable; the pipeline then resumes from the
checkpoints in the run and stage directories, so nothing in the job object itself has to be
saved."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import submitit

from harness.config.run_config import RunConfig
from harness.config.selection import Rung
from harness.scheduler.ranks import job_ranks

if TYPE_CHECKING:   # the run directory's module loads torch, which the job defers
    from harness.runs.rundir import RunDir


@dataclass(frozen=True)
class TrackingTarget:
    uri: str
    experiment_id: str


def current_job_id() -> str:
    try:
        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:  # not inside a submitit job
        return "inline"


def export_ranks() -> None:
    """A submitit job of several tasks (one per GPU, on one node or several) is one run of as
    many ranks: each task exports torchrun's variables from its launcher's
    (harness.scheduler.ranks), replacing any the job inherited from the submitting shell.
    GPUs stay as the launcher left them (every GPU of the node, or the task's own where the
    cluster binds them; harness.training.distributed picks LOCAL_RANK modulo the GPUs it
    sees). Only rank 0 requeues a preempted job (submitit's rule), and its `checkpoint` runs
    no collective."""
    ranks = job_ranks(os.environ)
    if ranks is not None:
        os.environ.update(ranks.variables())


class RunJob(submitit.helpers.Checkpointable):
    def __init__(self, cfg: RunConfig, workdir: str, tracking: TrackingTarget | None,
                 tags: dict[str, str], threads: int | None = None, progress: bool = False,
                 rung: Rung | None = None):
        self.cfg, self.workdir, self.tracking = cfg, workdir, tracking
        self.tags, self.threads, self.progress = dict(tags), threads, progress
        self.rung = rung   # successive halving: pause the last stage there

    def __call__(self) -> dict:
        from harness.runs.pipeline import run
        export_ranks()
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        logging.getLogger().setLevel(logging.ERROR)
        import torch
        threads = self.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0")) or None
        if threads:
            torch.set_num_threads(threads)
        hooks = None
        if self.tracking is not None:
            from harness.tracking.mirror import MlflowMirror
            from harness.tracking.tolerant import TolerantHooks
            hooks = TolerantHooks(MlflowMirror(self.tracking.uri, self.tracking.experiment_id,
                                               {**self.tags, "job_id": current_job_id()}),
                                  self.tracking.uri)
        result = run(self.cfg, Path(self.workdir), progress=self.progress, hooks=hooks,
                     rung=self.rung)
        return {"key": result.key, "name": result.name, "scores": result.scores,
                **({"rung": result.rung} if getattr(result, "rung", None) else {})}


class QueuedJob(NamedTuple):
    """A run's job and the run directory it works in: what an executor submits, and where it
    records the job (job.json)."""
    run_dir: RunDir
    job: RunJob
