"""One training stage: pick what is trainable, build per-group learning rates, and run the
loop through accelerate, checkpointing atomically so a killed stage resumes bit-for-bit.

Determinism: the data order of epoch e is a permutation seeded by (seed, e), so step s always
sees the same batch; the checkpoint holds model, optimizer, scheduler and RNG states."""
from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator
from tqdm import tqdm

from harness.config import StageConfig, trainable_lrs
from harness.data.batching import to_device
from harness.rundir import RunDir, atomic_torch_save
from models.multimodal import MultimodalLM


def param_groups(model: MultimodalLM, stage: StageConfig) -> list[dict]:
    """Freeze everything, then unfreeze the stage's modules, each with its learning rate."""
    model.requires_grad_(False)
    groups = []
    lrs = trainable_lrs([e.config for e in model.experts.values()], stage)
    for name, lr in lrs.items():
        module = (model.experts[name.removeprefix("experts.")] if name.startswith("experts.")
                  else getattr(model, name))
        params = list(module.parameters())
        module.requires_grad_(True)
        if params:
            groups.append({"name": name, "params": params, "lr": lr})
    if not groups:
        raise ValueError(f"stage '{stage.name}' has nothing to train: {stage.train}")
    return groups


def lr_lambda(stage: StageConfig, total: int) -> Callable[[int], float]:
    warmup = int(round(stage.warmup_ratio * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if stage.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if stage.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def total_steps(stage: StageConfig, n_samples: int) -> int:
    if stage.steps is not None:
        return stage.steps
    return max(1, math.ceil(stage.epochs * n_samples / stage.batch_size))


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    return order[k * batch_size:(k + 1) * batch_size].tolist()


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class StageResult:
    steps: int
    final_loss: float
    step_time: float          # mean seconds per optimizer step (this process's steps)
    samples_per_second: float
    trainable: dict[str, int]


def train_stage(model: MultimodalLM, stage: StageConfig, dataset: list, collate,
                stage_dir: RunDir, seed: int, accelerator: Accelerator,
                stop_after: int | None = None, progress: bool = True) -> StageResult:
    """Train (or resume) one stage in `stage_dir`. `stop_after` ends early after that many
    steps of this process, leaving the checkpoint, as a preemption would (used by tests)."""
    groups = param_groups(model, stage)
    trainable = {g["name"]: sum(p.numel() for p in g["params"]) for g in groups}
    optimizer = torch.optim.AdamW(groups, lr=stage.lr, weight_decay=stage.weight_decay)
    total = total_steps(stage, len(dataset))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(stage, total))
    model, optimizer = accelerator.prepare(model, optimizer)
    ckpt_path = stage_dir.path / "checkpoint.pt"
    start = 0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        accelerator.unwrap_model(model).load_state_dict(ckpt["model"], strict=False)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        start = ckpt["step"]
        kept = [m for m in stage_dir.metrics_log() if m.get("step", 0) <= start]
        (stage_dir.path / "metrics.jsonl").write_text(
            "".join(json.dumps(m) + "\n" for m in kept))
    stage_dir.log(event="start", step=start, total=total, trainable=trainable)
    model.train()
    names = [n for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad]
    bar = tqdm(total=total, initial=start, desc=stage.name, disable=not progress,
               dynamic_ncols=True, leave=False)
    times, loss_value, done_here = [], float("nan"), 0
    for step in range(start, total):
        t0 = time.perf_counter()
        batch = collate([dataset[i] for i in batch_indices(step, stage.batch_size,
                                                            len(dataset), seed)])
        batch = to_device(batch, accelerator.device)
        with accelerator.autocast():
            loss = model(**batch)
        accelerator.backward(loss)
        if stage.grad_clip:
            accelerator.clip_grad_norm_([p for g in groups for p in g["params"]],
                                        stage.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
        times.append(time.perf_counter() - t0)
        done_here += 1
        stage_dir.log(step=step + 1, loss=loss_value, lr=scheduler.get_last_lr()[0],
                      step_time=times[-1])
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}",
                        samples_s=f"{stage.batch_size / times[-1]:.0f}")
        finished = step + 1 == total
        if finished or (step + 1) % stage.checkpoint_every == 0 or done_here == stop_after:
            state = accelerator.unwrap_model(model).state_dict()
            atomic_torch_save({"model": {n: state[n] for n in names},
                               "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "rng": rng_state(),
                               "step": step + 1}, ckpt_path)
        if done_here == stop_after and not finished:
            bar.close()
            raise StageInterrupted(step + 1)
    bar.close()
    mean = sum(times) / len(times) if times else float("nan")
    return StageResult(total, loss_value, mean, stage.batch_size / mean if times else 0.0,
                       trainable)


class StageInterrupted(RuntimeError):
    def __init__(self, step: int):
        super().__init__(f"stopped after step {step} (checkpoint kept)")
        self.step = step
