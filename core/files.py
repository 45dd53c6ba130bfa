"""Files that concurrent jobs share safely: a file replaced in one rename, a folder built
once under a temporary name and renamed into place (concurrent jobs either find the finished
folder or build their own identical copy and discard it), and advisory locks that the kernel
drops when their holder dies."""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build_folder_once(target: Path, build: Callable[[Path], None],
                      done: Callable[[Path], bool] | None = None) -> Path:
    """`target`, built by `build(staging)` unless it is already complete (`done`, default: it
    exists). A job that loses the race to rename discards its copy: both are identical."""
    target = Path(target)
    finished = done or Path.exists
    if finished(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        build(staging)
        try:
            os.replace(staging, target)
        except OSError:
            pass   # another job renamed its copy first
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@contextmanager
def file_lock(path: Path):
    """An exclusive lock held while the block runs. The kernel drops it when the holder dies
    (even by SIGKILL), so a held lock means a live process is working on the directory; on
    shared storage flock goes through the NFS lock manager."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def try_file_lock(path: Path):
    """The lock if it is free now (yields True, held until the block ends), else yields
    False at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_locked(path: Path) -> bool:
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
