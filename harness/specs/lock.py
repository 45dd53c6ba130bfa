"""The lock file beside a spec: the hub commit of every model the spec names.

`ablate fetch SPEC` resolves each hub name (an LLM's `path`, an expert's `pretrained`) to the
commit the hub serves, downloads it into this machine's Hugging Face cache and writes
`<spec>.lock.json`. Reading the spec then pins each name to its commit (`revision`, part of
the run's key), and the jobs build from that snapshot offline (models.hub). Before anything is
submitted, a pinned commit missing from the cache, or any hub name on an offline machine
without it, is refused with the command that fetches it."""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError
from core.files import atomic_write_text
from harness.config.run_config import RunConfig
from models.hub import FETCH_HINT, HubSource, NotInCache, expert_source, llm_source, snapshot

LOCK_SUFFIX = ".lock.json"


def lock_path(spec_file: str | Path) -> Path:
    spec_file = Path(spec_file)
    return spec_file.with_name(spec_file.stem + LOCK_SUFFIX)


@dataclass(frozen=True)
class Artifact:
    """A hub model a run config names: where (`llm`, `experts.clip`), the repo, its pin."""
    where: str
    source: HubSource
    revision: str | None


def artifacts_of(cfg: RunConfig) -> list[Artifact]:
    out = []
    source = llm_source(cfg.model.llm)
    if source is not None:
        out.append(Artifact("model.llm.path", source, cfg.model.llm.revision))
    for e in cfg.model.experts:
        source = expert_source(e)
        if source is not None:
            out.append(Artifact(f"model.experts.{e.key}.pretrained", source, e.revision))
    return out


def read_lock(spec_file: str | Path) -> dict[str, str]:
    """repo -> commit from the spec's lock file ({} when there is none)."""
    path = lock_path(spec_file)
    if not path.exists():
        return {}
    try:
        pins = json.loads(path.read_text())["artifacts"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"not a lock file written by `ablate fetch` ({exc}); delete it and "
                          f"run `ablate fetch {spec_file}` again", file=str(path)) from None
    if not isinstance(pins, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in pins.items()):
        raise ConfigError("artifacts must map each hub repo to a commit", file=str(path),
                          field="artifacts")
    return pins


def write_lock(spec_file: str | Path, pins: dict[str, str]) -> Path:
    path = lock_path(spec_file)
    atomic_write_text(path, json.dumps({
        "written_by": "ablate fetch", "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "artifacts": dict(sorted(pins.items()))}, indent=1) + "\n")
    return path


def apply_lock(cfg: RunConfig, pins: dict[str, str]) -> RunConfig:
    """`cfg` with every hub name the lock pins given its commit; a revision written in the
    config itself is kept."""
    if not pins:
        return cfg
    model = cfg.model
    llm = model.llm
    source = llm_source(llm)
    if source is not None and llm.revision is None and source.repo in pins:
        llm = dataclasses.replace(llm, revision=pins[source.repo])
    experts = []
    for e in model.experts:
        source = expert_source(e)
        if source is not None and e.revision is None and source.repo in pins:
            e = dataclasses.replace(e, revision=pins[source.repo])
        experts.append(e)
    return dataclasses.replace(cfg, model=dataclasses.replace(model, llm=llm, experts=experts))


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def check_artifacts(cfgs: list[RunConfig], spec_file: str) -> None:
    """Refuse, before anything is submitted, runs whose models are not where their jobs will
    look: a pinned commit missing from this machine's cache, or (offline) any hub name not in
    it. Each missing model is named with the config field that names it."""
    missing, seen = [], set()
    for cfg in cfgs:
        for a in artifacts_of(cfg):
            if (a.source.repo, a.revision) in seen or not (a.revision or offline()):
                continue
            seen.add((a.source.repo, a.revision))
            try:
                snapshot(a.source.repo, a.revision, offline=True)
            except NotInCache as exc:
                missing.append(f"{a.where}: {exc}")
    if missing:
        hint = FETCH_HINT.format(spec=spec_file, lock=lock_path(spec_file).name)
        raise ConfigError("models missing on this machine:\n  " + "\n  ".join(missing)
                          + f"\n{hint}", file=spec_file)


def fetch(cfgs: list[RunConfig], spec_file: str, update: bool = False,
          say=print) -> Path:
    """Download every hub model the runs name (each pinned commit, or the hub's current one
    where unpinned or with `update`) and write the lock file; returns its path."""
    pins = {} if update else read_lock(spec_file)
    resolved: dict[str, str] = {}
    for cfg in cfgs:
        for a in artifacts_of(cfg):
            repo = a.source.repo
            if repo in resolved:
                continue
            wanted = None if update else (a.revision or pins.get(repo))
            folder = snapshot(repo, wanted, offline=offline())
            resolved[repo] = folder.name   # a snapshot folder is named by its commit
            files = sum(1 for p in folder.rglob("*") if p.is_file())
            say(f"{repo}: {folder.name} ({files} files) in {folder}")
    return write_lock(spec_file, resolved)
