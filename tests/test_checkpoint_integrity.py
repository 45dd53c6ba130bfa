"""What a run writes is checked before it is trusted (issue 32): a checkpoint whose files do
not match its manifest is never read by DCP and the previous one is used (or the stage starts
over), each said in the logs and the run's status, and the resumed run ends with the weights of
the run that was never interrupted; a planted DCP `.metadata` pickle never runs; a finished
stage's weights that differ from their recorded hash are never used but trained again; a full
disk ends the run FAILED with its cause, and the run resumes once there is room.

One interrupted run (alignment checkpointed at steps 2 and 3 of 4, then stopped) is copied for
each fault, so each case costs one resumed run."""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import re
import shutil
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from core.file_manifest import entry, read_manifest, write_manifest
from harness.runs import rundir
from harness.runs.pipeline import run
from harness.specs.run_file import load_run_config
from harness.training import StageInterrupted
from harness.training.safe_dcp import UnsafeCheckpoint, read_metadata
from tests.tiny import tiny_run_yaml


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The config, a run trained straight through (a/) and the same run stopped at step 3 of
    alignment (b/: align's checkpoint/ at step 3, checkpoint.prev/ at step 2)."""
    root = tmp_path_factory.mktemp("integrity")
    path = root / "cfg.yaml"
    path.write_text(tiny_run_yaml("integrity"))
    cfg = load_run_config(path)
    run(cfg, root / "a", progress=False)
    with pytest.raises(StageInterrupted):
        run(cfg, root / "b", progress=False, stop_after=3)
    return cfg, root


def stage_dir(work: Path, name: str) -> Path:
    (found,) = (work / "stages").glob(f"{name}-*")
    return found


def weights(work: Path, name: str = "sft") -> dict:
    return load_file(stage_dir(work, name) / "weights.safetensors")


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def copy_of(root: Path, name: str, tmp_path: Path) -> Path:
    work = tmp_path / "work"
    shutil.copytree(root / name, work)
    return work


def started_at(work: Path, name: str) -> list[int]:
    log = stage_dir(work, name) / "metrics.jsonl"
    return [m["step"] for m in map(json.loads, log.read_text().splitlines())
            if m.get("event") == "start"]


def notices(work: Path, cfg) -> list[str]:
    """The run's notices, from its status and (the same) from its log."""
    run_dir = work / "runs" / cfg.key
    status = json.loads((run_dir / "status.json").read_text())
    logged = [m["message"] for m in map(json.loads, (run_dir / "metrics.jsonl").read_text()
                                        .splitlines()) if m.get("event") == "notice"]
    assert status.get("notices", []) == logged
    return logged


def shard(folder: Path) -> Path:
    (found,) = folder.glob("*.distcp")
    return found


def overwrite_inside(path: Path, size: int = 4096) -> None:
    """`size` bytes of garbage in the middle of `path` (its length unchanged)."""
    data = bytearray(path.read_bytes())
    size = min(size, len(data) // 2)
    start = (len(data) - size) // 2
    data[start:start + size] = os.urandom(size)
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


CORRUPTIONS = {
    "meta.pt deleted": lambda ck: (ck / "meta.pt").unlink(),
    "rng file deleted": lambda ck: (ck / "rng-0.pt").unlink(),
    "shard truncated": lambda ck: truncate(shard(ck)),
    "4 KiB overwritten inside the shard": lambda ck: overwrite_inside(shard(ck)),
    "DCP metadata deleted": lambda ck: (ck / ".metadata").unlink(),
    "manifest deleted": lambda ck: (ck / "manifest.json").unlink(),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_bad_newest_checkpoint_falls_back_to_the_previous(base, tmp_path, corrupt):
    cfg, root = base
    work = copy_of(root, "b", tmp_path)
    align = stage_dir(work, "align")
    assert read_manifest(align / "checkpoint")["step"] == 3
    assert read_manifest(align / "checkpoint.prev")["step"] == 2
    corrupt(align / "checkpoint")
    run(cfg, work, progress=False)
    assert started_at(work, "align") == [0, 2]       # resumed at 2, not 3 (nor 0)
    said = notices(work, cfg)
    assert len(said) == 1 and "resuming from the previous checkpoint (step 2)" in said[0]
    assert same_weights(weights(work), weights(root / "a"))
    assert (align / "checkpoint.rejected").exists()  # kept for a look, never read


def test_no_sound_checkpoint_starts_the_stage_over_and_says_why(base, tmp_path):
    cfg, root = base
    work = copy_of(root, "b", tmp_path)
    align = stage_dir(work, "align")
    overwrite_inside(shard(align / "checkpoint"))
    (align / "checkpoint.prev" / "meta.pt").unlink()
    run(cfg, work, progress=False)
    assert started_at(work, "align") == [0, 0]
    (said,) = notices(work, cfg)
    assert "starts over from step 0" in said and "meta.pt: missing" in said
    assert "sha256 differs" in said
    assert same_weights(weights(work), weights(root / "a"))


class Planted:
    """A pickle that, unpickled, creates the file `marker`: what a planted `.metadata` would
    do with a shell command instead."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("forged_manifest", [False, True], ids=["stale manifest",
                                                                 "manifest forged to match"])
def test_a_planted_metadata_pickle_is_never_unpickled(base, tmp_path, forged_manifest):
    cfg, root = base
    work = copy_of(root, "b", tmp_path)
    newest = stage_dir(work, "align") / "checkpoint"
    marker = tmp_path / "pwned"
    (newest / ".metadata").write_bytes(pickle.dumps(Planted(marker)))
    if forged_manifest:   # who can write the folder can rewrite its manifest too
        record = read_manifest(newest)
        files = {**record.pop("files"), ".metadata": entry(newest / ".metadata")}
        write_manifest(newest, files, **record)
    with pytest.raises(UnsafeCheckpoint, match=r"io\.open"):
        read_metadata(newest)
    assert not marker.exists()
    run(cfg, work, progress=False)
    assert not marker.exists()
    assert started_at(work, "align") == [0, 2]
    (said,) = notices(work, cfg)
    # the planted pickle's size depends on the temporary folder's name
    assert re.search(r"io\.open" if forged_manifest else r"\.metadata: \d+ bytes, recorded",
                     said), said
    assert same_weights(weights(work), weights(root / "a"))


def other_run(cfg):
    """A run sharing `cfg`'s alignment stage (reused from its folder), another fine-tuning."""
    return dataclasses.replace(cfg, name="other", stages=[
        cfg.stages[0], dataclasses.replace(cfg.stages[1], lr=5e-4)])


def garble_body(path: Path) -> None:
    """Overwrite tensor bytes after the safetensors header: the file still parses."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header:header + 64] = bytes(64)
    path.write_bytes(bytes(data))


WEIGHT_FAULTS = {
    "bytes overwritten, header intact": garble_body,
    "truncated": truncate,
    "deleted": Path.unlink,
}


@pytest.mark.parametrize("fault", WEIGHT_FAULTS.values(), ids=WEIGHT_FAULTS.keys())
def test_bad_stage_weights_are_never_used_but_trained_again(base, tmp_path, fault):
    cfg, root = base
    work = copy_of(root, "a", tmp_path)
    align = stage_dir(work, "align")
    good = (align / "weights.safetensors").read_bytes()
    fault(align / "weights.safetensors")
    if fault is garble_body:   # what a rebuild or an export would have loaded
        with pytest.raises(rundir.StageWeightsError, match="sha256 differs"):
            rundir.read_stage_weights(align)
    other = other_run(cfg)
    second = run(other, work, progress=False)
    stages = json.loads((second.path / "stages.json").read_text())
    assert [s["reused"] for s in stages] == [False, False]
    assert (align / "weights.safetensors").read_bytes() == good
    (said,) = notices(work, other)
    assert "its weights are not used; the stage is trained again" in said
    assert rundir.read_stage_weights(align).keys() == load_file(
        stage_dir(root / "a", "align") / "weights.safetensors").keys()


def test_bad_stage_weights_without_a_checkpoint_retrain_from_step_0(base, tmp_path):
    cfg, root = base
    work = copy_of(root, "a", tmp_path)
    align = stage_dir(work, "align")
    good = (align / "weights.safetensors").read_bytes()
    garble_body(align / "weights.safetensors")
    for folder in align.glob("checkpoint*"):
        shutil.rmtree(folder)
    run(other_run(cfg), work, progress=False)
    assert started_at(work, "align") == [0, 0]      # its first training, then this one
    assert (align / "weights.safetensors").read_bytes() == good


class FullDisk:
    """A disk that fills up: once `fills(path)` is true of a write, every write under `root`
    (a file opened for writing, a folder made) fails with ENOSPC until a file there is removed
    (its room frees the disk) or `free()` is called. Seen through an audit hook
    (sys.addaudithook: every open, os.open and mkdir), so the code under test is not
    patched; the hook stays installed after the test (audit hooks cannot be removed) and
    does nothing once `active` is off."""

    def __init__(self, root: Path, fills):
        self.root, self.fills = str(root), fills
        self.full = self.active = False
        self.refused: list[str] = []
        sys.addaudithook(self.hook)

    def free(self) -> None:
        self.full = False

    def hook(self, event: str, args: tuple) -> None:
        if not self.active or event not in ("open", "os.mkdir", "os.remove"):
            return
        path = args[0]
        if isinstance(path, bytes):
            path = path.decode()
        if not isinstance(path, (str, os.PathLike)) or not str(path).startswith(self.root):
            return
        path = str(path)
        if event == "os.remove":   # a file removed gives its room back
            if self.full and os.path.isfile(path) and os.path.getsize(path) > 0:
                self.full = False
            return
        if event == "open":
            mode, flags = args[1], args[2]
            writes = (any(c in mode for c in "wax+") if isinstance(mode, str)
                      else bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
            if not writes:
                return
        if not self.full and self.fills(path):
            self.full = True
        if self.full:
            self.refused.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def test_a_full_disk_fails_the_run_with_its_cause_and_a_rerun_resumes(base, tmp_path):
    cfg, root = base
    work = tmp_path / "work"
    # the disk fills while alignment writes its second checkpoint (step 4 of 4)
    first = lambda p: "align-" in p and "/checkpoint.tmp/" in p and bool(  # noqa: E731
        list((work / "stages").glob("align-*/checkpoint/manifest.json")))
    disk = FullDisk(work, first)
    disk.active = True
    try:
        with pytest.raises(BaseException) as failed:   # noqa: PT011 (DCP wraps OSError)
            run(cfg, work, progress=False)
    finally:
        disk.active = False
    assert not isinstance(failed.value, (KeyboardInterrupt, SystemExit))
    assert disk.refused and all("checkpoint.tmp" in p for p in disk.refused[:1])
    status = json.loads((work / "runs" / cfg.key / "status.json").read_text())
    assert status["state"] == "FAILED", status
    assert status["reason"].startswith("disk full (No space left on device) while writing")
    assert "free space" in status["reason"]
    assert "Traceback" not in status["reason"]
    disk.free()
    run(cfg, work, progress=False)
    assert started_at(work, "align") == [0, 2]      # resumed from its step-2 checkpoint
    assert same_weights(weights(work), weights(root / "a"))


def _two_rank_checkpoints(rank: int, size: int, port: int, folder: str) -> None:
    """A gloo rank: two checkpoints of a small model (DCP spreads its writes over both
    ranks), rank 1's shard of the newest garbled, then the resume point and its step."""
    import torch

    from harness.training import checkpoint
    from harness.training.distributed import barrier, init_world
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world = init_world("cpu")
    folder = Path(folder)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    names = {n for n, _ in model.named_parameters()}
    for step in (1, 2):
        model(torch.ones(2, 8)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        checkpoint.save(folder, world, model, optimizer, scheduler, step, names)
    files = sorted(read_manifest(folder / "checkpoint")["files"])
    if world.is_main:
        overwrite_inside(folder / "checkpoint" / "__1_0.distcp")
    barrier(world)
    said: list[str] = []
    where = checkpoint.resume_point(folder, world, said.append if world.is_main else None)
    resumed = checkpoint.load(where, world, model, optimizer, scheduler, names)
    (folder / f"rank-{rank}.json").write_text(json.dumps(
        {"files": files, "where": where.name, "step": resumed, "said": said}))


def test_two_ranks_share_the_hashing_and_agree_on_the_fallback(tmp_path):
    """Each rank hashes what it wrote; on resume both check a share of the files, and a shard
    written by rank 1 that no longer matches sends both ranks to the previous checkpoint."""
    import torch.multiprocessing as mp

    from harness.training.checkpoint import _share
    from harness.training.distributed import World
    from harness.training.launch import free_port
    mp.spawn(_two_rank_checkpoints, args=(2, free_port(), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert {"__0_0.distcp", "__1_0.distcp", "rng-0.pt", "rng-1.pt", "meta.pt",
            ".metadata"} <= set(ranks[0]["files"])
    assert [(r["where"], r["step"]) for r in ranks] == [("checkpoint", 1)] * 2
    (said,) = ranks[0]["said"]
    assert "step 1" in said and "__1_0.distcp: sha256 differs" in said
    assert not ranks[1]["said"]
    files = read_manifest(tmp_path / "checkpoint")["files"]
    shares = [_share(files, World(r, 2, r, None)) for r in (0, 1)]
    assert shares[0] and shares[1] and sorted(shares[0] + shares[1]) == sorted(files)


def test_a_planted_byte_item_in_a_shard_is_read_weights_only(tmp_path):
    """The second wall: a shard given a pickle that runs code as one of its byte items (an
    optimizer setting), with metadata and manifest forged to match, passes the hashes but is
    read `weights_only` (DCP's default planner would unpickle it): refused, never run."""
    import io

    import torch
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    from harness.training import checkpoint
    from harness.training.distributed import World
    world = World.single(torch.device("cpu"))
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    names = {n for n, _ in model.named_parameters()}
    checkpoint.save(tmp_path, world, model, optimizer, scheduler, 1, names)
    newest = tmp_path / "checkpoint"
    metadata = read_metadata(newest)
    index, where = next((i, s) for i, s in metadata.storage_data.items()
                        if isinstance(metadata.state_dict_metadata[i.fqn], BytesStorageMetadata))
    marker = tmp_path / "pwned"
    planted = io.BytesIO()
    torch.save(Planted(marker), planted)
    assert not marker.exists()
    shard_path = newest / where.relative_path
    offset = shard_path.stat().st_size
    shard_path.write_bytes(shard_path.read_bytes() + planted.getvalue())
    metadata.storage_data[index] = dataclasses.replace(where, offset=offset,
                                                       length=len(planted.getvalue()))
    (newest / ".metadata").write_bytes(pickle.dumps(metadata))
    record = read_manifest(newest)
    write_manifest(newest, {n: entry(newest / n) for n in record.pop("files")}, **record)
    assert checkpoint.verify(newest, world) == []      # the forgery passes every hash
    with pytest.raises(BaseException, match="Weights only load failed"):  # noqa: PT011
        checkpoint.load(newest, world, model, optimizer, scheduler, names)
    assert not marker.exists()
