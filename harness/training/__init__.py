"""Training: the loop (loop), how a stage is spread over ranks (strategies), resumable
sharded checkpoints (checkpoint) and the ranks themselves (distributed)."""
from harness.training.loop import (
    BatchSplitError,
    StageInterrupted,
    StageResult,
    batch_indices,
    param_groups,
    split,
    train_stage,
)

__all__ = ["BatchSplitError", "StageInterrupted", "StageResult", "batch_indices",
           "param_groups", "split", "train_stage"]
