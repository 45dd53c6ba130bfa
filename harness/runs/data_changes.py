"""A run's data, recorded and checked: each run directory keeps its sources' paths and content
fingerprints (`sources.json`); a job refuses to train when its data changed after the run was
planned (the key would no longer say what trained); and `plan`/`status` name, for a run not
done, the earlier run of the same config over other data and which source changed ("data
changed since run 1a2b... (DONE): sft json").

Runs recorded before fingerprints entered the key have no sources.json; their config.json
still gives their lineage (RunConfig.lineage), so status says why they are not reused."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.errors import DataError
from core.identity import content_hash, to_plain
from harness.config.run_config import RunConfig, identity_form, source_refs
from harness.runs.rundir import RunDir

SOURCES_FILE = "sources.json"


def sources_of(plain: dict) -> dict[str, dict]:
    """`sft json` -> {"path", "content"} for every data source of a config's plain form
    ("content" absent where the config had no fingerprint)."""
    out = {}
    for name, ref, fields in source_refs(plain):
        content = ref.get("content") or {}
        for f in fields:
            if ref.get(f) is not None:
                out[f"{name} {f}"] = {"path": ref[f],
                                      **({"content": content[f]} if f in content else {})}
    return out


def write_sources(run_dir: RunDir, cfg: RunConfig) -> None:
    run_dir.write_json(SOURCES_FILE, {"lineage": cfg.lineage,
                                      "sources": sources_of(to_plain(cfg))})


def verify_unchanged(cfg: RunConfig) -> None:
    """Raise DataError when a source's content is no longer what the run was keyed by
    (edited between submission and the job's start): training it would file new data under
    the old key."""
    from harness.data.fingerprints import active_cache
    from harness.specs.data_identity import with_content
    active_cache().new_snapshot()
    now = sources_of(to_plain(with_content(cfg, check_files=True)))
    changed = [name for name, was in sources_of(to_plain(cfg)).items()
               if "content" in was and now.get(name, {}).get("content") != was["content"]]
    if changed:
        raise DataError(f"data changed since run {cfg.key} was planned: {', '.join(changed)}; "
                        "its key no longer says what would train. Submit the spec again "
                        "(`ablate run`): the new data gets its own key")


@dataclass(frozen=True)
class Recorded:
    key: str
    state: str
    sources: dict[str, dict] | None   # None: recorded before data fingerprints


def _recorded(folder: Path) -> tuple[str, Recorded] | None:
    run_dir = RunDir(folder)
    try:
        if (folder / SOURCES_FILE).is_file():
            record = run_dir.read_json(SOURCES_FILE)
            return record["lineage"], Recorded(folder.name, run_dir.status()["state"],
                                               record["sources"])
        if (folder / "config.json").is_file():
            config = run_dir.read_json("config.json")
            return (content_hash(identity_form(config, masked=True)),
                    Recorded(folder.name, run_dir.status()["state"], None))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    return None


def recorded_runs(workdir: Path) -> dict[str, list[Recorded]]:
    """Every run directory of the work directory, by lineage."""
    out: dict[str, list[Recorded]] = {}
    runs = Path(workdir) / "runs"
    for folder in sorted(runs.iterdir()) if runs.is_dir() else []:
        found = _recorded(folder)
        if found:
            out.setdefault(found[0], []).append(found[1])
    return out


def data_note(cfg: RunConfig, recorded: dict[str, list[Recorded]]) -> str | None:
    """Why a run that is not done does not reuse an earlier run of the same config: which
    source changed since it, or that it was keyed before data fingerprints (None: no such
    run)."""
    earlier = [r for r in recorded.get(cfg.lineage, []) if r.key != cfg.key]
    if not earlier:
        return None
    earlier.sort(key=lambda r: r.state != "DONE")   # a finished one first
    now = sources_of(to_plain(cfg))
    r = earlier[0]
    if now and not any("content" in src for src in now.values()):
        return (f"the data is not on this machine, so this run's key is provisional (by its "
                f"paths); run {r.key} ({r.state}) has this config")
    for r in earlier:
        if r.sources is None:
            continue
        changed = [name for name, src in now.items() if "content" in src
                   and src["content"] != r.sources.get(name, {}).get("content")]
        if changed:
            return f"data changed since run {r.key} ({r.state}): {', '.join(changed)}"
    r = earlier[0]
    if r.sources is None:
        return (f"run {r.key} ({r.state}) has this config but was keyed by its data's paths, "
                "before a key held the data's content; its content was not recorded, so this "
                "run trains again (docs/runs.md, `What a run's identity covers`)")
    return None
