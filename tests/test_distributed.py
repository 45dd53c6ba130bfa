"""One run on several ranks, in real processes (gloo on this CPU): the paper's global batch
gives the same training whatever the hardware, FSDP really shards, a killed 2-rank stage
resumes (in 1 rank, through DCP resharding), a failing rank fails the job quickly with its
traceback in the run's reason, a batch that does not split is refused before anything runs,
and a 2-task Slurm job is one run."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.cli import main
from tests.tiny import tiny_run_yaml

ROOT = Path(__file__).resolve().parent.parent
# a frozen expert (sam) beside a tuned one, two learning-rate groups, gradient clipping,
# text-only samples in the data (a rank whose micro-batch has no image still reduces the
# vision side's gradients)
BASE = tiny_run_yaml("dist", sft_steps=6, sft_batch=4, sft_checkpoint_every=2)


def _config(folder: Path, name: str, parallel: str = "", sft_steps: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = tiny_run_yaml("dist", sft_steps=sft_steps, sft_batch=4, sft_checkpoint_every=2)
    path = folder / f"{name}.yaml"
    path.write_text(text + (f"parallel: {parallel}\n" if parallel else ""))
    return path


def _ablate(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=600, **kw)


def _weights(work: Path, stage: str = "sft") -> dict:
    (path,) = glob.glob(str(work / "stages" / f"{stage}-*" / "weights.safetensors"))
    return load_file(path)


def _predictions(work: Path) -> list[str]:
    (run,) = (work / "runs").iterdir()
    return [json.loads(line)["prediction"]
            for line in (run / "predictions.jsonl").read_text().splitlines()]


def _max_gap(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_one_rank_two_ranks_and_accumulation_train_the_same(tmp_path):
    """1 process; 2 processes with DDP (checkpointing on time as well); 2 with FSDP2; 1
    process accumulating 2 micro-batches of 2 that 2 loader workers prepare: the same final
    trainable weights (fp32, within 1e-5) and the same answers; the run key is the same
    (hardware is not identity)."""
    runs = {"one": ("", 1), "ddp": ("{strategy: ddp, checkpoint_minutes: 1.0e-6}", 2),
            "fsdp": ("{strategy: fsdp}", 2),
            "accumulate": ("{micro_batch: 2, loader_workers: 2}", 1)}
    for name, (parallel, nproc) in runs.items():
        path = _config(tmp_path / "cfg", name, parallel)
        done = _ablate("train", str(path), "--workdir", str(tmp_path / name), "--nproc",
                       str(nproc), "--no-progress")
        assert done.returncode == 0, done.stderr[-3000:]
    keys = {name: [d.name for d in (tmp_path / name / "runs").iterdir()] for name in runs}
    assert len({tuple(k) for k in keys.values()}) == 1, keys
    reference = _weights(tmp_path / "one")
    for name in ("ddp", "fsdp", "accumulate"):
        assert _max_gap(reference, _weights(tmp_path / name)) < 1e-5, name
        assert _predictions(tmp_path / name) == _predictions(tmp_path / "one"), name
    logs = {name: json.loads((next((tmp_path / name / "stages").glob("sft-*")) /
                              "metrics.jsonl").read_text().splitlines()[0]) for name in runs}
    assert (logs["fsdp"]["strategy"], logs["fsdp"]["ranks"]) == ("fsdp", 2)
    assert (logs["ddp"]["strategy"], logs["accumulate"]["accumulation"]) == ("ddp", 2)
    # checkpoints every 2 steps, and on time between them (rank 0's clock, both ranks save)
    saved = {name: [(m["step"], m["reason"]) for m in map(json.loads, (next(
        (tmp_path / name / "stages").glob("sft-*")) / "metrics.jsonl").read_text().splitlines())
        if m.get("event") == "checkpoint"] for name in ("one", "ddp")}
    assert saved["one"] == [(2, "steps"), (4, "steps"), (6, "final")]
    assert saved["ddp"] == [(1, "minutes"), (2, "steps"), (3, "minutes"), (4, "steps"),
                            (5, "minutes"), (6, "final")]
    # FSDP shards: every trainable tensor and its AdamW moments are saved as one half per
    # rank (DCP's metadata lists each rank's chunk); DDP's are whole replicas
    from torch.distributed.checkpoint import FileSystemReader
    for name, sharded in (("fsdp", True), ("ddp", False)):
        ckpt = next((tmp_path / name / "stages").glob("sft-*")) / "checkpoint"
        meta = FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
        tensors = {k: v for k, v in meta.items() if hasattr(v, "chunks") and v.size.numel() > 1
                   and (k.startswith("model.") or k.endswith((".exp_avg", ".exp_avg_sq")))}
        assert any(k.startswith("model.") for k in tensors)
        assert any(k.endswith(".exp_avg") for k in tensors)
        total = sum(v.size.numel() for v in tensors.values())
        split = sum(v.size.numel() for v in tensors.values() if len(v.chunks) == 2 and
                    all(abs(2 * c.sizes[0] - v.size[0]) <= 1 for c in v.chunks))
        # (a tensor whose first dimension is 1 cannot be split: a few norms' and embeddings')
        assert (split / total > 0.95) if sharded else split == 0, (name, split, total)


@pytest.mark.long
def test_a_killed_two_rank_stage_resumes_in_one_rank(tmp_path):
    """SIGKILL of a 2-rank FSDP run mid-stage, then the same run in 1 process: it resumes from
    the 2-rank checkpoint (DCP reshards it) to the uninterrupted result."""
    steps = 30
    straight = _config(tmp_path / "cfg", "straight", sft_steps=steps)
    assert _ablate("train", str(straight), "--workdir", str(tmp_path / "a"),
                   "--no-progress").returncode == 0
    sharded = _config(tmp_path / "cfg", "sharded", "{strategy: fsdp}", sft_steps=steps)
    work = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "train", str(sharded),
                             "--workdir", str(work), "--nproc", "2", "--no-progress"],
                            cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    meta = None
    while time.monotonic() < deadline:
        found = glob.glob(str(work / "stages" / "sft-*" / "checkpoint" / "meta.pt"))
        if found:
            meta = found[0]
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert meta is not None, "the sharded run never checkpointed its fine-tuning stage"
    step = torch.load(meta, weights_only=True)["step"]
    assert step < steps and torch.load(meta, weights_only=True)["world"] == 2
    assert not glob.glob(str(work / "stages" / "sft-*" / "result.json"))
    again = _ablate("train", str(straight), "--workdir", str(work), "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    log = [json.loads(x) for x in (next((work / "stages").glob("sft-*")) /
                                   "metrics.jsonl").read_text().splitlines()]
    starts = [m for m in log if m.get("event") == "start"]
    assert starts[-1]["step"] >= step and starts[-1]["ranks"] == 1
    assert _max_gap(_weights(tmp_path / "a"), _weights(work)) < 1e-5


# Rank 1 (RANK, or SLURM_PROCID before the job exports RANK) raises in its first stage, and
# its process then stays alive, as a NCCL rank's does whose peers see no closed socket: its
# peers learn of the failure only from the rank aborting its groups.
SITE = """\
import os, threading, time
if os.environ.get("RANK", os.environ.get("SLURM_PROCID")) == "1":
    import harness.training.loop as loop
    real = loop.train_stage
    def failing(*args, **kwargs):
        threading.Thread(target=time.sleep, args=(600,)).start()
        raise RuntimeError("rank 1 broke on purpose")
    loop.train_stage = failing
    import harness.runs.trainer as trainer
    trainer.train_stage = failing
"""


def _failing_rank_1(tmp_path: Path, site: str = SITE) -> str:
    """A PYTHONPATH whose sitecustomize makes rank 1 fail (SITE, or another `site`)."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(site)
    return f"{folder}:{ROOT}"


def _failed_by_rank_1(run: Path) -> None:
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "FAILED", status
    assert "rank-1" in status["reason"] and "rank 1 broke on purpose" in status["reason"]
    assert "Traceback" in (run / "rank-1.error").read_text()


def test_a_failing_rank_fails_the_job_within_seconds(tmp_path):
    path = _config(tmp_path / "cfg", "fail", "{strategy: ddp}")
    started = time.monotonic()
    done = _ablate("train", str(path), "--workdir", str(tmp_path / "w"), "--nproc", "2",
                   "--no-progress", env={"PYTHONPATH": _failing_rank_1(tmp_path)})
    elapsed = time.monotonic() - started
    assert done.returncode != 0
    assert elapsed < 120, elapsed   # startup and the align stage included; nothing hangs
    (run,) = (tmp_path / "w" / "runs").iterdir()
    _failed_by_rank_1(run)


def test_a_global_batch_the_ranks_do_not_split_is_refused(tmp_path, capsys):
    path = _config(tmp_path / "cfg", "odd")
    assert main(["train", str(path), "--workdir", str(tmp_path / "w"), "--nproc", "3"]) == 2
    err = capsys.readouterr().err
    assert "batch_size 4 does not divide over 3 ranks" in err
    assert not (tmp_path / "w").exists()
    path = _config(tmp_path / "cfg", "micro", "{micro_batch: 3}")
    assert main(["train", str(path), "--workdir", str(tmp_path / "w"), "--nproc", "2"]) == 2
    assert "allowed parallel.micro_batch: 1, 2" in capsys.readouterr().err


def _two_task_job(slurm_cluster, tmp_path: Path, name: str) -> tuple[Path, Path]:
    """(a spec of one DDP run named `name`, a profile of 2 tasks on the test cluster)."""
    profile = tmp_path / "two.yaml"
    profile.write_text(Path(slurm_cluster).read_text().replace("gpus_per_node: 0",
                                                               "gpus_per_node: 0\n"
                                                               "tasks_per_node: 2"))
    base = _config(tmp_path / "spec", "base", "{strategy: ddp}")
    spec = tmp_path / "spec" / "two.yaml"
    spec.write_text(f"name: {name}\nbase: {base.name}\n")
    return spec, profile


@pytest.mark.slurm
def test_a_two_task_slurm_job_is_one_run(slurm_cluster, tmp_path, capsys):
    spec, profile = _two_task_job(slurm_cluster, tmp_path, "two_tasks")
    assert main(["run", str(spec), "--workdir", str(tmp_path / "w"), "--executor", "slurm",
                 "--profile", str(profile)]) == 0
    (run,) = (tmp_path / "w" / "runs").iterdir()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "DONE"
    log = json.loads((next((tmp_path / "w" / "stages").glob("sft-*")) /
                      "metrics.jsonl").read_text().splitlines()[0])
    assert (log["strategy"], log["ranks"]) == ("ddp", 2)


def _two_task_job_ending(slurm_cluster, tmp_path: Path, monkeypatch, name: str,
                         site: str) -> Path:
    """Submit a 2-task Slurm job whose rank 1 fails as `site` makes it, wait until its run is
    no longer RUNNING (at most two minutes from submission), cancel the job; its run dir."""
    spec, profile = _two_task_job(slurm_cluster, tmp_path, name)
    monkeypatch.setenv("PYTHONPATH", _failing_rank_1(tmp_path, site))
    work = tmp_path / "w"
    started = time.monotonic()
    assert main(["run", str(spec), "--workdir", str(work), "--executor", "slurm",
                 "--profile", str(profile), "--no-follow"]) == 0
    (run,) = (work / "runs").iterdir()
    job_id = json.loads((run / "job.json").read_text())["job_id"]
    try:
        state = None
        while time.monotonic() - started < 120 and state in (None, "RUNNING"):
            time.sleep(1)
            if (run / "status.json").exists():
                state = json.loads((run / "status.json").read_text())["state"]
    finally:
        subprocess.run(["scancel", job_id], check=False)
    return run


@pytest.mark.slurm
def test_a_two_task_slurm_job_whose_rank_1_fails_ends_failed(slurm_cluster, tmp_path,
                                                            monkeypatch):
    """Rank 1 of a 2-task job raises and its process lingers (SITE): rank 0 records FAILED
    with rank 1's cause within two minutes of submission, not after the collective timeout."""
    _failed_by_rank_1(_two_task_job_ending(slurm_cluster, tmp_path, monkeypatch,
                                           "two_tasks_failing", SITE))


SIGKILLED_SITE = """\
import os, signal
if os.environ.get("RANK", os.environ.get("SLURM_PROCID")) == "1":
    import harness.training.loop as loop
    import harness.runs.trainer as trainer
    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)   # no handler, no traceback: gone mid-run
    loop.train_stage = trainer.train_stage = killed
"""


@pytest.mark.long   # 21 s: the failing-rank job beside it covers the default run
@pytest.mark.slurm
def test_a_two_task_slurm_job_whose_rank_1_is_killed_ends_failed(slurm_cluster, tmp_path,
                                                                 monkeypatch):
    """Rank 1 of a 2-task job is SIGKILLed while rank 0 waits for it in a collective: rank 0
    records FAILED with what it saw within two minutes, before srun's --kill-on-bad-exit
    ends the step (it signals rank 0 with SIGTERM first, which submitit lets pass)."""
    run = _two_task_job_ending(slurm_cluster, tmp_path, monkeypatch, "two_tasks_killed",
                               SIGKILLED_SITE)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "FAILED", status
    assert status["reason"], status
