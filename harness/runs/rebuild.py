"""A finished run, rebuilt from its directory for use outside the pipeline: routing labels
score samples with it, and the lmms-eval wrapper answers another harness's questions with it.

The run directory (WORKDIR/runs/<key>) holds the resolved config; the weights of everything
trained live in the last stage's weights.safetensors; the rest of the model is reproducible from the
config's seed, and a locally trained tokenizer from WORKDIR/cache."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from core.errors import HarnessError
from harness.config.run_config import RunConfig
from harness.runs.rundir import RunDir


@dataclass
class TrainedRun:
    key: str
    config: object      # harness.config.run_config.RunConfig
    model: torch.nn.Module
    tokenizer: object
    data: object        # harness.runs.inputs.ResolvedData

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def transforms(self) -> dict:
        """Each expert's image preprocessing, as the run trained it."""
        from harness.data.batching import expert_transforms
        return expert_transforms(self.model.experts, self.config.data.image_aspect_ratio)

    def eval_template(self):
        """The conversation template the run was evaluated in."""
        from harness.runs.inputs import evaluation_template
        return evaluation_template(self.config)


def resolve_device(name: str) -> torch.device:
    """auto: the GPU if there is one. Under accelerate/torchrun (one process per GPU), auto
    and cuda mean this process's own GPU (harness.training.distributed.local_gpu)."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        from harness.training.distributed import local_gpu
        return torch.device("cuda", local_gpu(int(os.environ.get("LOCAL_RANK", "0")),
                                              torch.cuda.device_count()))
    if name == "auto":
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HarnessError(f"device: '{name}' is not a torch device (auto, cpu, cuda, "
                           "cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HarnessError(f"device: '{name}' asked for, but torch sees no CUDA device")
    return device


def keyed_as(cfg: RunConfig, key: str) -> RunConfig:
    """A run's config read back as the run that made `key`: a config.yaml written before
    `image_aspect_ratio: processor` existed leaves out `resize`, then the default."""
    if cfg.key != key:
        legacy = dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, image_aspect_ratio="resize"))
        if legacy.key == key:
            return legacy
    return cfg


def load_trained_run(run_path: str | Path, device: str = "cpu") -> TrainedRun:
    """A finished run rebuilt from its directory (WORKDIR/runs/<key>): its resolved config,
    the model with every trained stage's weights (in eval mode, on `device`), its data."""
    from harness.runs.inputs import resolve_data
    from harness.runs.stages import load_stage_weights
    from harness.specs.run_file import load_run_config
    from models.builder import build_model

    run_dir = RunDir(Path(run_path))
    status = run_dir.path / "status.json"
    if not status.exists() or run_dir.read_json("status.json").get("state") != "DONE":
        raise HarnessError(f"{run_dir.path}: not a finished run directory (runs/<key> with "
                           f"status DONE)")
    target = resolve_device(device)
    workdir = run_dir.path.parent.parent
    cfg = keyed_as(load_run_config(run_dir.path / "config.yaml"), run_dir.path.name)
    data = resolve_data(cfg, workdir)
    model, llm = build_model(cfg.model, cfg.seed, workdir / "cache" / "llm", data.corpus)
    last = run_dir.read_json("stages.json")[-1]
    load_stage_weights(model, Path(last["dir"]))
    model.to(target).eval()
    return TrainedRun(run_dir.path.name, cfg, model, llm.tokenizer, data)
