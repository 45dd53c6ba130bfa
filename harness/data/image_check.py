"""Every image a LLaVA source names, decoded once before training (`ablate check-data`): a
0-byte, truncated or non-image file is otherwise found when a batch reaches it, mid-stage,
after alignment has trained. Decoding runs in a process pool with a progress bar, and the
verdict is kept in the work directory by the image set's fingerprint (names, sizes and a
content sample: harness.data.fingerprints), so a source is decoded once, not per plan."""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from core.files import atomic_write_text
from harness.data.fingerprints import FingerprintCache, active_cache, llava_image_set

CHECKS_FOLDER = Path("cache") / "check-data"
IN_PROCESS_BELOW = 64     # fewer images than this are decoded without a pool


@dataclass(frozen=True)
class BadImage:
    index: int          # the first record naming the image
    id: str
    image: str          # relative to the image folder
    problem: str
    records: int = 1    # records naming it

    def line(self, root: Path) -> str:
        also = f" (and {self.records - 1} more records)" if self.records > 1 else ""
        return f"record {self.index} (id {self.id!r}){also}: {root / self.image}: {self.problem}"


@dataclass(frozen=True)
class ImageCheck:
    json: Path
    root: Path
    fingerprint: str
    images: int
    bad: list[BadImage]
    cached: bool           # the verdict came from an earlier check of the same image set

    def bad_images(self) -> set[str]:
        return {b.image for b in self.bad}


def decode_problem(path: str) -> str | None:
    """None if `path` decodes as PIL decodes it for training, else why not."""
    from PIL import Image
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as im:   # structure: header and chunks
            im.verify()
        with Image.open(path) as im:   # pixels: a truncated file fails here
            im.load()
    except FileNotFoundError:
        return "not found"
    except Exception as exc:   # PIL raises many types for broken files; each is a verdict
        return f"does not decode ({type(exc).__name__}: {exc})"
    return None


def _decode_all(paths: list[str], workers: int, progress: bool) -> list[str | None]:
    from tqdm import tqdm
    bar = dict(total=len(paths), desc="check-data", unit="img", disable=not progress,
               file=sys.stderr, mininterval=1.0)
    if len(paths) < IN_PROCESS_BELOW or workers <= 1:
        return [decode_problem(p) for p in tqdm(paths, **bar)]
    # fork, as torch's DataLoader does on Linux: spawn would re-run the caller's __main__ (a
    # script or notebook without a main guard breaks), and the children only decode with PIL
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        chunk = max(1, min(256, len(paths) // (workers * 8)))
        return list(tqdm(pool.map(decode_problem, paths, chunksize=chunk), **bar))


def default_workers() -> int:
    return max(1, min(32, len(os.sched_getaffinity(0))))


def check_llava_images(json_path: str | Path, image_root: str | Path,
                       workers: int | None = None, progress: bool = True,
                       cache: FingerprintCache | None = None) -> ImageCheck:
    """Decode every distinct image the JSON's records name under `image_root` (missing ones
    are bad too); an image set checked before (same fingerprint) is not decoded again."""
    cache = cache or active_cache()
    json_path, root = Path(json_path), Path(image_root)
    image_set = llava_image_set(json_path, root, cache)
    json_hash = cache.file_hash(json_path)
    stored = (cache.workdir / CHECKS_FOLDER / f"{json_hash}-{image_set.fingerprint}.json"
              if cache.workdir is not None else None)
    named = cache.image_names(json_path, json_hash)
    if stored is not None and stored.is_file():
        try:
            problems = json.loads(stored.read_text())
            return ImageCheck(json_path, root, image_set.fingerprint, image_set.count,
                              _by_record(named, problems), cached=True)
        except (OSError, json.JSONDecodeError):
            pass   # a damaged verdict is computed again
    distinct = sorted({image for _, _, image in named})
    verdicts = _decode_all([str(root / n) for n in distinct], workers or default_workers(),
                           progress)
    problems = {n: v for n, v in zip(distinct, verdicts) if v is not None}
    if stored is not None:
        atomic_write_text(stored, json.dumps(problems))
    return ImageCheck(json_path, root, image_set.fingerprint, image_set.count,
                      _by_record(named, problems), cached=False)


def _by_record(named: list[list], problems: dict[str, str]) -> list[BadImage]:
    first: dict[str, tuple[int, str]] = {}
    counts: dict[str, int] = {}
    for index, rid, image in named:
        if image in problems:
            first.setdefault(image, (index, rid))
            counts[image] = counts.get(image, 0) + 1
    return [BadImage(first[n][0], first[n][1], n, problems[n], counts[n])
            for n in sorted(first, key=lambda n: first[n][0])]
