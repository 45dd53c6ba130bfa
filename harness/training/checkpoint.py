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
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    own = where / f"rng-{world.rank}.pt"
    set_rng_state(torch.load(own if own.exists() else where / "rng-0.pt", weights_only=True))
    return int(meta["step"])


def full_trainable_state(world: World, model: nn.Module, names: set[str]) -> dict:
    """Collective: the trainable parameters whole, on CPU, on rank 0 (empty elsewhere): what
    a finished stage saves for the stages and runs that reuse it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    return _trainable(state, names) if world.is_main else {}
