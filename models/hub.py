"""Which Hugging Face Hub repository a config's pretrained name stands for, and where a pinned
revision of it lies in this machine's cache.

A config names weights the way each library does: transformers and the LLM by hub id, timm by
`arch.tag` (whose pretrained config names the hub repo) or `hf-hub:org/name`, open_clip by a
pretrained tag (its pretrained config's `hf_hub` entry) or `hf-hub:org/name`. Names that are
paths on this machine are not hub artifacts. A `revision` (a commit, written by `ablate fetch`'s
lock file) pins the name: the model is then built from that commit's snapshot in the local
cache, offline, through the same library call with a local path, so the weights a run used
are the ones its key names, whatever the hub serves that day."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.experts import EXPERTS, ExpertConfig
from models.experts.hf_backend import HFExpert
from models.experts.open_clip_backend import OpenClipConvNeXt, OpenClipViT
from models.experts.presets import pick
from models.experts.timm_backend import TimmConvNeXt, TimmEVA02
from models.llm import LLMConfig

HF_HUB = "hf-hub:"
FETCH_HINT = ("run `ablate fetch {spec}` on a machine with internet (a login node): it "
              "downloads every model the spec names into the Hugging Face cache and pins "
              "each in {lock}")


@dataclass(frozen=True)
class HubSource:
    """A hub repository and, for libraries that read one file of it, that file."""
    repo: str
    filename: str | None = None


class NotInCache(LookupError):
    """A pinned revision is not in this machine's hub cache."""


def _is_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "local-dir:")) or Path(name).exists()


def _hub_id(name: str) -> HubSource | None:
    if name.startswith(HF_HUB):
        return HubSource(name[len(HF_HUB):].split("@")[0])
    return None if _is_local(name) or name.count("/") != 1 else HubSource(name)


def _transformers(config: ExpertConfig) -> HubSource | None:
    return _hub_id(config.pretrained)


def _timm(config: ExpertConfig) -> HubSource | None:
    if config.pretrained.startswith(HF_HUB) or _is_local(config.pretrained):
        return _hub_id(config.pretrained)
    import timm
    arch = pick(config.id, EXPERTS.get(config.id).presets, config.preset).arch
    cfg = timm.models.get_pretrained_cfg(f"{arch}.{config.pretrained}")
    return HubSource(cfg.hf_hub_id) if cfg is not None and cfg.hf_hub_id else None


def _open_clip(config: ExpertConfig) -> HubSource | None:
    if config.pretrained.startswith(HF_HUB) or _is_local(config.pretrained):
        return _hub_id(config.pretrained)
    import open_clip
    arch = pick(config.id, EXPERTS.get(config.id).presets, config.preset).arch
    entry = open_clip.get_pretrained_cfg(arch, config.pretrained).get("hf_hub", "")
    if not entry:
        return None
    repo, filename = entry.rstrip("/"), None
    if not entry.endswith("/"):
        repo, filename = entry.rsplit("/", 1)
    return HubSource(repo, filename)


# expert backend class -> how its `pretrained` names a hub repo
EXPERT_SOURCES: dict[type, Callable[[ExpertConfig], HubSource | None]] = {
    HFExpert: _transformers, TimmConvNeXt: _timm, TimmEVA02: _timm,
    OpenClipViT: _open_clip, OpenClipConvNeXt: _open_clip,
}


def expert_source(config: ExpertConfig) -> HubSource | None:
    if not config.pretrained:
        return None
    family = EXPERTS.get(config.id)
    for cls, source in EXPERT_SOURCES.items():
        if isinstance(family, type) and issubclass(family, cls):
            return source(config)
    raise TypeError(f"expert '{config.id}': no hub naming rule for {family!r} "
                    "(add it to models.hub.EXPERT_SOURCES)")


def llm_source(config: LLMConfig) -> HubSource | None:
    return _hub_id(config.path) if config.id == "hf" and config.path else None


def snapshot(repo: str, revision: str | None, offline: bool) -> Path:
    """The local folder of `repo` at `revision` (None: the hub's main), downloaded unless
    `offline`. Its name is the commit it holds."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    try:
        return Path(snapshot_download(repo, revision=revision, local_files_only=offline))
    except LocalEntryNotFoundError as exc:
        raise NotInCache(f"{repo}@{revision or 'main'} is not in this machine's Hugging Face "
                         "cache") from exc


# weights files in a snapshot, in the order the libraries prefer them: timm reads a file given
# as a path, open_clip an `arch` plus a checkpoint file
TIMM_FILES = ("model.safetensors", "pytorch_model.bin")
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _first(folder: Path, names: tuple[str, ...]) -> str:
    found = next((folder / n for n in names if (folder / n).exists()), None)
    if found is None:
        raise NotInCache(f"{folder} holds none of {', '.join(names)}")
    return str(found)


def _local_name(config: ExpertConfig, source: HubSource, folder: Path) -> str:
    """What the expert's library is given for the snapshot: the file it reads, or the
    folder (transformers, and open_clip's `hf-hub:` names, read as `local-dir:`)."""
    family = EXPERTS.get(config.id)
    if source.filename:
        return str(folder / source.filename)
    if issubclass(family, (TimmConvNeXt, TimmEVA02)):
        return _first(folder, TIMM_FILES)
    if issubclass(family, (OpenClipViT, OpenClipConvNeXt)) and \
            not config.pretrained.startswith(HF_HUB):
        return _first(folder, OPEN_CLIP_FILES)
    return str(folder)


def pinned_expert(config: ExpertConfig) -> ExpertConfig:
    """The config to build: a pinned hub name replaced by its snapshot's local path."""
    source = expert_source(config) if config.revision else None
    if source is None:
        return config
    folder = snapshot(source.repo, config.revision, offline=True)
    return dataclasses.replace(config, pretrained=_local_name(config, source, folder))


def pinned_llm(config: LLMConfig) -> LLMConfig:
    source = llm_source(config) if config.revision else None
    if source is None:
        return config
    return dataclasses.replace(config, path=str(snapshot(source.repo, config.revision,
                                                         offline=True)))
