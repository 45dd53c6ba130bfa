"""MoVA's routing labels (Zong et al., 2024, Sec. 3.2): which experts help which sample.

Each sample's answer loss is measured under the base-only model and under each single-expert
model (finished runs of this harness, on the same data); the experts whose model lowers the
loss below the base model's by more than `margin` are kept, best first, at most
`max_experts` (3 in the paper). The result, {sample id: [expert names]}, is what the
`oracle` router reads and what an LLM router is trained to predict."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import HarnessError
from harness.rundir import RunDir, atomic_write_text


def choose_experts(base: dict[str, float], with_expert: dict[str, dict[str, float]],
                   max_experts: int = 3, margin: float = 0.0) -> dict[str, list[str]]:
    """base: sample id -> loss of the base-only model; with_expert: expert -> the same for
    that expert's model. Returns sample id -> helping experts, largest gain first."""
    labels = {}
    for sid, base_loss in base.items():
        gains = {name: base_loss - losses[sid] for name, losses in with_expert.items()
                 if sid in losses}
        helping = sorted((n for n, g in gains.items() if g > margin), key=lambda n: -gains[n])
        labels[sid] = helping[:max_experts]
    return labels


@dataclass
class TrainedRun:
    key: str
    config: object
    model: torch.nn.Module
    tokenizer: object
    data: object


def load_trained_run(run_path: str | Path) -> TrainedRun:
    """A finished run rebuilt from its directory (WORKDIR/runs/<key>): its resolved config,
    the model with every trained stage's weights, its data."""
    from harness.config import load_run_config
    from harness.modelbuild import build_model
    from harness.pipeline import load_stage_weights, resolve_data

    run_dir = RunDir(Path(run_path))
    status = run_dir.path / "status.json"
    if not status.exists() or run_dir.read_json("status.json").get("state") != "DONE":
        raise HarnessError(f"{run_dir.path}: not a finished run directory (runs/<key> with "
                           f"status DONE)")
    workdir = run_dir.path.parent.parent
    cfg = load_run_config(run_dir.path / "config.yaml")
    data = resolve_data(cfg, workdir)
    model, llm = build_model(cfg.model, cfg.seed, workdir / "cache" / "llm", data.corpus)
    last = run_dir.read_json("stages.json")[-1]
    load_stage_weights(model, Path(last["dir"]) / "weights.pt")
    model.eval()
    return TrainedRun(run_dir.path.name, cfg, model, llm.tokenizer, data)


def sample_losses(run: TrainedRun, part: str, limit: int | None = None,
                  batch_size: int = 16) -> dict[str, float]:
    """Answer loss of every sample of the run's `part` data (align, sft or eval)."""
    from harness.data.batching import Collator, ImageTransform, to_device
    from harness.data.llava import load_llava_json
    from models.templates import TEMPLATES

    source = getattr(run.data, part)
    if source is None:
        raise HarnessError(f"run {run.key} has no {part} data")
    records = [r for r in load_llava_json(*source) if r.image is not None][:limit]
    transforms = {n: ImageTransform.for_expert(e) for n, e in run.model.experts.items()}
    collate = Collator(run.tokenizer, TEMPLATES.get(run.config.stages[-1].template),
                       transforms, source[1])
    device = next(run.model.parameters()).device
    out = {}
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        batch = to_device(collate(chunk), device)
        losses = run.model.per_sample_loss(**batch)
        out.update({r.id: float(v) for r, v in zip(chunk, losses)})
    return out


def build_routing_labels(base_run: str | Path, expert_runs: dict[str, str | Path],
                         out: str | Path, part: str = "sft", limit: int | None = None,
                         max_experts: int = 3, margin: float = 0.0) -> dict[str, list[str]]:
    if not expert_runs:
        raise HarnessError("routing labels need at least one expert run (--expert NAME=RUN)")
    base = load_trained_run(base_run)
    base_losses = sample_losses(base, part, limit)
    expert_losses = {}
    for name, path in expert_runs.items():
        run = load_trained_run(path)
        if getattr(run.data, part) != getattr(base.data, part):
            raise HarnessError(f"expert run {name} ({path}) was trained on other {part} data "
                               f"than the base run; per-sample losses would not compare")
        expert_losses[name] = sample_losses(run, part, limit)
    labels = choose_experts(base_losses, expert_losses, max_experts, margin)
    atomic_write_text(Path(out), json.dumps(labels, indent=1, sort_keys=True))
    return labels
