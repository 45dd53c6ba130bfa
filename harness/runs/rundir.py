"""The run directory, the source of truth for one run or stage: resolved config, status
(RUNNING / DONE / FAILED with the reason), metrics.jsonl, checkpoints and results. Every file
that a reader may see half-written is written to a temporary name and renamed into place."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from core.errors import HarnessError
from core.file_manifest import ManifestError, check_files, entry, read_manifest, write_manifest
from core.files import atomic_write_text, is_locked

# A finished stage's consolidated weights (everything trained up to it), in safetensors:
# nothing is unpickled to reuse or export them, and any tool reads them. Stages finished
# before safetensors have the older weights.pt, still read (weights_only).
STAGE_WEIGHTS = "weights.safetensors"
LEGACY_STAGE_WEIGHTS = "weights.pt"
# A LoRA stage's adapters as they trained (peft's names), kept beside its merged weights
ADAPTER_WEIGHTS = "adapter.safetensors"
# Their sizes and sha256 as they were when the stage finished (core.file_manifest)
WEIGHTS_MANIFEST = "weights.manifest.json"
# Held by a run in flight, given back before its last status is written: on a full disk, the
# room that status needs
RESERVE = ".reserve"
RESERVE_BYTES = 1 << 20


def save_stage_weights(state: dict[str, torch.Tensor], stage_dir: Path,
                       file_name: str = STAGE_WEIGHTS) -> Path:
    """Write `state` atomically as the stage's safetensors file (or `file_name`). Tensors sharing
    storage (safetensors refuses them) and non-contiguous views are copied; nothing else
    is."""
    from safetensors.torch import save_file
    seen: set[int] = set()
    flat = {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
        seen.add(tensor.untyped_storage().data_ptr())
        flat[name] = tensor
    path = Path(stage_dir) / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    save_file(flat, tmp)
    os.replace(tmp, path)
    return path


def record_stage_weights(stage_dir: Path) -> None:
    """The stage's weight files (weights.safetensors, and a LoRA stage's adapters) with
    their sizes and sha256, in weights.manifest.json: written when the stage finishes, checked
    by every reuse (stage_weights_problem)."""
    stage_dir = Path(stage_dir)
    files = {p.name: entry(p) for p in (stage_weights_path(stage_dir),
                                        stage_dir / ADAPTER_WEIGHTS) if p.exists()}
    write_manifest(stage_dir, files, WEIGHTS_MANIFEST)


def stage_weights_problem(stage_dir: Path) -> str | None:
    """Why a finished stage's weights must not be used (None: they are as recorded). A stage
    finished before hashes were recorded has no manifest: its file is hashed now and the
    record written, so from now on it is checked too."""
    stage_dir = Path(stage_dir)
    try:
        files = read_manifest(stage_dir, WEIGHTS_MANIFEST)["files"]
    except ManifestError:
        if not stage_weights_path(stage_dir).exists():
            return f"{stage_weights_path(stage_dir)} is missing"
        if (stage_dir / WEIGHTS_MANIFEST).exists():
            return f"{stage_dir / WEIGHTS_MANIFEST} is unreadable"
        record_stage_weights(stage_dir)
        return None
    problems = check_files(stage_dir, files)
    if stage_weights_path(stage_dir).name not in files:
        problems.append(f"{stage_weights_path(stage_dir).name}: not in the manifest")
    return f"{stage_dir}: " + ", ".join(problems) if problems else None


class StageWeightsError(HarnessError):
    """A finished stage's weights that are not what was recorded when it finished."""


def stage_weights_path(stage_dir: Path) -> Path:
    current = Path(stage_dir) / STAGE_WEIGHTS
    legacy = Path(stage_dir) / LEGACY_STAGE_WEIGHTS
    return current if current.exists() or not legacy.exists() else legacy


def read_stage_weights(stage_dir: Path, verify: bool = True) -> dict[str, torch.Tensor]:
    """A finished stage's consolidated weights, on the CPU; checked against the hashes
    recorded when it finished (StageWeightsError if they differ) unless `verify` is False
    (the caller has just checked or written them)."""
    problem = verify and stage_weights_problem(stage_dir)
    if problem:
        raise StageWeightsError(f"{problem}: these are not the weights the stage trained; "
                                "`ablate run` trains the stage again")
    path = stage_weights_path(stage_dir)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(path)
    return torch.load(path, weights_only=True, map_location="cpu")


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    # status ------------------------------------------------------------------------------
    def status(self) -> dict:
        f = self.path / "status.json"
        return json.loads(f.read_text()) if f.exists() else {"state": "NEW"}

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    @property
    def claim_path(self) -> Path:
        """Held (flock) by the `ablate run` submitting this run, until its job is recorded
        (harness.scheduler.submit): a second submitter skips a claimed run."""
        return self.path / ".claim"

    @property
    def busy(self) -> bool:
        """A live process holds this directory's lock."""
        return is_locked(self.lock_path)

    @property
    def done(self) -> bool:
        return self.status()["state"] == "DONE"

    def set_status(self, state: str, reason: str | None = None, **extra) -> None:
        """The status, keeping the notices of the attempt (`notices=[]` starts afresh)."""
        notices = extra.pop("notices", None)
        if notices is None:
            with contextlib.suppress(OSError, ValueError):
                notices = self.status().get("notices")
        record = {"state": state, "updated": time.time(), "host": socket.gethostname(),
                  "pid": os.getpid(), **extra, **({"notices": notices} if notices else {})}
        if reason:
            record["reason"] = reason
        atomic_write_text(self.path / "status.json", json.dumps(record, indent=1))

    def notice(self, message: str) -> None:
        """Something the run did that a reader of its status must know (a checkpoint or
        stage weights that failed their check, and what was used instead): in the status's
        notices and the metrics log."""
        status = self.status()
        status["notices"] = [*status.get("notices", []), message]
        atomic_write_text(self.path / "status.json", json.dumps(status, indent=1))
        self.log(event="notice", message=message)

    # room for the last word on a full disk -------------------------------------------------
    def reserve(self) -> None:
        """Hold RESERVE_BYTES (written, not sparse) until release(); best effort."""
        with contextlib.suppress(OSError), open(self.path / RESERVE, "wb") as f:
            f.write(b"\0" * RESERVE_BYTES)
            f.flush()
            os.fsync(f.fileno())

    def release(self) -> None:
        with contextlib.suppress(OSError):
            (self.path / RESERVE).unlink()

    # records -----------------------------------------------------------------------------
    def log(self, **metrics) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "metrics.jsonl", "ab+") as f:
            # a line an earlier write left cut short (a full disk) stays a line of its own
            size, cut = f.seek(0, os.SEEK_END), False
            if size:
                f.seek(size - 1)
                cut = f.read(1) != b"\n"
            f.write((("\n" if cut else "") + json.dumps(metrics) + "\n").encode())

    def note_tracking_failure(self, line: str) -> None:
        """A call to the tracking store failed; the run goes on (harness.tracking.tolerant)."""
        with open(self.path / "tracking.log", "a") as f:
            f.write(line.rstrip("\n") + "\n")

    def tracking_failures(self) -> list[str]:
        f = self.path / "tracking.log"
        return f.read_text().splitlines() if f.exists() else []

    def metrics_log(self) -> list[dict]:
        """The log's records; a line cut short (a full disk, a kill mid-write) is dropped."""
        f = self.path / "metrics.jsonl"
        records = []
        for line in f.read_text().splitlines() if f.exists() else []:
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.path / name, json.dumps(obj, indent=1, default=str))

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())
