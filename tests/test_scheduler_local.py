"""`ablate run` on the local executor, end to end: a grid trained by submitit jobs with
bounded parallelism, every run recorded in MLflow, shared stages trained once, a second run
of the spec submitting nothing, and a job killed with SIGKILL resuming to the same result."""
import json
import os
import signal
import time

import pandas as pd
import pytest

from harness.cli import main
from harness.specs import load_spec


def mlflow_runs(workdir, experiment):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id])


def test_grid_on_local_executor_records_everything_and_reruns_for_free(tiny_spec, tmp_path,
                                                                        capsys):
    spec_path = tiny_spec()
    work = tmp_path / "work"
    assert main(["plan", str(spec_path), "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert out.count("align (shared)") == 2 and out.count(" NEW ") == 4
    assert "4 runs: 0 done, 4 to run; 8 stages in those runs, 6 to train" in out
    assert not work.exists()  # planning writes nothing
    assert main(["run", str(spec_path), "--workdir", str(work), "--max-parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "submitting 4 (local, at most 2 at a time)" in out
    spec = load_spec(spec_path)
    for run in spec.runs:
        d = work / "runs" / run.key
        assert json.loads((d / "status.json").read_text())["state"] == "DONE"
        job = json.loads((d / "job.json").read_text())
        assert job["executor"] == "local" and job["job_id"] and os.path.exists(job["stdout"])

    client, runs = mlflow_runs(work, "tiny_grid")
    assert len(runs) == 4
    by_key = {r.data.tags["run_key"]: r for r in runs}
    assert set(by_key) == {r.key for r in spec.runs}
    for run in spec.runs:
        rec = by_key[run.key]
        assert rec.info.status == "FINISHED"
        assert rec.data.tags["axis.sft_lr"] == run.labels["sft_lr"]
        assert rec.data.tags["job_id"] == json.loads(
            (work / "runs" / run.key / "job.json").read_text())["job_id"]
        assert rec.data.params["stages.1.lr"] == str(run.config.stages[1].lr)
        assert {"synth-color/accuracy", "synth-pope/f1", "average/headline",
                "cost/forward_flops_per_sample", "cost/visual_tokens"} <= set(rec.data.metrics)
        assert len(client.get_metric_history(rec.info.run_id, "train/sft/loss")) == 5
        assert {a.path for a in client.list_artifacts(rec.info.run_id)} >= {
            "config.yaml", "predictions.jsonl", "metrics.json", "cost.json"}

    # two runs that differ only in fine-tuning trained their alignment stage once
    aligns = {}
    for rec in runs:
        aligns.setdefault(rec.data.tags["stage.align.key"], []).append(rec)
    assert len(aligns) == 2 and len(list((work / "stages").glob("align-*"))) == 2
    for pair in aligns.values():
        assert sorted(r.data.tags["stage.align.reused"] for r in pair) == ["false", "true"]
        trainer = next(r for r in pair if r.data.tags["stage.align.reused"] == "false")
        assert {r.data.tags["stage.align.trained_by"] for r in pair} == {
            trainer.data.tags["run_key"]}

    # a second run of the spec submits nothing and returns quickly
    started = time.monotonic()
    assert main(["run", str(spec_path), "--workdir", str(work)]) == 0
    assert time.monotonic() - started < 10
    out = capsys.readouterr().out
    assert "submitting 0" in out and "4 already done" in out
    _, again = mlflow_runs(work, "tiny_grid")
    assert len(again) == 4
    assert main(["plan", str(spec_path), "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert out.count("DONE (avg") == 4 and "4 runs: 4 done, 0 to run" in out

    # the report reads the same records from MLflow as from the run directories: the two
    # seeds of each learning rate are one row, with the spread and the paired interval
    from analysis.report import read_records
    from analysis.report_manifest import read_manifest
    manifest = read_manifest(work, spec.name)       # written by the submission
    dirs, store = read_records(manifest, work), read_records(manifest, work, "mlflow")
    a, b = dirs.runs, store.runs
    assert len(dirs.questions) == 4 * 6 and (a["state"] == "DONE").all()
    pd.testing.assert_frame_equal(a[sorted(a.columns)], b[sorted(b.columns)])
    assert main(["report", str(spec_path), "--workdir", str(work), "--source", "mlflow",
                 "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "change low" in out   # the CSV header of the ablation table
    assert (work / "reports" / "tiny_grid" / "ablation.csv").exists()


def test_a_failing_run_reports_its_reason_and_log(tiny_spec, tmp_path, capsys):
    # an image that does not decode: found when the job trains (a missing one is named
    # earlier, at validation, and nothing is submitted)
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    (data / "img" / "broken.png").write_bytes(b"not a png")
    record = {"id": "r0", "image": "broken.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red"}]}
    (data / "bad.json").write_text(json.dumps([record]))
    body = f"""\
name: NAME
base: base.yaml
variants:
  - name: real-data
    set:
      data.synthetic: null
      data.align: {{json: {data}/bad.json, images: {data}/img}}
      data.sft: {{json: {data}/bad.json, images: {data}/img}}
      data.eval: {{json: {data}/bad.json, images: {data}/img}}
"""
    spec_path = tiny_spec("failing", body)
    work = tmp_path / "work"
    assert main(["run", str(spec_path), "--workdir", str(work)]) == 1
    capsys.readouterr()
    assert main(["status", str(spec_path), "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert "FAILED" in out and "broken.png" in out
    log = out.split("log: ")[1].split()[0]
    assert "broken.png" in open(log).read()   # the job's own log holds the traceback
    _, runs = mlflow_runs(work, "failing")
    assert runs[0].info.status == "FAILED" and "broken.png" in runs[0].data.tags["reason"]


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _sft_step(work):
    logs = list((work / "stages").glob("sft-*/metrics.jsonl"))
    if not logs:
        return 0
    steps = [json.loads(line).get("step", 0) for line in logs[0].read_text().splitlines()]
    return max(steps, default=0)


@pytest.mark.long   # 60 s; an interrupted run resuming exactly is in test_pipeline
def test_sigkilled_job_resumes_to_the_uninterrupted_result(tiny_spec, tmp_path, capsys):
    body = "name: NAME\nbase: base.yaml\n"
    spec_path = tiny_spec("killed", body, sft_steps=150, sft_batch=8)
    key = load_spec(spec_path).runs[0].key
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(["run", str(spec_path), "--workdir", str(straight)]) == 0

    assert main(["run", str(spec_path), "--workdir", str(killed), "--no-follow"]) == 0
    _wait(lambda: _sft_step(killed) >= 60, 240, "sft step 60")
    status = json.loads((killed / "runs" / key / "status.json").read_text())
    os.kill(status["pid"], signal.SIGKILL)
    capsys.readouterr()
    _wait(lambda: main(["status", str(spec_path), "--workdir", str(killed)]) == 0
          and "LOST" in capsys.readouterr().out, 60, "the run to show as LOST")

    assert main(["run", str(spec_path), "--workdir", str(killed)]) == 0
    assert "submitting 1" in capsys.readouterr().out
    a = json.loads((straight / "runs" / key / "metrics.json").read_text())
    b = json.loads((killed / "runs" / key / "metrics.json").read_text())
    assert a == b
    assert (straight / "runs" / key / "predictions.jsonl").read_text() == \
        (killed / "runs" / key / "predictions.jsonl").read_text()
    # the second attempt resumed from the checkpoint instead of starting over
    log = [json.loads(line) for line in
           next((killed / "stages").glob("sft-*/metrics.jsonl")).read_text().splitlines()]
    starts = [rec["step"] for rec in log if rec.get("event") == "start"]
    assert starts[-1] >= 50
    # the final losses are identical too
    log_a = [json.loads(line) for line in next((straight / "stages").glob(
        "sft-*/metrics.jsonl")).read_text().splitlines()]
    assert [r["loss"] for r in log_a if "loss" in r][-1] == \
        [r["loss"] for r in log if "loss" in r][-1]


BAD_RUNS = [
    ("axes: {x: {path: model.fusion, values: {a: {id: channel_concatt}}}}", "model.fusion.id"),
    ("axes: {x: {path: \"model.experts[sam].id\", values: [samm]}}", "model.experts[1].id"),
    ("axes: {x: {path: \"stages[sft].lr\", values: [fast]}}", "stages[1].lr"),
    ("axes: {x: {path: model.dropout, values: [0.1]}}", "model.dropout"),
    ("axes:\n  a: {path: seed, values: [1]}\n  b: {path: seed, values: [2]}", "conflicting"),
    ("axes: {a: {path: seed, values: [1]}}\nexclude: [{a: 1}]", "grid is empty"),
    ("axes: {a: {path: seed, values: [1]}}\nexclude: [{b: 1}]", "unknown axis 'b'"),
    ("axes: {a: {path: seed, values: [1]}\n", "malformed YAML"),
    ("axis: {a: {path: seed, values: [1]}}", "unknown field (did you mean 'axes'?)"),
]


@pytest.mark.parametrize("body,message", BAD_RUNS)
def test_bad_input_submits_nothing_and_writes_no_records(tiny_spec, tmp_path, capsys, body,
                                                         message):
    spec_path = tiny_spec("bad", "name: NAME\nbase: base.yaml\n" + body + "\n")
    work = tmp_path / "work"
    assert main(["run", str(spec_path), "--workdir", str(work)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert not work.exists()


def test_unreachable_tracking_uri_submits_nothing(tiny_spec, tmp_path, capsys):
    spec_path = tiny_spec()
    work = tmp_path / "work"
    assert main(["run", str(spec_path), "--workdir", str(work),
                 "--tracking-uri", "http://127.0.0.1:9"]) == 2
    assert "cannot reach the MLflow server" in capsys.readouterr().err
    assert not work.exists()
