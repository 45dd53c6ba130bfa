"""A run's stages as folders shared between runs: what keys a stage (its network, seed,
settings, data and the stage it starts from, so runs that share their first stages share
those stages' training), where its folder lies, how it is named in the records, and the
reuse decision: a finished stage whose weights pass their check is loaded, anything else is
trained (resuming from its last sound checkpoint)."""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from core.identity import content_hash, to_plain
from harness.config.run_config import (
    DATASET_FIELDS,
    RunConfig,
    StageConfig,
    architecture_dict,
    model_identity,
    source_identity,
    trainable_lrs,
)
from harness.runs.rundir import (
    RunDir,
    read_stage_weights,
    record_stage_weights,
    stage_weights_path,
    stage_weights_problem,
)
from harness.training import StagePaused, StageResult
from harness.training.distributed import World, broadcast, main_holds
from harness.training.memory import release, without_frames
from models.experts import ExpertConfig
from models.model_config import solo_config


def stage_key(cfg: RunConfig, stage: StageConfig, upstream: str | None) -> str:
    """What determines a stage's weights: the network, the seed, the stage's settings with
    what it trains at which rate spelled out, its data (by content, not by where it lies:
    run_config.source_identity), and the stage it starts from."""
    d = cfg.data
    data = (to_plain(d.synthetic) if d.synthetic else
            source_identity(to_plain(getattr(d, stage.data)), DATASET_FIELDS))
    if d.image_aspect_ratio != "resize":   # left out at `resize`, what earlier keys were made with
        data = {**data, "image_aspect_ratio": d.image_aspect_ratio}
    if d.bad_images != "fail":   # fewer records train
        data = {**data, "bad_images": d.bad_images}
    return content_hash({"model": model_identity(architecture_dict(cfg.model)),
                         "seed": cfg.seed,
                         "stage": to_plain(stage),
                         "trains": trainable_lrs(cfg.model.experts, stage),
                         "data": data, "upstream": upstream})


def expert_stage_key(cfg: RunConfig, stage: StageConfig, expert: ExpertConfig,
                     upstream: str | None) -> str:
    """A per-expert stage's key: stage_key of the lone expert's model
    (models.model_config.solo_config); nothing about the other experts or the fusion, so every
    combination containing the expert shares it."""
    return stage_key(dataclasses.replace(cfg, model=solo_config(cfg.model, expert)), stage,
                     upstream)


def stage_keys(cfg: RunConfig) -> list[tuple[str, str | None, str]]:
    """(stage name, expert or None, key) of every stage `cfg` trains, in order: what the
    pipeline keys its stage directories by, for plans and counts without running anything."""
    out, upstream = [], None
    expert_upstream: dict[str, str | None] = {e.key: None for e in cfg.model.experts}
    for stage in cfg.stages:
        if stage.per_expert:
            for e in cfg.model.experts:
                expert_upstream[e.key] = expert_stage_key(cfg, stage, e, expert_upstream[e.key])
                out.append((stage.name, e.key, expert_upstream[e.key]))
            continue
        if upstream is None and any(expert_upstream.values()):
            upstream = content_hash({"per_expert": expert_upstream})
        upstream = stage_key(cfg, stage, upstream)
        out.append((stage.name, None, upstream))
    return out


def stage_dir_name(name: str, expert: str | None, key: str) -> str:
    return f"{name}-{expert}-{key}" if expert else f"{name}-{key}"


def stage_label(record: dict) -> str:
    """A stage record's name in cost.json and the records: `NAME`, or `NAME.EXPERT` for one
    expert's part of a per-expert stage."""
    return f"{record['name']}.{record['expert']}" if record.get("expert") else record["name"]


def load_stage_weights(model: torch.nn.Module, stage_dir: Path, verify: bool = True
                       ) -> set[str]:
    """Load a finished stage's consolidated weights (everything trained up to it) into
    `model`, checked against their recorded hashes unless `verify` is False (just checked or
    written); returns the names it set. Weights that name parameters the model lacks are an
    error."""
    loaded = read_stage_weights(stage_dir, verify)
    unexpected = model.load_state_dict(loaded, strict=False).unexpected_keys
    if unexpected:
        raise RuntimeError(f"{stage_weights_path(stage_dir)} does not fit the model: "
                           f"{unexpected[:3]}")
    return set(loaded)


@dataclass
class StageTraining:
    """A stage's folder as its training sees it (harness.training.loop.StageFolder): its
    notices (a checkpoint or stage weights that failed their check) also go to the run's
    status and log, and to stderr, where a job's log shows them."""
    stage: RunDir
    run: RunDir

    @property
    def path(self) -> Path:
        return self.stage.path

    def log(self, **metrics) -> None:
        self.stage.log(**metrics)

    def metrics_log(self) -> list[dict]:
        return self.stage.metrics_log()

    def notice(self, message: str) -> None:
        print(f"notice: {message}", file=sys.stderr, flush=True)
        self.stage.notice(message)
        self.run.notice(message)


def reuse_or_train(world: World, run_dir: RunDir, stage_dir: RunDir, cfg: RunConfig,
                   stage: StageConfig, expert: str | None, upstream: str | None, train
                   ) -> tuple[bool, dict]:
    """Reuse the stage if it is done, else train it with `train()` on every rank (rank 0
    writes weights.safetensors and returns the summary). Runs sharing the stage wait on its
    lock, then reuse it. Rank 0 decides, the other ranks follow."""
    label = stage_label({"name": stage.name, "expert": expert})
    if world.is_main:
        run_dir.set_status("RUNNING", name=cfg.name, stage=label, stage_dir=str(stage_dir.path))
    with main_holds(world, stage_dir.lock_path):
        reuse = None
        if world.is_main and stage_dir.done:
            # its weights are checked against the hashes recorded when it finished
            problem = stage_weights_problem(stage_dir.path)
            reuse = problem is None
            if problem:
                StageTraining(stage_dir, run_dir).notice(
                    f"stage {label}: {problem}: its weights are not used; the stage is trained "
                    "again (from its last sound checkpoint, if one is left)")
        if broadcast(world, reuse):
            return True, broadcast(world, stage_dir.read_json("result.json")
                                   if world.is_main else None)
        if world.is_main:
            stage_dir.write_json("stage.json", {"stage": to_plain(stage), "expert": expert,
                                                "upstream": upstream, "run": cfg.key})
            stage_dir.set_status("RUNNING", run=cfg.key)
        summary = train()
        if world.is_main:
            record_stage_weights(stage_dir.path)
            stage_dir.write_json("result.json", summary)
            stage_dir.set_status("DONE", run=cfg.key)
        return False, broadcast(world, summary if world.is_main else None)


def until_paused(call, device: torch.device):
    """`call()`'s value, or the StagePaused it raised (a rung reached), without the frames of
    the training that raised it; either way with the stage's memory released
    (harness.training.memory). The rung is scored after this returns, not inside the
    handler, where the traceback would keep the stage's sharded copy, optimizer state and
    loader workers alive through the evaluation."""
    try:
        value = call()
    except StagePaused as reached:
        value = without_frames(reached)
    release(device)
    return value


def stage_summary(res: StageResult) -> dict:
    """A stage's result.json: the numbers, without the trained tensors."""
    return {k: v for k, v in dataclasses.asdict(res).items() if k != "weights"}
