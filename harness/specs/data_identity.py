"""Each data source of a run config gets its content's fingerprints when the config is read
(harness.data.fingerprints), so its key follows what the data holds, not where it lies. An
image a record names but the disk lacks is named here, at validation, with the record.

A source whose files are not on this machine (`ablate plan` without the data) keeps its path
in the key: the plan's key of such a run is provisional, and the real one is computed where
the data is (submission)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from core.errors import DataError
from harness.config.run_config import BenchmarkSource, DatasetRef, RunConfig
from harness.config.yamlio import Located
from harness.data.fingerprints import active_cache, llava_image_set, path_fingerprint

MISSING_SHOWN = 3   # missing images named in the error; the count says how many in all


def dataset_content(ref: DatasetRef, check_files: bool = True) -> dict[str, str]:
    """{"json": ..., "images": ...} of a LLaVA source; {} where its files are not here and
    check_files is off. Raises DataError naming a missing image's record (with check_files)."""
    json_path, root = Path(ref.json), Path(ref.images)
    if not (json_path.is_file() and root.is_dir()):
        return {}
    try:
        images = llava_image_set(json_path, root)
    except DataError:
        if check_files:
            raise
        return {}
    if images.missing and check_files:
        shown = "; ".join(f"record {i} (id {rid!r}): image not found: {root / image}"
                          for i, rid, image in images.missing[:MISSING_SHOWN])
        more = len(images.missing) - MISSING_SHOWN
        raise DataError(f"{json_path}: {shown}" + (f"; and {more} more records whose image "
                                                   "is missing" if more > 0 else ""))
    return {"json": active_cache().file_hash(json_path), "images": images.fingerprint}


def benchmark_content(source: BenchmarkSource) -> dict[str, str]:
    """{"questions": ..., "images": ...} of a benchmark's files that are on this machine."""
    out = {}
    for attr in ("questions", "images"):
        value = getattr(source, attr)
        if value is not None and Path(value).exists():
            out[attr] = path_fingerprint(value)
    return out


def with_content(cfg: RunConfig, src: Located | None = None, check_files: bool = True
                 ) -> RunConfig:
    """`cfg` with each data source's `content` filled from the files as they are now. With
    `src`, a missing image is reported as a config error at the source's field."""
    def dataset(part: str) -> DatasetRef | None:
        ref = getattr(cfg.data, part)
        if ref is None:
            return None
        try:
            content = dataset_content(ref, check_files)
        except DataError as exc:
            if src is None:
                raise
            raise src.error(f"data.{part}.images", str(exc)) from None
        return dataclasses.replace(ref, content=content)
    data = dataclasses.replace(cfg.data, **{p: dataset(p) for p in ("align", "sft", "eval")})
    sources = {name: dataclasses.replace(s, content=benchmark_content(s))
               for name, s in cfg.eval.sources.items()}
    return dataclasses.replace(cfg, data=data,
                               eval=dataclasses.replace(cfg.eval, sources=sources))

