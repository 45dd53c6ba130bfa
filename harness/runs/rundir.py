"""The run directory, the source of truth for one run or stage: resolved config, status
(RUNNING / DONE / FAILED with the reason), metrics.jsonl, checkpoints and results. Every file
that a reader may see half-written is written to a temporary name and renamed into place."""
from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from core.files import atomic_write_text, is_locked

# A finished stage's consolidated weights (everything trained up to it), in safetensors:
# nothing is unpickled to reuse or export them, and any tool reads them. Stages finished
# before safetensors have the older weights.pt, still read (weights_only).
STAGE_WEIGHTS = "weights.safetensors"
LEGACY_STAGE_WEIGHTS = "weights.pt"
# A LoRA stage's adapters as they trained (peft's names), kept beside its merged weights
ADAPTER_WEIGHTS = "adapter.safetensors"


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


def stage_weights_path(stage_dir: Path) -> Path:
    current = Path(stage_dir) / STAGE_WEIGHTS
    legacy = Path(stage_dir) / LEGACY_STAGE_WEIGHTS
    return current if current.exists() or not legacy.exists() else legacy


def read_stage_weights(stage_dir: Path) -> dict[str, torch.Tensor]:
    """A finished stage's consolidated weights, on the CPU."""
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
        record = {"state": state, "updated": time.time(), "host": socket.gethostname(),
                  "pid": os.getpid(), **extra}
        if reason:
            record["reason"] = reason
        atomic_write_text(self.path / "status.json", json.dumps(record, indent=1))

    # records -----------------------------------------------------------------------------
    def log(self, **metrics) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")

    def note_tracking_failure(self, line: str) -> None:
        """A call to the tracking store failed; the run goes on (harness.tracking.tolerant)."""
        with open(self.path / "tracking.log", "a") as f:
            f.write(line.rstrip("\n") + "\n")

    def tracking_failures(self) -> list[str]:
        f = self.path / "tracking.log"
        return f.read_text().splitlines() if f.exists() else []

    def metrics_log(self) -> list[dict]:
        f = self.path / "metrics.jsonl"
        return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.path / name, json.dumps(obj, indent=1, default=str))

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())
