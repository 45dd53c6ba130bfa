"""The training data path of one rank: which samples a step trains on (the deterministic
step -> global batch order, optionally grouped by modality and length as LLaVA-1.5 trains),
and a DataLoader whose worker processes decode and resize those samples ahead of the step.

The order is a pure function of (seed, step), never of a sampler's state: a resumed stage,
or one run on another number of ranks, trains on the same global batches. Each item of the
loader is one step's batches for this rank, so workers prefetch whole steps. Workers ignore the
job's requeue and termination signals, which are their rank's to handle."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from core.job_signals import ignore_job_signals
from harness.data.loader_errors import failing_cleanly

Order = Callable[[int], list[int]]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100003 + epoch)


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """The global batch of `step`: slice k of epoch e's permutation (the remainder of an
    epoch is dropped)."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=_epoch_generator(seed, epoch))
    return order[k * batch_size:(k + 1) * batch_size].tolist()


class ModalityLengthOrder:
    """LLaVA-1.5's `group_by_modality_length`: a global batch holds samples of one modality
    (with an image, or text only) wherever the counts allow, and is sorted longest first, so
    each rank's micro-batches pad to similar lengths and no step mixes a few long text-only
    conversations into image batches. Each epoch: each modality permuted alone, cut into
    global batches; what is left of both forms mixed batches; the batches shuffled."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths = lengths        # a sample's text length in words; negative: text only
        self.batch_size, self.seed = batch_size, seed
        self._cached: tuple[int, list[list[int]]] | None = None

    @classmethod
    def of(cls, dataset: list, batch_size: int, seed: int) -> ModalityLengthOrder:
        lengths = []
        for sample in dataset:
            words = max(1, sum(len(text.split()) for _, text in sample.turns))
            lengths.append(words if sample.image is not None else -words)
        return cls(lengths, batch_size, seed)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.lengths) // self.batch_size)

    def epoch(self, epoch: int) -> list[list[int]]:
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        g = _epoch_generator(self.seed, epoch)
        size = self.batch_size
        images = [i for i, n in enumerate(self.lengths) if n > 0]
        texts = [i for i, n in enumerate(self.lengths) if n < 0]
        batches, rest = [], []
        for group in (images, texts):
            shuffled = [group[j] for j in torch.randperm(len(group), generator=g).tolist()]
            full = len(shuffled) // size * size
            batches += [shuffled[k:k + size] for k in range(0, full, size)]
            rest += shuffled[full:]
        batches += [rest[k:k + size] for k in range(0, len(rest) // size * size, size)]
        if not batches:       # fewer samples than one batch: all of them, as batch_indices
            batches = [rest]
        batches = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
        batches = [sorted(b, key=lambda i: (-abs(self.lengths[i]), i)) for b in batches]
        self._cached = (epoch, batches)
        return batches

    def __call__(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.steps_per_epoch)
        batches = self.epoch(epoch)
        return batches[k] if k < len(batches) else []


class RandomOrder:
    """batch_indices as an object: picklable, so workers started by spawn (macOS) get it."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed

    def __call__(self, step: int) -> list[int]:
        return batch_indices(step, self.batch_size, self.n, self.seed)


def step_order(dataset: list, batch_size: int, seed: int, group_by_modality: bool) -> Order:
    if group_by_modality:
        return ModalityLengthOrder.of(dataset, batch_size, seed)
    return RandomOrder(len(dataset), batch_size, seed)


class StepBatches(Dataset):
    """Item `step`: this rank's slice of the step's global batch, collated into
    `accumulation` micro-batches."""

    def __init__(self, dataset: list, collate, order: Order, rank: int, micro: int,
                 accumulation: int):
        self.dataset, self.collate, self.order = dataset, collate, order
        self.rank, self.micro, self.accumulation = rank, micro, accumulation

    def __getitem__(self, step: int) -> list[dict]:
        per_rank = self.micro * self.accumulation
        mine = self.order(step)[self.rank * per_rank:(self.rank + 1) * per_rank]
        return [self.collate([self.dataset[i] for i in mine[k * self.micro:(k + 1) * self.micro]])
                for k in range(self.accumulation)]


def step_batches(batches: StepBatches, start: int, total: int, workers: int,
                 prefetch: int, pin_memory: bool) -> Iterator[list[dict]]:
    """Steps start..total-1 of `batches` in order; with workers > 0 each worker process
    decodes and resizes whole steps, `prefetch` steps ahead of the training step."""
    steps = range(start, total)
    if workers == 0:
        return (batches[s] for s in steps)
    # the fast tokenizer's thread pool does not survive a fork; workers tokenize alone
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    loader = DataLoader(batches, sampler=steps, batch_size=None, num_workers=workers,
                        prefetch_factor=prefetch, pin_memory=pin_memory,
                        collate_fn=_identity, worker_init_fn=ignore_job_signals)
    return failing_cleanly(iter(loader))   # a bad image: its record; the workers stopped


def _identity(item):
    return item
