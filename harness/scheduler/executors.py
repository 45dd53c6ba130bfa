"""Executors by id: where a spec's jobs run.

- `inline`: in this process, one after another, with progress bars (debugging).
- `local` (default): submitit local jobs, at most `max_parallel` at a time. A small detached
  dispatcher process (harness.scheduler.local_queue) feeds them, so jobs keep going after
  `ablate run` stops following; `ablate status` shows them later.
- `slurm`: one submitit job array per submission, resources from a slurm/*.yaml profile,
  requeued on preemption or at the time limit and resumed from the run directory.

Each executor records the job behind each run in the run directory (job.json), which is how
`ablate status` finds a run's job, its state and its log."""
from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from core.errors import HarnessError
from core.registry import Registry
from harness.config.profiles import SlurmProfile, load_profile
from harness.runs.rundir import RunDir
from harness.scheduler.gpu_slots import GpuSlots, gpu_slots, visible_gpus
from harness.scheduler.job import QueuedJob

LOCAL_TIMEOUT_MIN = 60 * 24 * 30   # local jobs have no time limit worth the name


@dataclass(frozen=True)
class ExecutorOptions:
    workdir: Path
    max_parallel: int = 1
    profile: str | None = None     # slurm/*.yaml
    gpus_per_job: int | None = None   # local: None gives each job one GPU where runs use one


def record_job(run_dir: RunDir, **fields) -> None:
    run_dir.write_json("job.json", {"submitted": time.time(), "host": socket.gethostname(),
                                    **fields})


class Executor(ABC):
    name: str
    follows: bool = True   # `ablate run` follows progress until the jobs end

    def __init__(self, options: ExecutorOptions):
        self.options = options

    def threads(self) -> int | None:
        """torch threads per job (None: leave the default)."""
        return None

    def describe(self) -> str:
        return self.name

    def ranks(self) -> int:
        """The ranks each job runs its run on (after `place`): what a stage's global batch
        must divide over."""
        return 1

    def place(self, devices: set[str]) -> None:
        """Fit the executor to the runs about to be submitted (their `device`s); raises
        before anything is submitted when they cannot run as asked. Most executors have
        nothing to fit."""
        return None

    @abstractmethod
    def submit(self, jobs: list[QueuedJob]) -> None: ...


EXECUTORS: Registry[type[Executor]] = Registry("executor")


@EXECUTORS.register("inline", "in this process, one run after another (debugging)")
class InlineExecutor(Executor):
    name, follows = "inline", False

    def submit(self, jobs):
        for run_dir, job in jobs:
            record_job(run_dir, executor=self.name, job_id="inline", pid=os.getpid())
            print(f"== {job.cfg.name} (run {job.cfg.key})", flush=True)
            job.progress = True
            job()


@EXECUTORS.register("local", "submitit local jobs on this machine, at most --max-parallel "
                             "at once")
class LocalExecutor(Executor):
    name = "local"

    def __init__(self, options: ExecutorOptions):
        super().__init__(options)
        self.slots = GpuSlots.cpu_only(options.max_parallel)

    def threads(self):
        # per rank: every job may run one rank per GPU of its slot
        return max(1, (os.cpu_count() or 1) // (self.options.max_parallel
                                                * self.slots.ranks_per_job))

    def describe(self):
        gpus = f", {self.slots.describe()}" if self.slots.per_job else ""
        return f"local, at most {self.options.max_parallel} at a time{gpus}"

    def ranks(self):
        return self.slots.ranks_per_job

    def place(self, devices):
        uses_gpu = bool(devices & {"cuda", "auto"})
        self.slots = gpu_slots(self.options.max_parallel, self.options.gpus_per_job,
                               visible_gpus() if uses_gpu or self.options.gpus_per_job
                               else [], uses_gpu)

    def submit(self, jobs):
        # A folder of its own (mkdtemp): two submissions from one process in one second
        # (threads, or a search's batches) would otherwise share its queue.pkl and `ready`.
        jobs_dir = self.options.workdir / "jobs"
        jobs_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"local-{time.strftime('%Y%m%d-%H%M%S')}-"
                                              f"{os.getpid()}-", dir=jobs_dir))
        with open(folder / "queue.pkl", "wb") as f:
            pickle.dump({"slots": self.slots,
                         "jobs": [(str(d.path), j) for d, j in jobs]}, f)
        log = open(folder / "dispatcher.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "harness.scheduler.local_queue",
                                 str(folder)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        # The dispatcher marks every run QUEUED before it starts the first job; wait for
        # that so a follower never sees a submitted run as not submitted.
        deadline = time.monotonic() + 120
        while not (folder / "ready").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise HarnessError("the local dispatcher did not start; its log: "
                                   f"{folder / 'dispatcher.log'}")
            time.sleep(0.1)


@EXECUTORS.register("slurm", "one Slurm job array per submission (--profile slurm/X.yaml)")
class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, options: ExecutorOptions):
        super().__init__(options)
        if not options.profile:
            raise HarnessError("the slurm executor needs --profile slurm/NAME.yaml (partition, "
                               "GPUs, CPUs, memory, time); see slurm/local.yaml")
        self.profile: SlurmProfile = load_profile(options.profile)

    def ranks(self):
        return self.profile.world_size

    def describe(self):
        p = self.profile
        nodes = f"{p.nodes} nodes x " if p.nodes > 1 else ""
        return (f"slurm partition {p.partition}, {p.time_min} min, {nodes}{p.gpus_per_node} "
                f"GPUs, {p.ranks_per_node} tasks x {p.cpus_per_task} CPUs, at most "
                f"{p.array_parallelism} at a time")

    def submit(self, jobs):
        import submitit
        folder = self.options.workdir / "jobs" / "slurm" / "%j"
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                         slurm_max_num_timeout=self.profile.max_requeues)
        executor.update_parameters(name="ablate", **self.profile.executor_parameters())
        with executor.batch():
            handles = [executor.submit(job) for _, job in jobs]
        for (run_dir, _), handle in zip(jobs, handles):
            record_job(run_dir, executor=self.name, job_id=str(handle.job_id),
                       stdout=str(handle.paths.stdout), stderr=str(handle.paths.stderr))


def build_executor(name: str, options: ExecutorOptions) -> Executor:
    return EXECUTORS.get(name)(options)
