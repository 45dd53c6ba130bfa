"""The slurm executor against a real one-node Slurm cluster (slurm/cluster.sh): a grid as one
job array, a job that hits its time limit, is requeued and resumes from its checkpoint to
the same result as an uninterrupted run (with loader workers, which must leave the requeue to
their rank), and a profile naming a missing partition."""
import json
import subprocess
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.runs.rundir import RunDir
from harness.specs import load_spec

pytestmark = pytest.mark.slurm


def _mlflow(work, experiment):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_grid_as_one_job_array(slurm_cluster, tiny_spec, tmp_path, capsys):
    spec_path = tiny_spec("slurm_grid")
    work = tmp_path / "work"
    assert main(["run", str(spec_path), "--workdir", str(work), "--executor", "slurm",
                 "--profile", str(slurm_cluster)]) == 0
    assert "submitting 4 (slurm partition debug" in capsys.readouterr().out
    spec = load_spec(spec_path)
    jobs = [json.loads((work / "runs" / r.key / "job.json").read_text()) for r in spec.runs]
    arrays = {j["job_id"].split("_")[0] for j in jobs}
    assert len(arrays) == 1, jobs          # one array ...
    assert sorted(j["job_id"].split("_")[1] for j in jobs) == ["0", "1", "2", "3"]
    for r in spec.runs:
        assert json.loads((work / "runs" / r.key / "status.json").read_text())["state"] == "DONE"
    runs = _mlflow(work, "slurm_grid")
    assert sorted(r.data.tags["job_id"] for r in runs) == sorted(j["job_id"] for j in jobs)
    assert all(r.info.status == "FINISHED" and r.data.tags["executor"] == "slurm" for r in runs)
    # again: nothing to submit
    assert main(["run", str(spec_path), "--workdir", str(work), "--executor", "slurm",
                 "--profile", str(slurm_cluster)]) == 0
    assert "submitting 0" in capsys.readouterr().out


def _profile(tmp_path, name, **fields):
    base = {"partition": "debug", "cpus_per_task": 1, "mem_gb": 3, "array_parallelism": 2,
            "max_requeues": 6}
    base.update(fields)
    path = tmp_path / f"{name}.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in base.items()))
    return path


def _status(work, key):
    f = work / "runs" / key / "status.json"
    return json.loads(f.read_text()) if f.exists() else {"state": "NEW"}


def _state(work, key):
    return _status(work, key)["state"]


def _log_tail(work, key, lines=30):
    job = json.loads((work / "runs" / key / "job.json").read_text())
    logs = [Path(job[s]) for s in ("stdout", "stderr") if Path(job[s]).exists()]
    return "\n".join(f"--- {p}\n" + "\n".join(p.read_text(errors="replace")
                                             .splitlines()[-lines:]) for p in logs)


def _checkpointed_mid_stage(work):
    """Whether the sft stage has logged a checkpoint before its last step (the log is read
    while the job writes it: RunDir drops a line not yet finished)."""
    return any(r.get("event") == "checkpoint" and r.get("reason") == "steps"
               for stage in (work / "stages").glob("sft-*")
               for r in RunDir(stage).metrics_log())


# 2-minute Slurm time limits, several attempts: an acceptance run, with the long ones
@pytest.mark.long
def test_time_limit_requeue_resumes_to_the_uninterrupted_result(slurm_cluster, tiny_spec,
                                                                 tmp_path):
    # A job of 2 tasks (2 ranks, DDP) trains against a 2-minute limit: Slurm signals every
    # task (USR2) before the limit, submitit requeues the job from rank 0 alone (the other
    # ranks run no collective in their handler), and the next attempt resumes every rank from
    # the checkpoint. Rank 0's loader workers get the signal too: they must leave the requeue
    # to rank 0 (each would otherwise run submitit's handler, write the requeue pickle and
    # requeue).
    # Whether the limit falls inside training depends on the machine's speed (1500 steps once
    # fit in one attempt here, and the test then saw no resumed stage). So the first attempt
    # gets the limit's signal from the test, as Slurm sends it (`scancel --signal=USR2`: every
    # task of the step), as soon as the stage has a checkpoint before its end; submitit counts
    # it as the time limit (a 2-minute job has no guaranteed walltime). Later attempts meet
    # Slurm's own limit wherever training is slower than about 0.03 s a step (this machine:
    # 0.04). Slurm may send its signal up to a minute early (its event resolution), so a
    # 1-minute limit can kill a job before Python has installed submitit's handler. A slow
    # machine needs more attempts (each pays the start-up again), so the requeue budget is
    # generous: this checks resuming, not speed.
    spec_path = tiny_spec("requeue", "name: NAME\nbase: base.yaml\n", sft_steps=3500,
                          sft_batch=16)
    with open(spec_path.parent / "base.yaml", "a") as f:
        f.write("parallel: {loader_workers: 2}\n")
    key = load_spec(spec_path).runs[0].key
    short = _profile(tmp_path, "short", time_min=2, signal_delay_s=30, max_requeues=20,
                     tasks_per_node=2)
    long = _profile(tmp_path, "long", time_min=30, tasks_per_node=2)
    limited, straight = tmp_path / "limited", tmp_path / "straight"
    assert main(["run", str(spec_path), "--workdir", str(limited), "--executor", "slurm",
                 "--profile", str(short), "--no-follow"]) == 0
    assert main(["run", str(spec_path), "--workdir", str(straight), "--executor", "slurm",
                 "--profile", str(long), "--no-follow"]) == 0
    job = json.loads((limited / "runs" / key / "job.json").read_text())
    job_id = job["job_id"]
    deadline, released, signalled = time.monotonic() + 1800, 0, False
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"],
                               capture_output=True, text=True).stdout
        if _state(limited, key) == "DONE" and _state(straight, key) == "DONE" and not queue:
            break
        if not signalled and not released and _checkpointed_mid_stage(limited):
            subprocess.run(["scancel", "--signal=USR2", job_id])  # pending: no effect
            signalled = True
        if "BeginTime" in queue:  # Slurm holds a requeued job ~2 minutes; let it go now
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"],
                           check=True)
            released += 1
        time.sleep(0.5)
    for work in (limited, straight):
        status = _status(work, key)
        assert status["state"] == "DONE", (work.name, status, _log_tail(work, key))
    assert released >= 1, "the job was never requeued"
    rank0_log = Path(job["stderr"]).read_text(errors="replace")
    assert "this job is timed-out" in rank0_log   # submitit's time-limit path
    log = [json.loads(line) for line in
           next((limited / "stages").glob("sft-*/metrics.jsonl")).read_text().splitlines()]
    starts = [rec for rec in log if rec.get("event") == "start"]
    assert len(starts) >= 2 and starts[-1]["step"] > 0, starts   # resumed, not restarted
    assert {(rec["strategy"], rec["ranks"]) for rec in starts} == {("ddp", 2)}
    a = json.loads((straight / "runs" / key / "metrics.json").read_text())
    b = json.loads((limited / "runs" / key / "metrics.json").read_text())
    assert a == b
    runs = _mlflow(limited, "requeue")   # one MLflow run across the attempts
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["job_id"] == job_id


def test_profile_with_missing_partition_submits_nothing(slurm_cluster, tiny_spec, tmp_path,
                                                        capsys):
    spec_path = tiny_spec()
    profile = _profile(tmp_path, "bad", partition="a100")
    work = tmp_path / "work"
    assert main(["run", str(spec_path), "--workdir", str(work), "--executor", "slurm",
                 "--profile", str(profile)]) == 2
    err = capsys.readouterr().err
    assert f"{profile}:1: partition: the cluster has no partition 'a100'" in err
    assert "debug" in err
    assert not work.exists()
