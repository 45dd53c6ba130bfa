"""Which GPUs each local job sees.

submitit's local executor starts every job with CUDA_VISIBLE_DEVICES set to the GPUs it was
given, and to "" when given none: a job started from a shell that sees four GPUs sees none,
so `device: cuda` fails and `device: auto` trains on the CPU without a word. The local
executor therefore cuts the GPUs this shell sees into `--max-parallel` slots of
`--gpus-per-job` each; the dispatcher starts each job in a free slot, with that slot's GPUs
and one rank per GPU."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import HarnessError


class GpuSlotError(HarnessError):
    """The local executor's GPUs cannot be split as asked."""


def visible_gpus(environ: dict[str, str] | None = None) -> list[int]:
    """The physical indices of the GPUs this process sees: CUDA_VISIBLE_DEVICES's entries
    where it is set (a job must get the same physical GPUs, so the entries are passed on, not
    renumbered), else every GPU torch counts."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        import torch
        return list(range(torch.cuda.device_count()))
    entries = [e.strip() for e in listed.split(",") if e.strip()]
    bad = [e for e in entries if not e.isdigit()]
    if bad:
        raise GpuSlotError(f"CUDA_VISIBLE_DEVICES={listed!r}: the local executor hands GPUs to "
                           f"its jobs by index and cannot pass on {', '.join(bad)}; allowed "
                           "values: comma-separated GPU indices (see `nvidia-smi -L`)")
    return [int(e) for e in entries]


@dataclass(frozen=True)
class GpuSlots:
    """`slots[k]`: the GPUs of the job running in slot k (empty: the job sees no GPU)."""
    per_job: int
    slots: tuple[tuple[int, ...], ...]

    @classmethod
    def cpu_only(cls, max_parallel: int) -> GpuSlots:
        return cls(0, ((),) * max_parallel)

    @property
    def ranks_per_job(self) -> int:
        return max(1, self.per_job)

    def describe(self) -> str:
        if not self.per_job:
            return "no GPU per job"
        layout = "; ".join(f"slot {k}: GPU {_gpu_list(s)}" for k, s in enumerate(self.slots))
        return f"{self.per_job} GPU(s) and as many ranks per job ({layout})"


def _gpu_list(gpus: Sequence[int]) -> str:
    return ",".join(str(g) for g in gpus)


def gpu_slots(max_parallel: int, per_job: int | None, visible: list[int],
              uses_gpu: bool) -> GpuSlots:
    """Split `visible` into `max_parallel` slots. `per_job` None: one GPU per job when some
    run can use a GPU and this machine has one, else none. Slots never share a GPU: two jobs
    on one GPU would each plan for its whole memory."""
    if per_job is None:
        per_job = 1 if uses_gpu and visible else 0
    if per_job == 0:
        return GpuSlots.cpu_only(max_parallel)
    need = max_parallel * per_job
    if need > len(visible):
        seen = f"GPU {_gpu_list(visible)}" if visible else "no GPU"
        fits = len(visible) // per_job
        raise GpuSlotError(
            f"--max-parallel {max_parallel} x --gpus-per-job {per_job} needs {need} GPUs and "
            f"this machine shows {seen} (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); allowed: --max-parallel "
            + (f"1..{fits} at {per_job} GPU(s) per job, or " if fits else "")
            + "--gpus-per-job 0 (CPU only)")
    return GpuSlots(per_job, tuple(tuple(visible[k * per_job:(k + 1) * per_job])
                                   for k in range(max_parallel)))
