"""One run, one job: concurrent `ablate run`s of the same spec submit each run once. Every
submitter here looks at the runs before any of them submits (a barrier after the first
look), the worst interleaving: without the submit claim each would submit every run, so
an 8-GPU allocation would sit idle waiting on the run's lock. On the local executor (the
jobs then run to DONE) and on the one-node Slurm cluster (the jobs are cancelled once
counted)."""
import subprocess
import threading
from pathlib import Path

import pytest

from harness.scheduler import executors, states, submit
from harness.specs import load_spec

SUBMITTERS = 3
TWO_RUNS = """\
name: NAME
base: base.yaml
axes:
  sft_lr: {path: "stages[sft].lr", values: [1.0e-3, 3.0e-4]}
"""


def submit_concurrently(spec, work, monkeypatch, executor_cls, executor, **options):
    """SUBMITTERS threads each run `prepare` + `execute`, all past their first look at the
    runs before any claims one; returns the run keys handed to the executor, over all."""
    handed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(SUBMITTERS, timeout=120)
    real_view, real_submit = submit.view_spec, executor_cls.submit

    def first_look(spec, workdir, **options):
        views = real_view(spec, workdir, **options)
        barrier.wait()
        return views

    def counted(self, jobs):
        with lock:
            handed.extend(job.cfg.key for _, job in jobs)
        return real_submit(self, jobs)
    monkeypatch.setattr(submit, "view_spec", first_look)
    monkeypatch.setattr(executor_cls, "submit", counted)
    errors = []

    def one():
        try:
            submit.prepare(spec, work, executor, **options).execute()
        except BaseException as exc:   # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=one) for _ in range(SUBMITTERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    monkeypatch.undo()
    assert not errors, errors
    return handed


@pytest.mark.long   # about 40 s alone: both runs train and are evaluated
def test_concurrent_submitters_submit_each_run_once_locally(tiny_spec, tmp_path, monkeypatch):
    spec = load_spec(tiny_spec("once", TWO_RUNS, sft_steps=3))
    work = tmp_path / "work"
    handed = submit_concurrently(spec, work, monkeypatch, executors.LocalExecutor, "local",
                                 max_parallel=2)
    assert sorted(handed) == sorted(r.key for r in spec.runs)
    views = states.follow(spec, work, interval_s=0.5, stream=open("/dev/null", "w"))
    assert [v.state for v in views] == ["DONE", "DONE"]
    # the claim is let go once the job is recorded: a later submitter sees the runs done
    again = submit.prepare(spec, work, "local")
    assert not again.submitted and len(again.done) == 2


@pytest.mark.slurm
def test_concurrent_submitters_submit_each_run_once_on_slurm(slurm_cluster, tiny_spec,
                                                             tmp_path, monkeypatch):
    spec = load_spec(tiny_spec("once_slurm", TWO_RUNS, sft_steps=3))
    work = tmp_path / "work"
    handed = submit_concurrently(spec, work, monkeypatch, executors.SlurmExecutor, "slurm",
                                 profile=str(slurm_cluster))
    assert sorted(handed) == sorted(r.key for r in spec.runs)
    views = states.view_spec(spec, work)
    assert {v.state for v in views} <= states.IN_FLIGHT | {"RUNNING", "DONE"}
    jobs = {states._job(v.run_dir)["job_id"] for v in views}
    subprocess.run(["scancel", *jobs], check=False)
    assert len(jobs) == 2


def test_a_dead_submitters_claim_is_let_go(tiny_spec, tmp_path):
    """Claims are flocks: a submitter killed between its claim and its job's record leaves
    no claim behind (a claim file is only a claim while a process holds it)."""
    spec = load_spec(tiny_spec("dead", TWO_RUNS, sft_steps=3))
    work = tmp_path / "work"
    run_dir = states.RunDir(work / "runs" / spec.runs[0].key)
    run_dir.path.mkdir(parents=True)
    holder = subprocess.Popen(
        ["python3", "-c", "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|"
         "os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
         "time.sleep(600)", str(run_dir.claim_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        held, todo, elsewhere = submit.claim(states.view_spec(spec, work), work)
        held.close()
        assert [v.run.key for v in elsewhere] == [spec.runs[0].key]   # claimed: skipped
        assert [v.run.key for v in todo] == [spec.runs[1].key]
    finally:
        holder.kill()
        holder.wait()
    held, todo, _ = submit.claim(states.view_spec(spec, work), work)
    held.close()
    assert len(todo) == 2 and Path(run_dir.claim_path).exists()


def test_each_local_submission_has_its_own_dispatcher_folder(tmp_path, monkeypatch):
    """Two submissions from one process in one second (concurrent submitters in threads, a
    search's batches) once shared a folder: the second's queue.pkl replaced the first's and
    the first returned on the second's `ready`, so one run never got a job and stayed NEW."""
    monkeypatch.setattr(executors.time, "strftime", lambda *_: "20260101-000000")
    executor = executors.LocalExecutor(executors.ExecutorOptions(tmp_path, max_parallel=2))
    executor.submit([])
    executor.submit([])
    assert len(list((tmp_path / "jobs").glob("local-*/ready"))) == 2
