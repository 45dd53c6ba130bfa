"""What a data worker does with the job's signals: nothing.

Slurm signals every process of a job step, workers included, and a forked worker inherits
submitit's handlers: on rank 0 each worker would checkpoint and requeue the job itself (USR2),
and a worker that died of SIGTERM while rank 0 writes its checkpoint would raise in rank 0's
loader. Workers (the training loader's and evaluation's) leave both to their rank and end with
it."""
from __future__ import annotations

import os
import signal

JOB_SIGNALS = ("SIGUSR2", "SIGTERM", "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


def ignore_job_signals(_worker_id: int) -> None:
    """A DataLoader worker_init_fn."""
    for name in set(JOB_SIGNALS):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
