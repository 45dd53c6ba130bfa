"""One training stage on any number of ranks: pick what is trainable, split the stage's
global batch into this rank's micro-batches, accumulate, step, checkpoint.

The global batch is the stage's `batch_size`: step s always takes the same samples
(harness.training.loader: a permutation seeded by (seed, epoch), or LLaVA's modality-length
grouping); rank r of R takes the r-th slice of them, cut into `accumulation` micro-batches
of `micro_batch`, so micro-batch x ranks x accumulation = batch_size. The loss is the answer
tokens' summed loss divided by the number of answer tokens in the whole global batch
(counted before any forward and summed over ranks), so one process, 2 ranks and 1 process
accumulating 2 micro-batches compute the same gradient. Resuming needs only the step: the
checkpoint (harness.training.checkpoint) holds the sharded trainable parameters, optimizer,
scheduler and RNG. A stage's training is one object (`StageRun`): what train_stage receives,
with the batch split, the trainable groups and the strategy (harness.training.strategies,
which prepares the model) worked out once."""
from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from core.errors import HarnessError
from core.files import atomic_write_text
from harness.config.run_config import ParallelConfig, StageConfig, trainable_lrs
from harness.data.batching import to_device
from harness.training import checkpoint
from harness.training.distributed import World, all_reduce_sum, broadcast
from harness.training.kernels import COMPUTE_DTYPES, autocast
from harness.training.loader import StepBatches, step_batches, step_order
from harness.training.memory import release
from harness.training.strategies import PreparedModel, Strategy, choose
from models.lora import is_adapter
from models.multimodal import MultimodalLM


class StageFolder(Protocol):
    """Where a stage's training writes: its folder (checkpoints), its metrics log, and its
    notices (a checkpoint that failed its check and what was done instead: said in the log
    and in the run's status). The run lifecycle's RunDir is one; training needs nothing else
    of it."""
    path: Path

    def log(self, **metrics) -> None: ...

    def metrics_log(self) -> list[dict]: ...

    def notice(self, message: str) -> None: ...



class BatchSplitError(HarnessError):
    """A global batch that the ranks and micro-batch do not divide."""


def stage_lrs(model: MultimodalLM, stage: StageConfig) -> dict[str, float]:
    """What `stage` trains of `model`, each group with its learning rate."""
    return trainable_lrs([e.config for e in model.experts.values()], stage)


def param_groups(model: MultimodalLM, stage: StageConfig,
                 lrs: dict[str, float] | None = None) -> list[dict]:
    """Freeze everything, then unfreeze the stage's modules, each with its learning rate
    (`lrs`: stage_lrs's, when the caller has them already)."""
    model.requires_grad_(False)
    groups = []
    lrs = stage_lrs(model, stage) if lrs is None else lrs
    for name, lr in lrs.items():
        if name == "lora":   # the adapters models.lora.add_lora put into the LLM
            params = [p for n, p in model.llm.named_parameters() if is_adapter(n)]
            if not params:
                raise ValueError(f"stage '{stage.name}' trains lora, but the LLM has no "
                                 "LoRA adapters")
            for p in params:
                p.requires_grad_(True)
            groups.append({"name": name, "params": params, "lr": lr})
            continue
        module = (model.experts[name.removeprefix("experts.")] if name.startswith("experts.")
                  else getattr(model, name))
        # the LLM's own weights; its LoRA adapters, if any, are the `lora` group's
        params = [p for n, p in module.named_parameters() if not is_adapter(n)]
        module.requires_grad_(True)
        if "lora" not in lrs:
            for n, p in module.named_parameters():
                if is_adapter(n):
                    p.requires_grad_(False)
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


def split(stage: StageConfig, world_size: int, micro_batch: int | None) -> tuple[int, int]:
    """(micro-batch, accumulation steps) of this stage on `world_size` ranks."""
    per_rank, rest = divmod(stage.batch_size, world_size)
    if rest or per_rank < 1:
        raise BatchSplitError(f"stage '{stage.name}': the global batch_size {stage.batch_size} "
                              f"does not divide over {world_size} ranks; use a number of "
                              "ranks that divides it")
    micro = micro_batch or per_rank
    if per_rank % micro:
        raise BatchSplitError(f"stage '{stage.name}': {per_rank} samples per rank (batch_size "
                              f"{stage.batch_size} over {world_size} ranks) do not split into "
                              f"micro-batches of {micro}; allowed parallel.micro_batch: "
                              + ", ".join(str(m) for m in range(1, per_rank + 1)
                                          if per_rank % m == 0))
    return micro, per_rank // micro


@dataclass
class StageResult:
    steps: int
    final_loss: float
    step_time: float          # mean seconds per optimizer step (this process's steps)
    samples_per_second: float
    trainable: dict[str, int]
    strategy: str = "single"
    ranks: int = 1
    micro_batch: int = 0
    accumulation: int = 1
    weights: dict = field(default_factory=dict, repr=False)   # rank 0: trained, whole, CPU


def _autocast(world: World, precision: str):
    """Training's autocast. Its cache of weight casts is off: with checkpointed layers each
    weight is cast once per forward anyway (backward's recomputation casts again), and the
    cache would keep a compute-dtype copy of every trainable weight until the forward ends."""
    return autocast(world.device, precision, cache_enabled=False)


def stage_strategy(name: str, world: World, model: MultimodalLM, stage: StageConfig,
                   precision: str = "no", lrs: dict[str, float] | None = None) -> Strategy:
    """The strategy `stage` trains `model` with (`name`: the run's parallel.strategy); it
    reshards after forward only when the LLM trains."""
    trained = stage_lrs(model, stage) if lrs is None else lrs
    return choose(name, world, model, llm_trains="llm" in trained,
                  compute_dtype=COMPUTE_DTYPES.get(precision))


def train_stage(model: MultimodalLM, stage: StageConfig, dataset: list, collate,
                stage_dir: StageFolder, seed: int, world: World, parallel: ParallelConfig,
                precision: str = "no", stop_after: int | None = None,
                progress: bool = True, pause_at: int | None = None) -> StageResult:
    """Train (or resume) one stage in `stage_dir`; every rank calls it. `stop_after` ends
    early after that many steps of this process, leaving the checkpoint, as a preemption
    would (used by tests). `pause_at` (a successive-halving rung) checkpoints at that step
    and raises StagePaused with the weights there; the stage's schedule is still that of all
    its steps, so continuing later ends where an uninterrupted stage would. A strategy that
    shards the module in place trains a copy, so the caller's model stays whole for
    evaluation."""
    return StageRun(model, stage, dataset, collate, stage_dir, seed, world, parallel,
                    precision, stop_after, progress, pause_at).run()


def stage_optimizer(groups: list[dict], stage: StageConfig, world: World, strategy
                    ) -> torch.optim.Optimizer:
    """AdamW over the stage's groups; fused on a GPU for whole (unsharded) parameters: one
    kernel per step instead of the multi-tensor path's temporaries, a whole fp32 copy of a
    moment in flight (about 27 GB for a 7B LLM on one GPU, derived). FSDP's shards keep the
    default path, whose temporaries are one shard's."""
    fused = world.device.type == "cuda" and not strategy.shards_state
    return torch.optim.AdamW(groups, lr=stage.lr, weight_decay=stage.weight_decay,
                             fused=fused or None)


# the time-based checkpoint may come this share of checkpoint_minutes late: rank 0 asks the
# clock only as often as that allows, so the ranks need not meet in a collective every step
CLOCK_SLACK = 0.05


class _CheckpointClock:
    """Whether the time-based checkpoint is due. Rank 0's clock decides for every rank, as
    saving is collective; that decision is a broadcast, so it is taken only every few steps:
    rank 0 says with each decision how many steps pass before the next one (its step time
    into CLOCK_SLACK of the interval; every step when steps are that slow)."""

    def __init__(self, minutes: float | None):
        self.minutes = minutes
        self.last = time.monotonic()
        self.next_step = 0

    def saved(self) -> None:
        self.last = time.monotonic()

    def due(self, world: World, step: int, step_time: float) -> bool:
        if self.minutes is None or step < self.next_step:
            return False
        interval = 60 * self.minutes
        decision = None
        if world.is_main:
            decision = (time.monotonic() - self.last >= interval,
                        max(1, int(CLOCK_SLACK * interval / max(step_time, 1e-9))))
        due, ahead = broadcast(world, decision)
        self.next_step = step + ahead
        return due


@dataclass
class StageRun:
    """One stage's training on this rank, as train_stage receives it. Built once per stage:
    its batch split, what it trains (the learning rates, worked out once) and its strategy
    (`strategy`: None chooses it from parallel.strategy; a test may hand one in)."""
    model: MultimodalLM
    stage: StageConfig
    dataset: list
    collate: Callable
    stage_dir: StageFolder
    seed: int
    world: World
    parallel: ParallelConfig
    precision: str = "no"
    stop_after: int | None = None
    progress: bool = True
    pause_at: int | None = None
    strategy: Strategy | None = None

    def __post_init__(self):
        self.micro, self.accumulation = split(self.stage, self.world.size,
                                              self.parallel.micro_batch)
        self.lrs = stage_lrs(self.model, self.stage)
        if self.strategy is None:
            self.strategy = stage_strategy(self.parallel.strategy, self.world, self.model,
                                           self.stage, self.precision, self.lrs)

    def run(self) -> StageResult:
        """Train (or resume) the stage: the caller's model is prepared by the strategy for
        the stage's scope, and given back as it was when the stage ends."""
        param_groups(self.model, self.stage, self.lrs)     # which parameters train
        prepared = None
        try:
            with contextlib.ExitStack() as scope:
                prepared = self.strategy.prepare(self.model, self.precision, self.parallel,
                                                 scope)
                return self._train(prepared)
        finally:
            # the sharded copy sits in reference cycles: freed here, not when the collector
            # next happens to run, so its shards leave the GPU before evaluation or next stage
            prepared = None
            release(self.world.device)

    def _resume(self, wrapped, optimizer, scheduler, names: set[str]) -> tuple[int, list]:
        """(the step to start from, the metrics log kept up to it): the last good checkpoint
        loaded, and the log rewritten as of that step (a start over: its events only)."""
        world, stage_dir = self.world, self.stage_dir
        start = 0
        resume_from = checkpoint.resume_point(stage_dir.path, world,
                                              stage_dir.notice if world.is_main else None)
        if resume_from is not None:
            start = checkpoint.load(resume_from, world, wrapped, optimizer, scheduler, names)
        kept = []
        if world.is_main:
            kept = [m for m in stage_dir.metrics_log() if m.get("step", 0) <= start]
            if kept or (stage_dir.path / "metrics.jsonl").exists():
                atomic_write_text(stage_dir.path / "metrics.jsonl",
                                  "".join(json.dumps(m) + "\n" for m in kept))
        return start, kept

    def _step(self, prepared: PreparedModel, host_batches: list[dict], groups: list[dict],
              optimizer, scaler) -> float:
        """One optimizer step over this rank's micro-batches; the global batch's mean loss per
        answer token."""
        world = self.world
        # counted on the host batches: on a GPU the count's per-sample reads would each sync
        counts = torch.tensor([float(sum(
            prepared.model.answer_tokens(b["input_ids"], b["attention_mask"], b["labels"],
                                         b["has_image"])
            for b in host_batches))], device=world.device)
        batches = [to_device(b, world.device) for b in host_batches]
        tokens = max(float(all_reduce_sum(world, counts).item()), 1.0)
        summed = optimizer_step(prepared.wrapped, self.strategy, batches, tokens, world,
                                self.precision, scaler, optimizer, groups,
                                self.stage.grad_clip)
        return float(all_reduce_sum(world, summed).item()) / tokens

    def _train(self, prepared: PreparedModel) -> StageResult:
        model, wrapped = prepared.model, prepared.wrapped
        stage, world, stage_dir, strategy = self.stage, self.world, self.stage_dir, self.strategy
        micro, accumulation, pause_at = self.micro, self.accumulation, self.pause_at
        groups = param_groups(model, stage, self.lrs)    # the (possibly sharded) parameters
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        trainable = {g["name"]: sum(p.numel() for p in g["params"]) for g in groups}
        optimizer = stage_optimizer(groups, stage, world, strategy)
        total = total_steps(stage, len(self.dataset))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(stage, total))
        scaler = torch.amp.GradScaler(world.device.type, enabled=self.precision == "fp16")
        start, kept = self._resume(wrapped, optimizer, scheduler, names)
        pausing = pause_at is not None and pause_at < total
        if pausing and start > pause_at:
            raise HarnessError(f"stage '{stage.name}' in {stage_dir.path} is checkpointed at "
                               f"step {start}, past the rung at step {pause_at}: the rung's "
                               "checkpoint is gone, so its score cannot be measured")
        if pausing and start == pause_at:   # paused here before: the rung's weights are at hand
            raise StagePaused(start, total,
                              checkpoint.full_trainable_state(world, wrapped, names))
        end = pause_at if pausing else total
        if world.is_main:
            stage_dir.log(event="start", step=start, total=total, trainable=trainable,
                          strategy=strategy.name, ranks=world.size, micro_batch=micro,
                          accumulation=accumulation, frozen_bytes=prepared.frozen)
        wrapped.train()
        bar = tqdm(total=total, initial=start, desc=stage.name,
                   disable=not (self.progress and world.is_main), dynamic_ncols=True,
                   leave=False)
        times, loss_value, done_here = [], float("nan"), 0
        order = step_order(self.dataset, stage.batch_size, self.seed, stage.group_by_modality)
        loader = step_batches(StepBatches(self.dataset, self.collate, order, world.rank, micro,
                                          accumulation),
                              start, end, self.parallel.loader_workers,
                              self.parallel.prefetch_steps,
                              pin_memory=world.device.type == "cuda")
        clock = _CheckpointClock(self.parallel.checkpoint_minutes)
        for step, prepared_batches in zip(range(start, end), loader):
            t0 = time.perf_counter()
            loss_value = self._step(prepared, prepared_batches, groups, optimizer, scaler)
            scheduler.step()
            times.append(time.perf_counter() - t0)
            done_here += 1
            if world.is_main:
                stage_dir.log(step=step + 1, loss=loss_value, lr=scheduler.get_last_lr()[0],
                              step_time=times[-1])
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}",
                            samples_s=f"{stage.batch_size / times[-1]:.0f}")
            finished = step + 1 == total
            rung = pausing and step + 1 == pause_at
            reason = ("final" if finished else "rung" if rung
                      else "steps" if (step + 1) % stage.checkpoint_every == 0
                      else "stop" if done_here == self.stop_after
                      else "minutes" if clock.due(world, step, times[-1])
                      else None)
            if reason:
                checkpoint.save(stage_dir.path, world, wrapped, optimizer, scheduler, step + 1,
                                names)
                clock.saved()
                if world.is_main:
                    stage_dir.log(event="checkpoint", step=step + 1, reason=reason)
            if rung:
                bar.close()
                raise StagePaused(step + 1, total,
                                  checkpoint.full_trainable_state(world, wrapped, names))
            if done_here == self.stop_after and not finished:
                bar.close()
                raise StageInterrupted(step + 1)
        bar.close()
        weights = checkpoint.full_trainable_state(world, wrapped, names)
        if not times:   # resumed at its end (its weights rebuilt): the numbers its log has
            times = [m["step_time"] for m in kept if "step_time" in m]
            loss_value = next((m["loss"] for m in reversed(kept) if "loss" in m), loss_value)
        mean = sum(times) / len(times) if times else float("nan")
        return StageResult(total, loss_value, mean, stage.batch_size / mean if times else 0.0,
                           trainable, strategy.name, world.size, micro, accumulation, weights)


def optimizer_step(wrapped, strategy, batches: list[dict], tokens: float, world: World,
                   precision: str, scaler, optimizer, groups: list[dict],
                   grad_clip: float | None) -> torch.Tensor:
    """One optimizer step over this rank's micro-batches (the loss normalized by the global
    batch's `tokens`), clipped and applied; the summed loss of this rank's answer tokens.
    benchmarks/gpu_scale.py times exactly this."""
    summed = torch.zeros((), device=world.device)
    for k, batch in enumerate(batches):
        with strategy.sync_gradients(wrapped, k == len(batches) - 1):
            with _autocast(world, precision):
                loss_sum, _ = wrapped(**batch, reduction="sum")
            # DDP and FSDP average gradients over ranks: x world makes it their sum
            scaler.scale(loss_sum * (world.size / tokens)).backward()
        summed += loss_sum.detach().float()
    if grad_clip:
        scaler.unscale_(optimizer)
        strategy.clip([p for g in groups for p in g["params"]], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return summed


class StageInterrupted(RuntimeError):
    def __init__(self, step: int):
        super().__init__(f"stopped after step {step} (checkpoint kept)")
        self.step = step


class StagePaused(Exception):
    """The stage reached its rung (`pause_at`): checkpointed there, with the trainable
    weights at that step (whole, on rank 0; empty elsewhere) for the rung's evaluation."""
    def __init__(self, step: int, total: int, weights: dict):
        super().__init__(f"paused at step {step} of {total} (checkpoint kept)")
        self.step, self.total, self.weights = step, total, weights
