"""File manifests: each file's path (relative to its folder), size and sha256, kept as JSON
beside the files. Written last and atomically, a manifest is the mark that a folder (a
checkpoint) or a file (a finished stage's weights) is complete; checked before anything in it
is read, it is what makes a truncated, deleted or overwritten file a clear finding instead of
a traceback or, worse, silently different weights. JSON, never a pickle: reading a manifest
runs nothing."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from core.files import atomic_write_text

MANIFEST = "manifest.json"


class ManifestError(Exception):
    """A manifest that is missing or unreadable: the folder is not known to be complete."""


def entry(path: Path) -> dict:
    """`path`'s size and sha256, as a manifest records them."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"size": Path(path).stat().st_size, "sha256": digest}


def write_manifest(folder: Path, files: dict[str, dict], name: str = MANIFEST,
                   **extra) -> Path:
    """`files` (relative path -> entry) and `extra` as `folder/name`, in one rename."""
    path = Path(folder) / name
    atomic_write_text(path, json.dumps({"files": dict(sorted(files.items())), **extra},
                                       indent=1))
    return path


def read_manifest(folder: Path, name: str = MANIFEST) -> dict:
    """The manifest's record; ManifestError when it is missing or not one."""
    path = Path(folder) / name
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} is unreadable: {exc}") from None
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("size"), int)
            and isinstance(v.get("sha256"), str) for v in files.values()):
        raise ManifestError(f"{path} is not a manifest (no files with size and sha256)")
    return record


def size_problems(folder: Path, files: dict[str, dict]) -> dict[str, str]:
    """What is wrong with `files` under `folder` by their sizes alone (cheap: a stat each),
    by file: missing, outside the folder, or of another size than recorded."""
    folder = Path(folder)
    problems = {}
    for rel, want in sorted(files.items()):
        path = folder / rel
        if not path.resolve().is_relative_to(folder.resolve()):
            problems[rel] = "outside the folder"
        elif not path.is_file():
            problems[rel] = "missing"
        elif path.stat().st_size != want["size"]:
            problems[rel] = f"{path.stat().st_size} bytes, recorded {want['size']}"
    return problems


def check_files(folder: Path, files: dict[str, dict]) -> list[str]:
    """What is wrong with `files` under `folder`, one line per file: its size (see
    size_problems), else its sha256 against the recorded one. Empty: every file is as
    recorded."""
    problems = size_problems(folder, files)
    for rel, want in sorted(files.items()):
        if rel not in problems and entry(Path(folder) / rel)["sha256"] != want["sha256"]:
            problems[rel] = "sha256 differs from the recorded one"
    return [f"{rel}: {why}" for rel, why in sorted(problems.items())]
