"""A job outlives its tracker: with the MLflow store unreachable for the whole run, the run
still trains, evaluates and is DONE (the run directory is the record), the failures are kept
in its tracking.log and named by `ablate status`, and the next `ablate run` back-fills MLflow
without training again. And a log nobody watches hears from a running run: the heartbeat line
(step, loss, pace, ETA) read from the stage's metrics."""
import io
import json

from harness.cli import main
from harness.runs import trainer
from harness.runs.rundir import RunDir
from harness.scheduler import states
from harness.specs import load_spec
from harness.tracking import mirror, store
from tests.tiny import tiny_run_yaml


def refuse(what):
    def call(*args, **kwargs):
        raise AssertionError(f"{what} was called")
    return call


def test_a_run_finishes_with_its_tracker_down_and_is_back_filled(tmp_path, monkeypatch,
                                                                  capsys):
    folder = tmp_path / "spec"
    folder.mkdir()
    (folder / "base.yaml").write_text(tiny_run_yaml("offline", sft_steps=3))
    spec = folder / "offline.yaml"
    spec.write_text("name: offline\nbase: base.yaml\n")
    work = tmp_path / "work"

    def down(uri):   # what an unreachable `mlflow server` gives after the client's retries
        raise ConnectionError(f"connection refused: {uri}")
    # the job's store is down; `ablate run` itself could reach it when it submitted
    monkeypatch.setattr(mirror, "open_store", down)
    monkeypatch.setattr(mirror, "retry", lambda fn: store.retry(fn, budget_s=0.3))
    assert main(["run", str(spec), "--workdir", str(work), "--executor", "inline"]) == 0
    (run,) = load_spec(spec).runs
    run_dir = RunDir(work / "runs" / run.key)
    assert run_dir.status()["state"] == "DONE"
    failures = run_dir.tracking_failures()
    assert [f.split()[1] for f in failures] == ["started:", "finished:"]
    assert "connection refused" in failures[-1]
    capsys.readouterr()
    assert main(["status", str(spec), "--workdir", str(work)]) == 0
    assert "not in MLflow yet: 2 tracking call(s) failed" in capsys.readouterr().out

    monkeypatch.undo()   # the tracker is back
    monkeypatch.setattr(trainer, "train_stage", refuse("train_stage"))
    assert main(["run", str(spec), "--workdir", str(work), "--executor", "inline"]) == 0
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    (logged,) = client.search_runs([client.get_experiment_by_name("offline").experiment_id])
    assert logged.info.status == "FINISHED" and logged.data.tags["run_key"] == run.key
    scores = json.loads((run_dir.path / "scores.json").read_text())
    assert scores and all(f"{b}" in " ".join(logged.data.metrics) for b in scores)
    capsys.readouterr()
    assert main(["status", str(spec), "--workdir", str(work)]) == 0
    assert "not in MLflow yet" not in capsys.readouterr().out


def test_heartbeat_reads_step_loss_pace_and_eta(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    lines = [{"event": "start", "step": 0, "total": 1000}]
    lines += [{"step": s, "loss": 2.0 - s / 100, "lr": 1e-3, "step_time": 3.0}
              for s in range(1, 101)]
    lines.append({"event": "checkpoint", "step": 100, "reason": "interval"})
    (stage / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    line = states.heartbeat({"stage": "sft", "stage_dir": str(stage)})
    assert line == "sft step 100/1000, loss 1, 3.00 s/step, ETA 0h45m"
    assert states.heartbeat({"stage": "sft"}) == "preparing"


def test_follow_prints_a_heartbeat_into_a_log(tmp_path, monkeypatch):
    """Not on a terminal, a running run's line is printed again every heartbeat, not only
    when its state changes."""
    folder = tmp_path / "spec"
    folder.mkdir()
    (folder / "base.yaml").write_text(tiny_run_yaml("beat", sft_steps=3))
    spec_path = folder / "beat.yaml"
    spec_path.write_text("name: beat\nbase: base.yaml\n")
    spec = load_spec(spec_path)
    (run,) = spec.runs
    polls = iter(["RUNNING"] * 4 + ["DONE"])

    def view(spec, workdir, **options):
        state = next(polls)
        rd = RunDir(tmp_path / "runs" / run.key)
        return [states.RunView(run, rd, state, "sft 5/10" if state == "RUNNING" else "")]
    monkeypatch.setattr(states, "view_spec", view)
    monkeypatch.setattr(states, "heartbeat", lambda status: "sft step 5/10, loss 0.5")
    log = io.StringIO()
    states.follow(spec, tmp_path, interval_s=0.0, stream=log, heartbeat_s=0.0)
    lines = log.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "beat: RUNNING sft 5/10"] + ["beat: RUNNING sft step 5/10, loss 0.5"] * 3 + [
        "beat: DONE"]
