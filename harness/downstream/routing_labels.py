"""MoVA's routing labels (Zong et al., 2024, Sec. 3.2): which experts help which sample.

Each sample's answer loss is measured under the base-only model and under each single-expert
model (finished runs of this harness, on the same data); the experts whose model lowers the
loss below the base model's by more than `margin` are kept, best first, at most
`max_experts` (3 in the paper). The result, {sample id: [expert names]}, is what the
`oracle` router reads and what an LLM router is trained to predict.

On synthetic data the right experts can also be known in advance: each sample's skill names
them (`skill_labels`: in the known-answer testbed, colour and chart questions need `hue`, text
needs `sharp`), which is how a router is checked against labels that are right by
construction."""
from __future__ import annotations

import json
from pathlib import Path

from core.errors import HarnessError
from core.files import atomic_write_text
from harness.runs.rebuild import TrainedRun, load_trained_run


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


def sample_losses(run: TrainedRun, part: str, limit: int | None = None,
                  batch_size: int = 16) -> dict[str, float]:
    """Answer loss of every sample of the run's `part` data (align, sft or eval)."""
    from harness.data.batching import Collator, to_device
    from harness.data.llava import load_llava_json
    from models.templates import TEMPLATES

    source = getattr(run.data, part)
    if source is None:
        raise HarnessError(f"run {run.key} has no {part} data")
    records = [r for r in load_llava_json(*source) if r.image is not None][:limit]
    collate = Collator(run.tokenizer, TEMPLATES.get(run.config.stages[-1].template),
                       run.transforms(), source[1])
    device = run.device
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


def skill_labels(synthetic, experts_by_skill: dict[str, list[str]]) -> dict[str, list[str]]:
    """{sample id: experts} for every image record of a synthetic dataset's fine-tuning and
    evaluation splits, by its skill (ids are SKILL<i> and eval-SKILL<i>, see
    harness.data.synthetic.generate); a skill not in the mapping needs no expert."""
    unknown = sorted(set(experts_by_skill) - set(synthetic.skills))
    if unknown:
        raise HarnessError(f"skills {unknown} are not in the data; its skills: "
                           + ", ".join(synthetic.skills))
    labels = {}
    for skill in synthetic.skills:
        chosen = list(experts_by_skill.get(skill, []))
        labels.update({f"{skill}{i}": chosen for i in range(synthetic.train_per_skill)})
        labels.update({f"eval-{skill}{i}": chosen for i in range(synthetic.eval_per_skill)})
    return labels


def write_skill_labels(run_config: str | Path, experts_by_skill: dict[str, list[str]],
                       out: str | Path) -> dict[str, list[str]]:
    from harness.specs.run_file import load_run_config
    cfg = load_run_config(run_config)
    if cfg.data.synthetic is None:
        raise HarnessError(f"{run_config}: skill labels need synthetic data (data.synthetic)")
    labels = skill_labels(cfg.data.synthetic, experts_by_skill)
    atomic_write_text(Path(out), json.dumps(labels, indent=0, sort_keys=True) + "\n")
    return labels
