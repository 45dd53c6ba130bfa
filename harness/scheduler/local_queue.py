"""The local executor's dispatcher: a detached process that submits the queued runs as
submitit local jobs, never more than max_parallel at once, and records each job in its run
directory as it starts. It exits when the last job ends."""
from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path

import submitit

from harness.runs.rundir import RunDir
from harness.scheduler.executors import LOCAL_TIMEOUT_MIN, record_job


def dispatch(folder: Path) -> None:
    queue = pickle.loads((folder / "queue.pkl").read_bytes())
    for run_dir, _ in queue["jobs"]:
        record_job(RunDir(Path(run_dir)), executor="local", job_id=None,
                   dispatcher_pid=os.getpid(), dispatcher_log=str(folder / "dispatcher.log"))
    (folder / "ready").touch()
    executor = submitit.LocalExecutor(folder=folder / "%j")
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
    pending, running = list(queue["jobs"]), []
    while pending or running:
        running = [j for j in running if not j.done()]
        while pending and len(running) < queue["max_parallel"]:
            run_dir, job = pending.pop(0)
            handle = executor.submit(job)
            record_job(RunDir(Path(run_dir)), executor="local", job_id=str(handle.job_id),
                       stdout=str(handle.paths.stdout), stderr=str(handle.paths.stderr))
            print(f"{time.strftime('%H:%M:%S')} started {job.cfg.name} as job "
                  f"{handle.job_id}", flush=True)
            running.append(handle)
        time.sleep(0.5)
    print(f"{time.strftime('%H:%M:%S')} all jobs ended", flush=True)


if __name__ == "__main__":
    dispatch(Path(sys.argv[1]))
