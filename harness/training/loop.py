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
scheduler and RNG."""
from __future__ import annotations

import contextlib
import functools
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
from harness.training.frozen import frozen_bytes, held_in
from harness.training.kernels import COMPUTE_DTYPES, autocast
from harness.training.loader import StepBatches, step_batches, step_order
from harness.training.memory import release
from harness.training.sharded_load import load_local_shards, meta_copy
from harness.training.strategies import choose, upcast_trainable
from models.llm import set_activation_checkpointing
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


def param_groups(model: MultimodalLM, stage: StageConfig) -> list[dict]:
    """Freeze everything, then unfreeze the stage's modules, each with its learning rate."""
    model.requires_grad_(False)
    groups = []
    lrs = trainable_lrs([e.config for e in model.experts.values()], stage)
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


@contextlib.contextmanager
def _on_host(model: torch.nn.Module, world: World):
    """The caller's model in host memory while a sharded copy of it trains (the copy's
    shards are allocated on the GPU), so the GPU holds only this rank's shards; back on its
    device afterwards. Nothing to do on a CPU."""
    if world.device.type == "cpu":
        yield
        return
    model.to("cpu")
    try:
        yield
    finally:
        model.to(world.device)


@contextlib.contextmanager
def _checkpointed(model: MultimodalLM, enabled: bool):
    """Activation checkpointing (non-reentrant) for the stage, on the LLM's decoder layers and
    on the blocks of every expert that trains: each block keeps only its input and recomputes
    the rest in backward. Frozen experts need none (they run without autograd's record).
    Through each library's own switch, so parameter names (and checkpoints, weights) stay
    those of the plain model."""
    if not enabled:
        yield
        return
    switches = []
    if getattr(model.llm, "supports_gradient_checkpointing", False):
        switches.append(functools.partial(set_activation_checkpointing, model.llm))
    switches += [expert.set_activation_checkpointing for expert in model.experts.values()
                 if any(p.requires_grad for p in expert.parameters())]
    for switch in switches:
        switch(True)
    try:
        yield
    finally:
        for switch in switches:
            switch(False)


def stage_strategy(name: str, world: World, model: MultimodalLM, stage: StageConfig,
                   precision: str = "no"):
    """The strategy `stage` trains `model` with (`name`: the run's parallel.strategy); it
    reshards after forward only when the LLM trains."""
    trained = trainable_lrs([e.config for e in model.experts.values()], stage)
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
    micro, accumulation = split(stage, world.size, parallel.micro_batch)
    strategy = stage_strategy(parallel.strategy, world, model, stage, precision)
    param_groups(model, stage)                       # which parameters train
    try:
        with contextlib.ExitStack() as scope:
            model, wrapped, frozen = stage_module(model, strategy, world, precision,
                                                  parallel, scope)
            return _train(model, wrapped, frozen, strategy, stage, dataset, collate,
                          stage_dir, seed, world, precision, micro, accumulation, parallel,
                          stop_after, progress, pause_at)
    finally:
        # the sharded copy sits in reference cycles: freed here, not when the collector
        # next happens to run, so its shards leave the GPU before evaluation or next stage
        model = wrapped = None
        release(world.device)


def stage_module(model: MultimodalLM, strategy, world: World, precision: str,
                 parallel: ParallelConfig, scope: contextlib.ExitStack):
    """(the model the stage trains, the module the loop calls, the frozen bytes by dtype):
    trainable parameters in fp32 and frozen ones in the compute dtype under autocast,
    activation checkpointing on, wrapped by the strategy, until `scope` closes. A strategy
    that shards in place gets a copy built on the meta device and loaded shard by shard
    (harness.training.sharded_load), so a rank never holds the model twice or what trains
    whole in fp32; the caller's model waits meanwhile, in host memory on a GPU."""
    source = None
    if strategy.wraps_in_place:
        scope.enter_context(_on_host(model, world))
        source, model = model, meta_copy(model)
    if precision != "no":
        upcast_trainable(model)
        if parallel.frozen_weights == "compute":
            scope.enter_context(held_in(model, COMPUTE_DTYPES[precision],
                                        restore=source is None))
    scope.enter_context(_checkpointed(model, parallel.activation_checkpointing))
    frozen = frozen_bytes(model)                     # whole, before any sharding
    wrapped = strategy.wrap(model)
    if source is not None:
        load_local_shards(model, source, world.device)
    return model, wrapped, frozen


def stage_optimizer(groups: list[dict], stage: StageConfig, world: World, strategy
                    ) -> torch.optim.Optimizer:
    """AdamW over the stage's groups; fused on a GPU for whole (unsharded) parameters: one
    kernel per step instead of the multi-tensor path's temporaries, a whole fp32 copy of a
    moment in flight (about 27 GB for a 7B LLM on one GPU, derived). FSDP's shards keep the
    default path, whose temporaries are one shard's."""
    fused = world.device.type == "cuda" and not strategy.wraps_in_place
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


def _train(model, wrapped, frozen, strategy, stage, dataset, collate, stage_dir, seed, world,
           precision, micro, accumulation, parallel, stop_after, progress, pause_at
           ) -> StageResult:
    groups = param_groups(model, stage)              # the (possibly sharded) parameters
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    trainable = {g["name"]: sum(p.numel() for p in g["params"]) for g in groups}
    optimizer = stage_optimizer(groups, stage, world, strategy)
    total = total_steps(stage, len(dataset))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(stage, total))
    scaler = torch.amp.GradScaler(world.device.type, enabled=precision == "fp16")
    start = 0
    resume_from = checkpoint.resume_point(stage_dir.path, world,
                                          stage_dir.notice if world.is_main else None)
    if resume_from is not None:
        start = checkpoint.load(resume_from, world, wrapped, optimizer, scheduler, names)
    kept = []
    if world.is_main:   # the log as of the step resumed from (a start over: its events)
        kept = [m for m in stage_dir.metrics_log() if m.get("step", 0) <= start]
        if kept or (stage_dir.path / "metrics.jsonl").exists():
            atomic_write_text(stage_dir.path / "metrics.jsonl",
                              "".join(json.dumps(m) + "\n" for m in kept))
    pausing = pause_at is not None and pause_at < total
    if pausing and start > pause_at:
        raise HarnessError(f"stage '{stage.name}' in {stage_dir.path} is checkpointed at step "
                           f"{start}, past the rung at step {pause_at}: the rung's checkpoint "
                           "is gone, so its score cannot be measured")
    if pausing and start == pause_at:   # paused here before: the rung's weights are at hand
        raise StagePaused(start, total, checkpoint.full_trainable_state(world, wrapped, names))
    end = pause_at if pausing else total
    if world.is_main:
        stage_dir.log(event="start", step=start, total=total, trainable=trainable,
                      strategy=strategy.name, ranks=world.size, micro_batch=micro,
                      accumulation=accumulation, frozen_bytes=frozen)
    wrapped.train()
    bar = tqdm(total=total, initial=start, desc=stage.name,
               disable=not (progress and world.is_main), dynamic_ncols=True, leave=False)
    times, loss_value, done_here = [], float("nan"), 0
    order = step_order(dataset, stage.batch_size, seed, stage.group_by_modality)
    loader = step_batches(StepBatches(dataset, collate, order, world.rank, micro, accumulation),
                          start, end, parallel.loader_workers, parallel.prefetch_steps,
                          pin_memory=world.device.type == "cuda")
    clock = _CheckpointClock(parallel.checkpoint_minutes)
    for step, prepared in zip(range(start, end), loader):
        t0 = time.perf_counter()
        # counted on the host batches: on a GPU the count's per-sample reads would each sync
        counts = torch.tensor([float(sum(model.answer_tokens(b["input_ids"], b["attention_mask"],
                                                            b["labels"], b["has_image"])
                                         for b in prepared))], device=world.device)
        batches = [to_device(b, world.device) for b in prepared]
        tokens = max(float(all_reduce_sum(world, counts).item()), 1.0)
        summed = optimizer_step(wrapped, strategy, batches, tokens, world, precision, scaler,
                                optimizer, groups, stage.grad_clip)
        scheduler.step()
        loss_value = float(all_reduce_sum(world, summed).item()) / tokens
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
                  else "stop" if done_here == stop_after
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
        if done_here == stop_after and not finished:
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
