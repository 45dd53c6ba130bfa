"""The local executor's dispatcher: a detached process that submits the queued runs as
submitit local jobs, one per free GPU slot (harness.scheduler.gpu_slots; as many slots as
--max-parallel), and records each job and its GPUs in its run directory as it starts. It
exits when the last job ends."""
from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path

import submitit

from harness.runs.rundir import RunDir
from harness.scheduler.executors import LOCAL_TIMEOUT_MIN, record_job
from harness.scheduler.gpu_slots import GpuSlots


def dispatch(folder: Path) -> None:
    queue = pickle.loads((folder / "queue.pkl").read_bytes())
    for run_dir, _ in queue["jobs"]:
        record_job(RunDir(Path(run_dir)), executor="local", job_id=None,
                   dispatcher_pid=os.getpid(), dispatcher_log=str(folder / "dispatcher.log"))
    (folder / "ready").touch()
    slots: GpuSlots = queue["slots"]
    executor = submitit.LocalExecutor(folder=folder / "%j")
    pending, running = list(queue["jobs"]), {}
    while pending or running:
        running = {k: j for k, j in running.items() if not j.done()}
        free = [k for k in range(len(slots.slots)) if k not in running]
        while pending and free:
            run_dir, job = pending.pop(0)
            k = free.pop(0)
            gpus = list(slots.slots[k])
            # submitit sets the job's CUDA_VISIBLE_DEVICES to exactly these (none: "")
            executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=len(gpus),
                                       visible_gpus=gpus, tasks_per_node=slots.ranks_per_job)
            handle = executor.submit(job)
            record_job(RunDir(Path(run_dir)), executor="local", job_id=str(handle.job_id),
                       stdout=str(handle.paths.stdout), stderr=str(handle.paths.stderr),
                       gpus=gpus)
            print(f"{time.strftime('%H:%M:%S')} started {job.cfg.name} as job "
                  f"{handle.job_id} in slot {k} on "
                  + (f"GPU {','.join(map(str, gpus))}" if gpus else "no GPU"), flush=True)
            running[k] = handle
        time.sleep(0.5)
    print(f"{time.strftime('%H:%M:%S')} all jobs ended", flush=True)


if __name__ == "__main__":
    dispatch(Path(sys.argv[1]))
