"""A stage's resumable state, written with torch.distributed.checkpoint (DCP): each rank
writes its shard of the trainable parameters and of the optimizer state, so a checkpoint of a
sharded 7B stage needs no rank to hold it whole, and DCP reshards on load, so a stage
checkpointed by 8 ranks resumes on 4 or on 1.

Layout: `checkpoint/` (DCP files, `meta.pt`: step and scheduler, `rng-<rank>.pt`,
`manifest.json`: every file's size and sha256) and the one before it, `checkpoint.prev/`. A
checkpoint is written to `checkpoint.tmp/`; once every rank has finished, each hashes the files
it wrote, rank 0 writes the manifest (the mark that the checkpoint is complete) and rotates it
into place, so a job killed mid-write leaves the previous two intact. On resume the newest
checkpoint's manifest is checked, the ranks sharing the hashing, before DCP reads anything; one
that does not match is set aside (`checkpoint.rejected/`) and the one before it is used, and
with none left the stage starts over; each step is said in the stage's notices. Nothing is
unpickled: DCP's metadata and byte items go through harness.training.safe_dcp, and `meta.pt`
and the RNG files are loaded `weights_only`."""
from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from core.file_manifest import ManifestError, check_files, entry, read_manifest, write_manifest
from harness.training.distributed import World, barrier, broadcast, gather_to_main
from harness.training.safe_dcp import (
    SafeLoadPlanner,
    SafeReader,
    UnsafeCheckpoint,
    read_metadata,
)


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


NEWEST, PREVIOUS, STAGING, REJECTED = ("checkpoint", "checkpoint.prev", "checkpoint.tmp",
                                       "checkpoint.rejected")
# the files rank r writes: its DCP shards and its random state; rank 0 hashes the rest
_OWNED = re.compile(r"^(?:__(\d+)_\d+\.distcp|rng-(\d+)\.pt)$")


def _owner(name: str) -> int:
    found = _OWNED.match(name)
    return int(found.group(1) or found.group(2)) if found else 0


def _hash_own(folder: Path, world: World) -> dict[str, dict]:
    """The entries of the files this rank wrote into `folder` (rank 0: also every file no rank
    owns by name: DCP's metadata, meta.pt)."""
    return {p.name: entry(p) for p in sorted(folder.iterdir())
            if p.is_file() and _owner(p.name) == world.rank}


def save(stage_dir: Path, world: World, model: nn.Module, optimizer, scheduler, step: int,
         names: set[str]) -> None:
    """Collective: every rank calls it at the same step."""
    tmp = stage_dir / STAGING
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
    hashed = gather_to_main(world, _hash_own(tmp, world))
    if world.is_main:
        files = {name: e for part in hashed for name, e in part.items()}
        # a rank's file its rank did not hash (a world smaller than the names say): hashed here
        files |= {p.name: entry(p) for p in tmp.iterdir() if p.is_file() and p.name not in files}
        write_manifest(tmp, files, step=step, world=world.size)
        _rotate(stage_dir)
    barrier(world)


def _rotate(stage_dir: Path) -> None:
    """Rank 0: the complete `checkpoint.tmp/` becomes the newest, the newest the previous,
    the previous goes. Each step is one rename or removal, and `_settle` finishes a sequence
    a kill cut short."""
    newest, previous, tmp = (stage_dir / n for n in (NEWEST, PREVIOUS, STAGING))
    if newest.exists():
        shutil.rmtree(previous, ignore_errors=True)
        newest.rename(previous)
    tmp.rename(newest)


def _settle(stage_dir: Path) -> None:
    """Rank 0, before resuming: a staging folder with its manifest is a checkpoint whose
    rotation a kill cut short, finished now; one without is a write cut short, removed."""
    tmp = stage_dir / STAGING
    if (tmp / "manifest.json").exists():
        _rotate(stage_dir)
    elif tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)


def _share(files: dict[str, dict], world: World) -> list[str]:
    """This rank's part of `files` to hash: the largest first, each to the least loaded rank,
    so every rank of the resuming world hashes about as much."""
    load = [0] * world.size
    mine = []
    for name, e in sorted(files.items(), key=lambda kv: (-kv[1]["size"], kv[0])):
        rank = load.index(min(load))
        load[rank] += e["size"] + 1
        if rank == world.rank:
            mine.append(name)
    return mine


def verify(folder: Path, world: World) -> list[str]:
    """Collective: what is wrong with the checkpoint in `folder` (empty: it is as its
    manifest says, and its DCP metadata asks for nothing but checkpoint data). Rank 0 reads
    the manifest; the ranks hash their shares of its files; nothing else of the folder is
    read before this says it is sound. The answer is the same on every rank."""
    files, problems = None, []
    if world.is_main:
        try:
            files = read_manifest(folder)["files"]
        except ManifestError as exc:
            problems = [f"{exc} (the checkpoint never completed, or was written before "
                        "checkpoints had manifests)"]
    files = broadcast(world, files)
    if files is not None:
        mine = {n: files[n] for n in _share(files, world)}
        found = gather_to_main(world, check_files(folder, mine))
        if world.is_main:
            problems = sorted(p for part in found for p in part)
            missing = {"meta.pt", ".metadata", "rng-0.pt"} - set(files)
            problems += [f"{n}: not in the manifest" for n in sorted(missing)]
            if not problems:
                try:
                    read_metadata(folder)
                except UnsafeCheckpoint as exc:
                    problems.append(str(exc))
                except Exception as exc:   # anything else that stops DCP reading it
                    problems.append(f".metadata: unreadable: {type(exc).__name__}: {exc}")
    return broadcast(world, problems)


def resume_point(stage_dir: Path, world: World,
                 notice: Callable[[str], None] | None = None) -> Path | None:
    """Collective: the checkpoint to resume from, verified (see `verify`), or None to start
    the stage over. A newest checkpoint that fails is set aside as `checkpoint.rejected/` and
    the previous one, if sound, takes its place; `notice` (rank 0) is told each finding and
    what was done about it."""
    if world.is_main:
        _settle(stage_dir)
    barrier(world)
    rejected = []
    for name in (NEWEST, PREVIOUS):
        folder = stage_dir / name
        if not broadcast(world, folder.exists() if world.is_main else None):
            continue
        problems = verify(folder, world)
        if not problems:
            if name == PREVIOUS and not rejected:
                rejected.append(f"{stage_dir / NEWEST} is missing")
            if world.is_main and rejected and notice is not None:
                step = read_manifest(folder).get("step")
                notice(f"{stage_dir.name}: resuming from the previous checkpoint (step {step}) "
                       f"instead: " + "; ".join(rejected))
            if world.is_main and name == PREVIOUS:
                folder.rename(stage_dir / NEWEST)
            barrier(world)
            return stage_dir / NEWEST
        rejected.append(f"{folder} was not used: " + ", ".join(problems))
        if world.is_main:
            shutil.rmtree(stage_dir / REJECTED, ignore_errors=True)
            folder.rename(stage_dir / REJECTED)
        barrier(world)
    if rejected and world.is_main and notice is not None:
        notice(f"{stage_dir.name}: no complete checkpoint is sound, the stage starts over "
               "from step 0: " + "; ".join(rejected))
    return None


def load(where: Path, world: World, model: nn.Module, optimizer, scheduler,
         names: set[str]) -> int:
    """Collective: the state at `where` (verified by resume_point) into this rank's (possibly
    sharded) model and optimizer, whatever the number of ranks that wrote it; returns its
    step."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": _trainable(model_state, names), "optim": optim_state}
    # a parameter that had no gradient yet (unused so far) has no optimizer state in the
    # checkpoint; it keeps the fresh state the optimizer was given
    dcp.load(state, storage_reader=SafeReader(str(where)), no_dist=not world.distributed,
             planner=SafeLoadPlanner(allow_partial_load=True))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"], options=StateDictOptions(strict=False))
    meta = torch.load(where / "meta.pt", weights_only=True)
    scheduler.load_state_dict(meta["scheduler"])
    # a rank the writing world lacked (resumed on more ranks) starts from rank 0's state; a
    # file the manifest does not list was not written with the checkpoint: never read
    written = read_manifest(where)["files"]
    writer = world.rank if f"rng-{world.rank}.pt" in written else 0
    set_rng_state(torch.load(where / f"rng-{writer}.pt", weights_only=True), writer)
    return int(meta["step"])


def full_trainable_state(world: World, model: nn.Module, names: set[str]) -> dict:
    """Collective: the trainable parameters whole, on CPU, on rank 0 (empty elsewhere): what
    a finished stage saves for the stages and runs that reuse it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    return _trainable(state, names) if world.is_main else {}
