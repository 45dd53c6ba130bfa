"""Slurm profiles (slurm/*.yaml): where and with what resources a spec's jobs run. A profile
is checked against the live cluster before anything is submitted: a partition the cluster
does not have is an error naming the profile file, the field and the partitions it has."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import HarnessError
from core.fields import ranged
from harness.config.schema import bind_dataclass
from harness.config.yamlio import load_yaml


@dataclass(frozen=True)
class GpuThroughput:
    """What `ablate plan` assumes a GPU sustains when it turns FLOPs into GPU-hours: the peak
    dense bf16 rate times a model-FLOPs utilization. `measured` (a report that
    `benchmarks/gpu_scale.py --out` wrote on that GPU, relative to the profile) replaces an
    assumed utilization by the one its paper-shaped stage-2 step measured, and the peak by
    the one it measured against; without it, 0.4 (an assumption, not a measurement)."""
    name: str = "A100"
    peak_tflops: float = ranged(312.0, gt=0)
    utilization: float = ranged(0.4, gt=0, le=1)
    memory_gb: float = ranged(80.0, gt=0)   # what `ablate plan` checks each stage against
    measured: str | None = None

    def hours(self, flops: float) -> float:
        return flops / (self.peak_tflops * 1e12 * self.utilization) / 3600

    def describe(self) -> str:
        source = (f"measured by benchmarks/gpu_scale.py ({self.measured})" if self.measured
                  else "assumed")
        return (f"{self.name} at {self.peak_tflops:g} TFLOPs peak x {self.utilization:.0%} "
                f"utilization ({source})")


def measured_throughput(gpu: GpuThroughput, src) -> GpuThroughput:
    """`gpu` with the name, peak and utilization of the gpu_scale report it names (its path
    made absolute); every problem with that report is an error at `gpu.measured`."""
    where = "gpu.measured"
    both = sorted({"utilization", "peak_tflops"} & set(src.data["gpu"]))
    if both:
        raise src.error(where, f"`measured` sets the GPU's utilization and peak; drop "
                               f"{' and '.join(f'`{b}`' for b in both)} or `measured`")
    path = src.resolve(where, gpu.measured)
    try:
        report = json.loads(path.read_text())
        stage2 = report["stage2"]
        mfu, peak = stage2["mfu"], report["peak_bf16_tflops"]
    except FileNotFoundError:
        raise src.error(where, f"no benchmark report at {path} (write one with "
                               "`python benchmarks/gpu_scale.py --out FILE` on the GPU)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise src.error(where, f"{path} is not a benchmarks/gpu_scale.py report "
                               f"({type(e).__name__}: {e})") from None
    if mfu is None or not peak:
        raise src.error(where, f"{path} has no MFU (measured on {report.get('device')!r} "
                               "without a known bf16 peak: rerun the benchmark on the GPU, "
                               "with --peak-tflops if it is not in the benchmark's table)")
    if not 0 < mfu <= 1:
        raise src.error(where, f"{path} reports an MFU of {mfu}, outside (0, 1]")
    return dataclasses.replace(gpu, name=str(report.get("device") or gpu.name),
                               peak_tflops=float(peak), utilization=float(mfu),
                               measured=str(path))


@dataclass(frozen=True)
class SlurmProfile:
    partition: str
    time_min: int = ranged(60, ge=1)
    cpus_per_task: int = ranged(8, ge=1)
    gpus_per_node: int = ranged(0, ge=0)
    # processes per node, each one rank of the run (None: one per GPU, or one without GPUs);
    # cpus_per_task is per task (data workers + 1), mem_gb per node
    tasks_per_node: int | None = ranged(None, ge=1)
    nodes: int = ranged(1, ge=1)    # per run: its ranks are nodes x tasks per node
    mem_gb: int = ranged(32, ge=1)
    array_parallelism: int = ranged(16, ge=1)  # at most this many tasks of one array at once
    signal_delay_s: int = ranged(120, ge=0)    # USR2 this long before the limit: requeue
    max_requeues: int = ranged(3, ge=0)        # time-limit requeues before it counts as failed
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)   # shell lines run before the job
    extra: dict[str, str] = field(default_factory=dict)  # any other sbatch option
    gpu: GpuThroughput = field(default_factory=GpuThroughput)  # for plan's GPU-hours only

    def __post_init__(self):
        # Slurm may send the signal up to a minute before `signal_delay_s` asks (its event
        # resolution); a signal that arrives before Python has installed submitit's handler
        # kills the job instead of requeueing it.
        if self.time_min * 60 < self.signal_delay_s + 90:
            raise ValueError(f"`time_min` {self.time_min} leaves too little time before the "
                             f"requeue signal (`signal_delay_s` {self.signal_delay_s}, which "
                             f"Slurm may send up to 60 s early): time_min * 60 must be at "
                             f"least signal_delay_s + 90")

    @property
    def ranks_per_node(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)

    @property
    def world_size(self) -> int:
        """The ranks of one run: every task of the job, over all its nodes."""
        return self.nodes * self.ranks_per_node

    def srun_args(self) -> list[str]:
        # From Slurm 22.05 srun no longer takes --cpus-per-task from sbatch's allocation, so
        # each task would get one core for itself and its loader workers. A task that exits
        # non-zero ends the step at once instead of leaving the others in a collective until
        # NCCL's timeout.
        return [f"--cpus-per-task={self.cpus_per_task}", "--kill-on-bad-exit=1"]

    def executor_parameters(self) -> dict:
        params = {"slurm_partition": self.partition, "slurm_time": self.time_min,
                  "slurm_cpus_per_task": self.cpus_per_task, "slurm_mem": f"{self.mem_gb}GB",
                  "slurm_array_parallelism": self.array_parallelism,
                  "slurm_signal_delay_s": self.signal_delay_s,
                  "slurm_setup": list(self.setup), "slurm_nodes": self.nodes,
                  "slurm_srun_args": self.srun_args(),
                  "slurm_additional_parameters": dict(self.extra)}
        if self.gpus_per_node:
            params["slurm_gpus_per_node"] = self.gpus_per_node
        params["slurm_tasks_per_node"] = self.ranks_per_node
        for name in ("account", "qos", "constraint"):
            if getattr(self, name):
                params[f"slurm_{name}"] = getattr(self, name)
        return params


def cluster_partitions() -> list[str]:
    if shutil.which("sinfo") is None:
        raise HarnessError("the slurm executor needs a Slurm cluster, and `sinfo` is not on "
                           "PATH; start the local test cluster with `slurm/cluster.sh start`")
    proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                          timeout=30)
    if proc.returncode != 0:
        raise HarnessError(f"cannot talk to the Slurm controller: {proc.stderr.strip()}")
    return sorted({p.strip().rstrip("*") for p in proc.stdout.split() if p.strip()})


def spec_profile(src, value: str) -> str:
    """The absolute path of the profile a spec's `slurm:` names (relative to the spec file),
    checked: a missing file is an error at the spec's field, a bad one names its own field."""
    profile = src.resolve("slurm", value)
    if not profile.is_file():
        raise src.error("slurm", f"Slurm profile not found: {profile}")
    load_profile(profile, check_cluster=False)
    return str(profile)


def load_profile(path: str | Path, check_cluster: bool = True) -> SlurmProfile:
    src = load_yaml(path)
    profile = bind_dataclass(SlurmProfile, src.data, src, "")
    if profile.gpu.measured:
        profile = dataclasses.replace(profile, gpu=measured_throughput(profile.gpu, src))
    if check_cluster:
        partitions = cluster_partitions()
        if profile.partition not in partitions:
            raise src.error("partition", f"the cluster has no partition "
                                         f"'{profile.partition}'; partitions: "
                            + ", ".join(partitions))
    return profile
