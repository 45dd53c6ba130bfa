"""Tracking at scale: a real `mlflow server` on loopback and several concurrent jobs logging
to it; every run and every metric arrives."""
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness.cli import main
from harness.specs import load_spec
from harness.training.launch import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
         "--port", str(port), "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((tmp_path / "server.log").read_text()[-2000:])
        time.sleep(0.5)
    yield uri
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.mark.long   # 60 s with the server's start
def test_concurrent_jobs_against_a_shared_server(mlflow_server, tiny_spec, tmp_path, capsys):
    body = """\
name: NAME
base: base.yaml
axes:
  sft_lr: {path: "stages[sft].lr", values: [1.0e-3, 3.0e-4, 1.0e-4]}
  seed: {path: seed, values: [3, 4]}
"""
    spec_path = tiny_spec("served", body, sft_steps=12)
    work = tmp_path / "work"
    assert main(["run", str(spec_path), "--workdir", str(work), "--max-parallel", "6",
                 "--tracking-uri", mlflow_server]) == 0
    assert not (work / "mlflow.db").exists()   # everything went to the server

    from mlflow.tracking import MlflowClient
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("served")
    runs = client.search_runs([exp.experiment_id])
    spec = load_spec(spec_path)
    assert sorted(r.data.tags["run_key"] for r in runs) == sorted(r.key for r in spec.runs)
    for rec in runs:
        assert rec.info.status == "FINISHED"
        run_dir = work / "runs" / rec.data.tags["run_key"]
        tracking = json.loads((run_dir / "tracking.json").read_text())[mlflow_server]
        assert tracking["complete"] and tracking["run_id"] == rec.info.run_id
        logged = sum(len(client.get_metric_history(rec.info.run_id, k))
                     for k in rec.data.metrics)
        assert logged == tracking["metrics"]       # every metric the job sent arrived
        for stage, steps in (("align", 4), ("sft", 12)):
            history = client.get_metric_history(rec.info.run_id, f"train/{stage}/loss")
            assert sorted(m.step for m in history) == list(range(1, steps + 1))
        scores = json.loads((run_dir / "metrics.json").read_text())
        assert rec.data.metrics["synth-color/accuracy"] == scores["synth-color"]["accuracy"]
        assert "predictions.jsonl" in {a.path for a in client.list_artifacts(rec.info.run_id)}
