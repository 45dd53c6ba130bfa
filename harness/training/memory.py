"""What a finished stage leaves behind is given back before the next thing runs.

FSDP2's sharded copy of a model is held in reference cycles (its modules' hooks and state
point back at the modules), which only Python's cyclic collector frees, whenever it next
runs: until then each stage's shards, gradients and optimizer state stay on the GPU into the
evaluation and the next stage. And a stage that stops by raising (a rung's StagePaused)
carries its frames, and with them the copy, the optimizer and the loader's workers, in the
exception's traceback for as long as the exception is held."""
from __future__ import annotations

import gc

import torch


def release(device: torch.device) -> None:
    """Free what nothing reaches any more, cycles included, and hand the CUDA caching
    allocator's free blocks back, so the next stage (or another process) can have them."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def without_frames(exc: BaseException) -> BaseException:
    """`exc` with its traceback (and the frames it keeps alive) dropped: for an exception
    kept as a value after its handler."""
    exc.__traceback__ = None
    return exc
