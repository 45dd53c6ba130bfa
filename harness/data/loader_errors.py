"""A DataLoader's batches as the training loop and the evaluation read them, made safe to fail.
Two things go wrong when a worker raises (a bad image mid-stage): torch re-raises the error in
the main process with the worker's traceback folded into its message, so the user reads a
traceback instead of the record and file; and the workers stay alive for as long as the
failed iterator is referenced (the exception's traceback holds it), while they ignore SIGTERM
(core.job_signals): the process then hangs at exit, joining them, and a Slurm job keeps its
GPUs. Here the workers are stopped when a batch fails, and the worker's DataError is raised
as the worker wrote it."""
from __future__ import annotations

from collections.abc import Iterator

from core.errors import DataError


def failing_cleanly(batches: Iterator) -> Iterator:
    try:
        yield from batches
    except BaseException as exc:
        # torch's own shutdown: the workers are told to stop, joined, then terminated
        stop = getattr(batches, "_shutdown_workers", None)
        if stop is not None:
            stop()
        text = str(exc)
        if isinstance(exc, DataError) and "Traceback" in text:
            raise DataError(text.strip().splitlines()[-1].split("DataError: ", 1)[-1]) \
                from None
        raise
