"""The ranks' waits and failures on two gloo ranks: rank 0's file work (a download, stage
weights being written) may take far longer than the training group's collective timeout
while the others wait for it at a barrier, a broadcast or a gather, and nothing times out;
and a rank that aborts its groups (what a failing rank does) frees a peer waiting for it in
a collective at once, instead of after the timeout."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.training.distributed import abort, barrier, broadcast, gather_to_main, init_world
from harness.training.launch import free_port

SHORT_MIN = 0.02    # the training group's timeout here: 1.2 s
SLOW_S = 2.5        # rank 0's "download"


def _join(rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      ABLATE_DIST_TIMEOUT_MIN=str(SHORT_MIN))
    torch.set_num_threads(1)


def _slow_main(rank: int, port: int, folder: str) -> None:
    _join(rank, port)
    world = init_world("cpu")
    seen = []
    for wait in (lambda: barrier(world), lambda: broadcast(world, "built"),
                 lambda: gather_to_main(world, rank)):
        if world.is_main:
            time.sleep(SLOW_S)
        seen.append(wait())
    if world.is_main:
        Path(folder, "waits.json").write_text(json.dumps(seen))


def test_rank_zeros_long_file_work_outlasts_the_training_groups_timeout(tmp_path):
    mp.spawn(_slow_main, args=(free_port(), str(tmp_path)), nprocs=2)
    assert json.loads((tmp_path / "waits.json").read_text()) == [None, "built", [0, 1]]


def _aborting_peer(rank: int, port: int, folder: str) -> None:
    _join(rank, port)
    os.environ["ABLATE_DIST_TIMEOUT_MIN"] = "5"   # a hang would be the timeout's, not this
    world = init_world("cpu")
    barrier(world)
    if rank == 1:       # fails, and stays alive as a rank stuck in NCCL's shutdown would
        abort(world)
        time.sleep(30)
        return
    started = time.monotonic()
    try:
        dist.all_reduce(torch.ones(1))
        outcome = "returned"
    except RuntimeError as exc:
        outcome = type(exc).__name__
    Path(folder, "peer.json").write_text(json.dumps(
        {"outcome": outcome, "seconds": time.monotonic() - started}))
    os._exit(0)   # the peer sleeps on; the test has what it needs


def test_a_rank_that_aborts_frees_a_peer_waiting_for_it(tmp_path):
    context = mp.spawn(_aborting_peer, args=(free_port(), str(tmp_path)), nprocs=2,
                       join=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp_path / "peer.json").exists():
        time.sleep(0.2)
    for process in context.processes:
        process.kill()
    got = json.loads((tmp_path / "peer.json").read_text())
    assert got["outcome"] == "RuntimeError" and got["seconds"] < 10, got
