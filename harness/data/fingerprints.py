"""A data source's identity is its content, not its path: the fingerprint of a LLaVA JSON (its
bytes), of the image set its records name (each image's name and size, and the first bytes
of a spread sample of them), and of a benchmark's files. A run's key holds these instead of
paths (harness.config.run_config.identity_form), so an edited answer makes a new key and the
same data moved elsewhere keeps it.

Hashing a 665K-record JSON takes seconds, so a file's hash is kept in a small cache file in
the work directory (`cache/fingerprints.json`), by real path, size and mtime_ns: a plan
re-reads a file only after it changed. The image names a JSON's records refer to are kept
beside it by the JSON's hash, so the image set of an unchanged JSON is re-stat'ed (sizes
change without the JSON changing), not re-parsed."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from core.files import atomic_write_text, file_lock

CACHE_FILE = Path("cache") / "fingerprints.json"
NAMES_FOLDER = Path("cache") / "image-names"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
SAMPLE_IMAGES = 16          # images whose first bytes enter an image set's fingerprint
SAMPLE_BYTES = 64 * 1024
STAT_THREADS = 16           # stat calls in flight: network file systems answer them slowly
_CHUNK = 1 << 20


def _digest_file(path: Path) -> str:
    """The hash of a file's bytes: the one place a data file is read whole."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()[:16]


def _short(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


class FingerprintCache:
    """File hashes by (real path, size, mtime_ns), in memory and, with a work directory, in
    its cache file; the image names of each LLaVA JSON by the JSON's hash."""

    def __init__(self, workdir: Path | None = None):
        self.workdir = Path(workdir).resolve() if workdir is not None else None
        self._hashes: dict[str, list] = {}
        self._names: dict[str, list] = {}
        # image sets and folders, within one snapshot (one spec read): a grid of 50 runs
        # over one data set stats its images once
        self._memo: dict[tuple, object] = {}
        self._lock = threading.Lock()
        self._pending: dict[str, list] = {}
        self._deferred = 0
        if self.file is not None and self.file.is_file():
            try:
                self._hashes = json.loads(self.file.read_text())
            except (OSError, json.JSONDecodeError):
                self._hashes = {}   # a damaged cache is rebuilt, never trusted

    @property
    def file(self) -> Path | None:
        return self.workdir / CACHE_FILE if self.workdir is not None else None

    def file_hash(self, path: str | Path) -> str:
        real = os.path.realpath(path)
        st = os.stat(real)
        known = self._hashes.get(real)
        if (isinstance(known, list) and len(known) == 3 and known[0] == st.st_size
                and known[1] == st.st_mtime_ns):
            return known[2]
        digest = _digest_file(Path(real))
        self._hashes[real] = [st.st_size, st.st_mtime_ns, digest]
        self._pending[real] = self._hashes[real]
        if not self._deferred:
            self.flush()
        return digest

    @contextlib.contextmanager
    def deferred(self):
        """New hashes written to the cache file once, when the block ends (a folder of many
        files: one write, not one per file)."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
            if not self._deferred:
                self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if pending:
            self._save(pending)

    def _save(self, new: dict) -> None:
        if self.file is None:
            return
        with file_lock(self.file.with_suffix(".lock")):   # other plans and jobs write too
            try:
                merged = json.loads(self.file.read_text()) if self.file.is_file() else {}
            except (OSError, json.JSONDecodeError):
                merged = {}
            merged.update(new)
            atomic_write_text(self.file, json.dumps(merged))

    def image_names(self, json_path: Path, json_hash: str) -> list[list]:
        """[index, id, image] of each record of the LLaVA JSON that has an image."""
        if json_hash in self._names:
            return self._names[json_hash]
        stored = self.workdir / NAMES_FOLDER / f"{json_hash}.json" if self.workdir else None
        names = None
        if stored is not None and stored.is_file():
            try:
                names = json.loads(stored.read_text())
            except (OSError, json.JSONDecodeError):
                names = None
        if names is None:
            from harness.data.llava import read_llava_records
            names = [[i, str(r.get("id", i)), r["image"]]
                     for i, r in enumerate(read_llava_records(json_path))
                     if isinstance(r, dict) and isinstance(r.get("image"), str)]
            if stored is not None:
                atomic_write_text(stored, json.dumps(names))
        self._names[json_hash] = names
        return names

    def memo(self, key: tuple, compute):
        with self._lock:
            if key not in self._memo:
                self._memo[key] = compute()
            return self._memo[key]

    def new_snapshot(self) -> None:
        """Look at the images and folders again (file hashes stay keyed by size and mtime)."""
        with self._lock:
            self._memo.clear()


_active = FingerprintCache()


def use_workdir(workdir: str | Path | None) -> FingerprintCache:
    """Keep fingerprints in `workdir`'s cache file from now on (the CLI calls this with its
    --workdir before reading a spec; a job with its run's work directory)."""
    global _active
    resolved = Path(workdir).resolve() if workdir is not None else None
    if resolved != _active.workdir:
        _active = FingerprintCache(resolved)
    return _active


def active_cache() -> FingerprintCache:
    return _active


@dataclass(frozen=True)
class ImageSet:
    fingerprint: str
    missing: list[tuple[int, str, str]]    # (record index, record id, image) not on disk
    count: int                              # distinct images named


def _sizes(paths: list[str]) -> list[int]:
    """Each path's size, -1 where it is not a file; stat'ed in chunks by a thread pool (a
    thread pool's map makes a future per item: 665K of them cost more than the stats)."""
    def sizes(chunk: list[str]) -> list[int]:
        out = []
        for p in chunk:
            try:
                st = os.stat(p)
            except OSError:
                out.append(-1)
                continue
            out.append(st.st_size if stat.S_ISREG(st.st_mode) else -1)
        return out
    chunks = [paths[i:i + 4096] for i in range(0, len(paths), 4096)]
    if len(chunks) <= 1:
        return sizes(paths)
    with ThreadPoolExecutor(STAT_THREADS) as pool:
        return [s for part in pool.map(sizes, chunks) for s in part]


def _sample(paths: list[str], sizes: list[int]) -> list[str]:
    """The first bytes of SAMPLE_IMAGES images spread evenly over the sorted names: cheap,
    and it catches an image replaced by another of the same size."""
    present = [p for p, s in zip(paths, sizes) if s >= 0]
    if not present:
        return []
    step = max(1, len(present) // SAMPLE_IMAGES)
    out = []
    for p in present[::step][:SAMPLE_IMAGES]:
        with open(p, "rb") as f:
            out.append(hashlib.sha256(f.read(SAMPLE_BYTES)).hexdigest()[:16])
    return out


def _listing_fingerprint(root: Path, names: list[str]) -> tuple[str, list[int]]:
    base = str(root)
    paths = [os.path.join(base, n) for n in names]
    sizes = _sizes(paths)
    parts = [f"{n}\0{s}" for n, s in zip(names, sizes)]
    return _short([*parts, "sample", *_sample(paths, sizes)]), sizes


def llava_image_set(json_path: str | Path, image_root: str | Path,
                    cache: FingerprintCache | None = None) -> ImageSet:
    """The images a LLaVA JSON's records name under `image_root`: their fingerprint (names,
    sizes and a content sample), and the records whose image is not there."""
    cache = cache or _active
    json_hash = cache.file_hash(json_path)

    def compute() -> ImageSet:
        named = cache.image_names(Path(json_path), json_hash)
        distinct = sorted({image for _, _, image in named})
        fingerprint, sizes = _listing_fingerprint(Path(image_root), distinct)
        absent = {n for n, s in zip(distinct, sizes) if s < 0}
        missing = [(i, rid, image) for i, rid, image in named if image in absent]
        return ImageSet(fingerprint, missing, len(distinct))
    return cache.memo(("images", json_hash, os.path.realpath(image_root)), compute)


def folder_files(root: Path) -> list[str]:
    """Every file under `root`, relative, sorted; hidden files and folders left out."""
    out = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, root)
        out += [f if rel == "." else f"{rel}/{f}" for f in files if not f.startswith(".")]
    return sorted(out)


def path_fingerprint(path: str | Path, cache: FingerprintCache | None = None) -> str:
    """A benchmark's file or folder: a file by its bytes; a folder by each file's name and
    bytes, except images, by name, size and the content sample (an image folder of 150K
    files is listed, not read)."""
    cache = cache or _active
    path = Path(path)
    if path.is_file():
        return cache.file_hash(path)

    def compute() -> str:
        names = folder_files(path)
        images = [n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES]
        with cache.deferred():
            others = [f"{n}\0{cache.file_hash(path / n)}" for n in names
                      if Path(n).suffix.lower() not in IMAGE_SUFFIXES]
        listing, _ = _listing_fingerprint(path, images)
        return _short([*others, "images", listing])
    return cache.memo(("folder", os.path.realpath(path)), compute)
