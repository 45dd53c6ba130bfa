"""The local executor's GPUs: each job sees the GPUs of its own slot (submitit would start it
with CUDA_VISIBLE_DEVICES="", hiding every GPU), as many ranks as GPUs, and a split that
cannot work is refused before anything is submitted. A CPU can check the variable."""
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.errors import HarnessError
from harness.scheduler.executors import ExecutorOptions, LocalExecutor
from harness.scheduler.gpu_slots import GpuSlotError, gpu_slots, visible_gpus


@dataclass(frozen=True)
class _Cfg:
    name: str


class EnvJob:
    """Stands in for a RunJob: records what each of its tasks sees."""

    def __init__(self, name: str, out: str):
        self.cfg, self.out = _Cfg(name), out

    def __call__(self):
        task = os.environ.get("SUBMITIT_LOCAL_GLOBALID", "?")
        Path(self.out, f"{self.cfg.name}.{task}").write_text(
            os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
        time.sleep(1)   # overlap with the other slot's job


def _submit(tmp_path, names, **options):
    work, seen = tmp_path / "work", tmp_path / "seen"
    seen.mkdir()
    executor = LocalExecutor(ExecutorOptions(work, **options))
    executor.place({"auto"})
    jobs = []
    for name in names:
        run_dir = work / "runs" / name
        run_dir.mkdir(parents=True)
        from harness.runs.rundir import RunDir
        jobs.append((RunDir(run_dir), EnvJob(name, str(seen))))
    executor.submit(jobs)
    deadline = time.monotonic() + 240
    log = next((work / "jobs").glob("local-*/dispatcher.log"))
    while "all jobs ended" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)
    return executor, seen, {n: json.loads((work / "runs" / n / "job.json").read_text())
                            for n in names}


def test_each_local_job_sees_its_own_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    executor, seen, jobs = _submit(tmp_path, ["a", "b", "c"], max_parallel=2, gpus_per_job=2)
    assert "slot 0: GPU 4,5; slot 1: GPU 6,7" in executor.describe()
    for name, job in jobs.items():
        assert job["gpus"] in ([4, 5], [6, 7]), job
        # one rank per GPU, each told exactly its slot's GPUs
        assert {p.name: p.read_text() for p in seen.glob(f"{name}.*")} == {
            f"{name}.0": ",".join(map(str, job["gpus"])),
            f"{name}.1": ",".join(map(str, job["gpus"]))}
    assert jobs["a"]["gpus"] != jobs["b"]["gpus"]   # started together: different GPUs


def test_a_local_job_keeps_the_gpu_the_shell_sees_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    _, seen, jobs = _submit(tmp_path, ["a"])
    assert jobs["a"]["gpus"] == [3]
    assert (seen / "a.0").read_text() == "3"


def test_gpu_split_defaults_and_refusals(monkeypatch):
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 0"}) == [2, 0]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    with pytest.raises(GpuSlotError, match=r"cannot pass on GPU-5f1e.*allowed values: "
                                           r"comma-separated GPU indices"):
        visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-5f1e"})
    assert gpu_slots(2, None, [0, 1, 2], uses_gpu=True).slots == ((0,), (1,))
    assert gpu_slots(4, None, [0, 1], uses_gpu=False).slots == ((),) * 4   # CPU runs
    assert gpu_slots(2, 0, [0, 1], uses_gpu=True).per_job == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    with pytest.raises(HarnessError, match=r"--max-parallel 2 x --gpus-per-job 2 needs 4 "
                                           r"GPUs and this machine shows GPU 0,1,2 .*allowed: "
                                           r"--max-parallel 1..1 at 2 GPU\(s\) per job, or "
                                           r"--gpus-per-job 0"):
        gpu_slots(2, 2, [0, 1, 2], uses_gpu=True)
    with pytest.raises(HarnessError, match="shows no GPU"):
        gpu_slots(1, 1, [], uses_gpu=True)


def test_plan_says_what_local_jobs_would_get(tiny_spec, tmp_path, capsys, monkeypatch):
    from harness.cli import main
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert main(["plan", str(tiny_spec()), "--workdir", str(tmp_path / "w")]) == 0
    assert ("local executor: this machine shows GPU 4,5; `ablate run --max-parallel P "
            "--gpus-per-job G` runs P jobs at once, job slot k on GPUs k*G..k*G+G-1 of these "
            "(default G = 1: at most 2 at once)") in capsys.readouterr().out
