"""A stage's resumable state, written with torch.distributed.checkpoint (DCP): each rank
writes its shard of the trainable parameters and of the optimizer state, so a checkpoint of a
sharded 7B stage needs no rank to hold it whole, and DCP reshards on load, so a stage
checkpointed by 8 ranks resumes on 4 or on 1.

Layout: `checkpoint/` (DCP files, `meta.pt`: step and scheduler, `rng-<rank>.pt`). It is
written to `checkpoint.tmp/` and renamed into place once every rank has finished, so a job
killed mid-write leaves the previous checkpoint intact. Every load is `weights_only`."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from harness.training.distributed import World, barrier


def rng_state() -> dict:
    """This rank's random state: the CPU's and its own GPU's. Only its own: a state per device
    of the node would be indexed by device on resume, which fails on a node with fewer."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def set_rng_state(state: dict, written_by: int = 0) -> None:
    """`state` (rng_state's, saved by rank `written_by`) into this rank: the GPU part into
    this rank's device, whichever device that now is."""
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda")
    if saved is None or not torch.cuda.is_available():
        return
    if isinstance(saved, (list, tuple)):
        # a checkpoint from before: every device's state as its writer saw them; the writer
        # drew from its own device, cuda:<rank> on the one node runs had then
        saved = saved[written_by] if written_by < len(saved) else saved[0]
    torch.cuda.set_rng_state(saved, torch.cuda.current_device())


def _trainable(state: dict, names: set[str]) -> dict:
    return {k: v for k, v in state.items() if k in names}


def latest(stage_dir: Path) -> Path | None:
    """The checkpoint to resume from: `checkpoint/`, or the previous one a job killed during
    the swap left as `checkpoint.old/`."""
    for name in ("checkpoint", "checkpoint.old"):
        d = stage_dir / name
        if (d / "meta.pt").exists():
            return d
    return None


def save(stage_dir: Path, world: World, model: nn.Module, optimizer, scheduler, step: int,
         names: set[str]) -> None:
    """Collective: every rank calls it at the same step."""
    final, tmp, old = (stage_dir / n for n in ("checkpoint", "checkpoint.tmp", "checkpoint.old"))
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    barrier(world)
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": _trainable(model_state, names), "optim": optim_state},
             checkpoint_id=str(tmp), no_dist=not world.distributed)
    torch.save(rng_state(), tmp / f"rng-{world.rank}.pt")
    barrier(world)
    if world.is_main:
        torch.save({"step": step, "world": world.size, "scheduler": scheduler.state_dict()},
                   tmp / "meta.pt")
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    barrier(world)


def load(where: Path, world: World, model: nn.Module, optimizer, scheduler,
         names: set[str]) -> int:
    """Collective: the state at `where` into this rank's (possibly sharded) model and
    optimizer, whatever the number of ranks that wrote it; returns its step."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": _trainable(model_state, names), "optim": optim_state}
    # a parameter that had no gradient yet (unused so far) has no optimizer state in the
    # checkpoint; it keeps the fresh state the optimizer was given
    dcp.load(state, checkpoint_id=str(where), no_dist=not world.distributed,
             planner=DefaultLoadPlanner(allow_partial_load=True))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"], options=StateDictOptions(strict=False))
    meta = torch.load(where / "meta.pt", weights_only=True)
    scheduler.load_state_dict(meta["scheduler"])
    # a rank the writing world lacked (resumed on more ranks) starts from rank 0's state
    writer = world.rank if (where / f"rng-{world.rank}.pt").exists() else 0
    set_rng_state(torch.load(where / f"rng-{writer}.pt", weights_only=True), writer)
    return int(meta["step"])


def full_trainable_state(world: World, model: nn.Module, names: set[str]) -> dict:
    """Collective: the trainable parameters whole, on CPU, on rank 0 (empty elsewhere): what
    a finished stage saves for the stages and runs that reuse it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    return _trainable(state, names) if world.is_main else {}
