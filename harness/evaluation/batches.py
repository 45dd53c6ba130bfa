"""Evaluation batches, prepared ahead: worker processes decode, resize and tokenize the next
batches while the model answers the current one (images were decoded one batch at a time
in the answering process, the GPU idle meanwhile). Batches come back in their order, so
answers line up with their questions whatever the number of workers."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

from torch.utils.data import DataLoader, Dataset

from core.job_signals import ignore_job_signals
from harness.data.loader_errors import failing_cleanly


class ChunkBatches(Dataset):
    """Item k: `build(chunks[k])`. `build` must be picklable (a module-level function or a
    partial of one) for workers started by spawn."""

    def __init__(self, chunks: Sequence, build: Callable):
        self.chunks, self.build = chunks, build

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int):
        return self.build(self.chunks[k])


def prepared(batches: ChunkBatches, workers: int, pin_memory: bool) -> Iterator:
    """The batches in order; with workers > 0 built by that many processes ahead of use,
    into pinned memory when `pin_memory` (the copy to the GPU is then asynchronous)."""
    if workers == 0 or len(batches) == 0:
        return (batches[k] for k in range(len(batches)))
    # the fast tokenizer's thread pool does not survive a fork; workers tokenize alone
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return failing_cleanly(iter(DataLoader(
        batches, batch_size=None, shuffle=False, num_workers=min(workers, len(batches)),
        pin_memory=pin_memory, collate_fn=_as_is, worker_init_fn=ignore_job_signals)))


def _as_is(item):
    return item
