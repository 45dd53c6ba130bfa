"""Training: the loop (loop), the step -> batch order and the worker processes that prepare
batches (loader), how a stage is spread over ranks (strategies), resumable sharded
checkpoints (checkpoint), the memory a finished stage gives back (memory) and the ranks
themselves (distributed)."""
from harness.training.loader import batch_indices
from harness.training.loop import (
    BatchSplitError,
    StageInterrupted,
    StagePaused,
    StageResult,
    param_groups,
    split,
    train_stage,
)

__all__ = ["BatchSplitError", "StageInterrupted", "StagePaused",
           "StageResult", "batch_indices",
           "param_groups", "split", "train_stage"]
