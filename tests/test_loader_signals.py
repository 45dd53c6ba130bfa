"""Slurm signals every process of a job, DataLoader workers included: a worker must neither
run submitit's requeue handler (USR2; on rank 0 each worker would checkpoint and requeue the
job) nor die of SIGTERM while its rank writes a checkpoint. The workers' handlers are checked
in the workers themselves, with a submitit-like handler installed in the parent."""
import signal

from torch.utils.data import Dataset

from harness.training.loader import step_batches


class WorkerSignals(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, step):
        return {name: str(signal.getsignal(getattr(signal, name)))
                for name in ("SIGUSR2", "SIGTERM")}


def _requeue(signum, frame):   # stands in for submitit's checkpoint_and_try_requeue
    raise AssertionError("the requeue handler ran")


def test_loader_workers_ignore_the_jobs_requeue_and_term_signals():
    before = {s: signal.signal(s, _requeue) for s in (signal.SIGUSR2, signal.SIGTERM)}
    try:
        seen = list(step_batches(WorkerSignals(), 0, 4, workers=2, prefetch=1,
                                 pin_memory=False))
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    ignored = str(signal.SIG_IGN)
    assert seen == [{"SIGUSR2": ignored, "SIGTERM": ignored}] * 4
