"""The ranks of one run: who this process is, and the few collectives the harness needs.

A run has G ranks, one per GPU (or N CPU processes with gloo). Rank 0 owns the run directory,
its locks, status and MLflow; the other ranks follow its decisions, which rank 0 broadcasts.
With one rank nothing here talks to anyone: `World.single()` and every helper is a no-op, so
one code path serves every size.

The process group is set up from torchrun-style variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), which `ablate train --nproc N` and a multi-task submitit job
(harness.scheduler.job) export.

Two groups join the ranks: the training's (NCCL on GPUs, gloo on CPUs) for the tensors of a
step, and a gloo group for waits, on the CPU with a long timeout, for everything that only
coordinates (barriers, rank 0's decisions, gathering answers): the ranks wait there while
rank 0 downloads, builds or writes, however long that takes. A rank that fails aborts both
(`abort`), so its peers fail at once and rank 0 records why."""
from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

# The training's group (NCCL on GPUs) carries only the training's tensors. A rank that dies
# leaves the others in its collectives: gloo notices a closed peer at once, NCCL waits up to
# this timeout, so it is short enough that a hung job ends.
TIMEOUT_MIN = ("ABLATE_DIST_TIMEOUT_MIN", 15.0)
# Rank 0's file work (a cold download of the model, 28 GB of stage weights, a checkpoint
# renamed into place) is waited out by the others in a barrier or broadcast of their own: a
# gloo group on the CPU with this long timeout, so no NCCL collective ever sits through it
# (past its timeout NCCL's watchdog kills the job). A peer that dies closes its sockets, so
# gloo still notices that at once.
WAIT_TIMEOUT_MIN = ("ABLATE_DIST_WAIT_MIN", 360.0)

_waits: dist.ProcessGroup | None = None   # the gloo group for waits, once the ranks have joined


def _timeout(setting: tuple[str, float]) -> datetime.timedelta:
    name, default = setting
    return datetime.timedelta(minutes=float(os.environ.get(name, default)))


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @classmethod
    def single(cls, device: torch.device) -> World:
        return cls(0, 1, 0, device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_gpu(local_rank: int, visible: int) -> int:
    """The GPU index of the rank with this LOCAL_RANK: a node whose tasks each see every GPU
    gives rank r GPU r; a cluster that binds one GPU per task (--gpu-bind, gres per task)
    leaves each task its own GPU as cuda:0, where LOCAL_RANK itself would be out of range."""
    if visible < 1:
        raise RuntimeError(f"rank with LOCAL_RANK={local_rank} was told to use a GPU and sees "
                           "none (CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')!r})")
    return local_rank % visible


def init_world(device: str) -> World:
    """This process's place in the run: from the launcher's environment when WORLD_SIZE > 1
    (the process group is created once per process), else a single rank. `device` is the
    run config's (cpu | cuda | auto): ranks on GPUs use NCCL and the GPU local_gpu picks, on CPUs
    gloo."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if env_world_size() <= 1:
        return World.single(torch.device("cuda" if use_cuda else "cpu"))
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        where = torch.device("cuda", local_gpu(local, torch.cuda.device_count()))
        torch.cuda.set_device(where)
    else:
        where = torch.device("cpu")
    if not dist.is_initialized():
        _join("nccl" if use_cuda else "gloo", rank, size)
    return World(rank, size, local, where)


def _join(backend: str, rank: int, size: int) -> None:
    """The process group and the gloo group for waits. The groups live as long as the
    process (one process may run several runs, `ablate train a.yaml b.yaml`) and are
    destroyed when it exits, so NCCL's communicators are shut down, not left to the
    destructor; a failing rank aborts them earlier (`abort`)."""
    global _waits
    dist.init_process_group(backend, rank=rank, world_size=size, timeout=_timeout(TIMEOUT_MIN))
    _waits = dist.new_group(backend="gloo", timeout=_timeout(WAIT_TIMEOUT_MIN))
    atexit.register(_leave)


def _leave() -> None:
    global _waits
    _waits = None
    if dist.is_initialized():
        dist.destroy_process_group()


def abort(world: World) -> None:
    """Collective-free teardown for a rank that is failing: its communicators are aborted, so
    a peer waiting for it in a collective gets an error now (its sockets close) instead of
    waiting out the timeout, and this process can exit without hanging in NCCL's shutdown.
    Nothing collective works on this rank afterwards."""
    global _waits
    if not world.distributed or not dist.is_initialized():
        return
    _waits = None
    try:   # torch's own (private) abort; a rank failing must not fail again here instead
        dist.distributed_c10d._abort_process_group()
    except Exception:
        pass


def _wait_group() -> dist.ProcessGroup | None:
    """Where the ranks wait for each other: the gloo group for waits (None: the default
    group, for a process group someone else set up)."""
    return _waits


def broadcast(world: World, value=None):
    """Rank 0's `value` on every rank (any picklable object)."""
    if not world.distributed:
        return value
    box = [value if world.is_main else None]
    dist.broadcast_object_list(box, src=0, group=_wait_group())
    return box[0]


def all_reduce_sum(world: World, tensor: torch.Tensor) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_to_main(world: World, value) -> list | None:
    """Every rank's `value`, in rank order, on rank 0 (None elsewhere)."""
    if not world.distributed:
        return [value]
    out = [None] * world.size if world.is_main else None
    dist.gather_object(value, out, dst=0, group=_wait_group())
    return out


def barrier(world: World) -> None:
    """Every rank here: the others wait for rank 0 (its file work) in the group for waits."""
    if world.distributed:
        dist.barrier(group=_wait_group())


def shard(items: list, world: World) -> list:
    """This rank's contiguous share of `items` (rank r of R: the r-th of R near-equal runs)."""
    n = len(items)
    lo, hi = world.rank * n // world.size, (world.rank + 1) * n // world.size
    return items[lo:hi]


@contextlib.contextmanager
def main_holds(world: World, lock_path: Path, heartbeat_s: float = 10.0):
    """Rank 0 holds the file lock at `lock_path` (a run's or a stage's) while the block runs;
    the other ranks never touch it and wait for rank 0 to have it. Rank 0 waits for the lock
    with a heartbeat, so the others are never left in one collective for longer than the
    process group's timeout while another job finishes the stage they share."""
    from core.files import file_lock, try_file_lock
    if not world.distributed:
        with file_lock(lock_path):
            yield
        return
    if world.is_main:
        last = time.monotonic()
        while True:
            with try_file_lock(lock_path) as held:
                if held:
                    broadcast(world, "go")
                    yield
                    return
            time.sleep(0.2)
            if time.monotonic() - last > heartbeat_s:
                broadcast(world, "wait")
                last = time.monotonic()
    else:
        while broadcast(world) != "go":
            pass
        yield
