"""`ablate train --nproc N`: one run as N processes on this machine (its GPUs, or N CPU
processes with gloo), the way a multi-task Slurm job runs it: each process gets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT and runs the same command. A process
that fails takes the others down within seconds (they would otherwise wait in a collective),
and the launcher exits with its code."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from harness.training.kernels import job_environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], nproc: int, grace_s: float = 5.0) -> int:
    port = free_port()
    threads = max(1, (os.cpu_count() or 1) // nproc)
    procs = []
    for rank in range(nproc):
        env = {**job_environment(dict(os.environ)), "RANK": str(rank), "WORLD_SIZE": str(nproc),
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(nproc),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
        procs.append(subprocess.Popen([sys.executable, "-m", "harness.cli", *argv], env=env))
    failed = None
    try:
        while any(p.poll() is None for p in procs):
            failed = next((p for p in procs if p.returncode not in (None, 0)), None)
            if failed is not None:
                break
            time.sleep(0.2)
        if failed is not None:
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                time.sleep(0.1)
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    p.kill()
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    codes = [p.wait() for p in procs]
    if failed is not None:
        return failed.returncode
    return next((c for c in codes if c), 0)
