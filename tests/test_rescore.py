"""Scoring finished runs again without training: a benchmark added to a finished spec only
evaluates (every stage is reused), and a change in a benchmark's scoring code re-scores the
stored predictions (nothing is built or generated), keeping the earlier scores."""
import dataclasses
import importlib
import json
import sys

import pytest

from harness.cli import main
from harness.evaluation import sharded
from harness.evaluation.benchmarks import BENCHMARKS
from harness.evaluation.generate import Prediction, score
from harness.evaluation.revision import scoring_revision
from harness.runs import pipeline, trainer
from harness.specs import load_spec
from tests.tiny import tiny_run_yaml

ONE_BENCHMARK = "benchmarks: [synth-color]"
TWO_BENCHMARKS = "benchmarks: [synth-color, synth-pope]"


def write_spec(folder, benchmarks: str = TWO_BENCHMARKS):
    folder.mkdir(exist_ok=True)
    base = tiny_run_yaml("again", sft_steps=3)
    (folder / "base.yaml").write_text(base.replace(TWO_BENCHMARKS, benchmarks))
    path = folder / "again.yaml"
    path.write_text("name: again\nbase: base.yaml\n")
    return path


def refuse(what):
    def call(*args, **kwargs):
        raise AssertionError(f"{what} was called")
    return call


def run_dir(work, spec_path):
    (run,) = load_spec(spec_path).runs
    return work / "runs" / run.key, run.config


def test_a_benchmark_added_to_a_finished_spec_only_evaluates(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path / "spec", ONE_BENCHMARK)
    work = tmp_path / "work"
    assert main(["run", str(spec), "--workdir", str(work), "--executor", "inline"]) == 0
    first, _ = run_dir(work, spec)
    stage_logs = {p: p.read_bytes() for p in (work / "stages").glob("*/metrics.jsonl")}
    weights = {p: p.stat().st_mtime_ns for p in (work / "stages").glob("*/weights.safetensors")}
    assert len(stage_logs) == len(weights) == 2   # align and sft, trained once

    write_spec(tmp_path / "spec", TWO_BENCHMARKS)   # the user adds a benchmark
    monkeypatch.setattr(trainer, "train_stage", refuse("train_stage"))
    capsys.readouterr()
    assert main(["run", str(spec), "--workdir", str(work), "--executor", "inline"]) == 0
    second, _ = run_dir(work, spec)
    assert second != first   # the eval is part of the run's key: a new run ...
    stages = json.loads((second / "stages.json").read_text())
    assert [s["reused"] for s in stages] == [True, True]   # ... whose every stage is reused
    assert {p: p.read_bytes() for p in (work / "stages").glob("*/metrics.jsonl")} == stage_logs
    assert {p: p.stat().st_mtime_ns
            for p in (work / "stages").glob("*/weights.safetensors")} == weights
    scores = json.loads((second / "scores.json").read_text())
    assert set(scores) == {"synth-color", "synth-pope"}
    # the same weights answer the first benchmark exactly as before
    answers = [(json.loads(line)["id"], json.loads(line)["prediction"])
               for line in (second / "predictions.jsonl").read_text().splitlines()
               if json.loads(line)["benchmark"] == "synth-color"]
    assert answers == [(json.loads(line)["id"], json.loads(line)["prediction"])
                       for line in (first / "predictions.jsonl").read_text().splitlines()]
    assert scores["synth-color"] == json.loads((first / "scores.json").read_text())[
        "synth-color"]


def make_stale(run):
    """The state an older scorer would have left: synth-color scored 0.9 under another
    revision; and two of its stored answers right, so today's scorer finds 2/3."""
    lines = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    right = 0
    for p in lines:
        if p["benchmark"] == "synth-color" and right < 2:
            p["prediction"], right = p["answers"][0], right + 1
    (run / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in lines))
    scores = json.loads((run / "scores.json").read_text())
    scores["synth-color"].update(value=0.9, revision="0ld")
    (run / "scores.json").write_text(json.dumps(scores))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["synth-color"]["accuracy"] = 0.9
    (run / "metrics.json").write_text(json.dumps(metrics))
    return lines


def fresh_scoring(lines, benchmark):
    preds = [Prediction(**p) for p in lines if p["benchmark"] == benchmark]
    return score(preds, {benchmark: [p.id for p in preds]})


def test_a_changed_scorer_rescores_the_stored_predictions(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path / "spec")
    work = tmp_path / "work"
    assert main(["run", str(spec), "--workdir", str(work), "--executor", "inline"]) == 0
    run, cfg = run_dir(work, spec)
    untouched = json.loads((run / "scores.json").read_text())["synth-pope"]
    lines = make_stale(run)
    # nothing may be built, trained or generated from here on
    for module, name in ((trainer, "build_model"), (trainer, "train_stage"),
                         (sharded, "generate"), (sharded, "choose_by_likelihood"),
                         (importlib.import_module("harness.evaluation.generate"), "generate")):
        monkeypatch.setattr(module, name, refuse(name))
    capsys.readouterr()

    assert main(["report", str(spec), "--workdir", str(work), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    protocol = BENCHMARKS.get("synth-color").protocol_name
    assert "scored again from their stored predictions" in out
    assert f"synth-color scored again from its predictions with '{protocol}'" in out
    assert "90.0% -> 66.7%" in out and "synth-pope scored again" not in out
    metrics, per_question = fresh_scoring(lines, "synth-color")
    assert metrics["synth-color"]["accuracy"] == pytest.approx(2 / 3)
    assert json.loads((run / "metrics.json").read_text())["synth-color"] == \
        metrics["synth-color"]
    assert json.loads((run / "per_question.json").read_text())["synth-color"] == \
        per_question["synth-color"]
    scores = json.loads((run / "scores.json").read_text())
    assert scores["synth-color"] == {"metric": "accuracy", "value": pytest.approx(2 / 3),
                                     "unit": "fraction", "protocol": protocol,
                                     "revision": BENCHMARKS.get("synth-color").revision}
    assert scores["synth-pope"] == untouched
    assert "| 66.7 |" in out   # the report shows the new number
    # the earlier scores are kept, and the run's log says what changed
    (kept,) = (run / "superseded").iterdir()
    assert json.loads((kept / "scores.json").read_text())["synth-color"]["value"] == 0.9
    assert json.loads((kept / "metrics.json").read_text())["synth-color"]["accuracy"] == 0.9
    (event,) = [e for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if e.get("event") == "rescore"]
    assert event["benchmarks"]["synth-color"]["before"]["revision"] == "0ld"
    assert event["kept"] == str(kept)
    # MLflow gets the new numbers at the next `ablate run`, which trains nothing
    tracking = json.loads((run / "tracking.json").read_text())
    assert [e["complete"] for e in tracking.values()] == [False]
    assert main(["run", str(spec), "--workdir", str(work), "--executor", "inline"]) == 0
    assert "1 done runs recorded in MLflow" in capsys.readouterr().out
    assert [e["complete"] for e in json.loads((run / "tracking.json").read_text()).values()] \
        == [True]
    # a report of current records scores nothing again
    main(["report", str(spec), "--workdir", str(work)])
    assert "scored again" not in capsys.readouterr().out

    # `ablate run` (the pipeline's finished run) re-scores a stale run the same way
    make_stale(run)
    result = pipeline.run(cfg, work, progress=False)
    assert result.scores["synth-color"] == pytest.approx(2 / 3)
    assert "synth-color scored again" in capsys.readouterr().out
    assert len(list((run / "superseded").iterdir())) == 2


def test_a_run_scored_before_revisions_is_scored_again_and_old_records_read(tmp_path,
                                                                           capsys):
    from analysis.records import run_dir_record
    from harness.evaluation.rescore import rescore_finished
    spec = write_spec(tmp_path / "spec", ONE_BENCHMARK)
    work = tmp_path / "work"
    assert main(["run", str(spec), "--workdir", str(work), "--executor", "inline"]) == 0
    run, _ = run_dir(work, spec)
    # a run from before protocols and revisions: its headline records lack both
    scores = json.loads((run / "scores.json").read_text())
    old = {b: {k: h[k] for k in ("metric", "value", "unit")} for b, h in scores.items()}
    (run / "scores.json").write_text(json.dumps(old))
    assert run_dir_record(run).headlines == {"synth-color": {"metric": "accuracy",
                                                             "unit": "fraction"}}
    done, problems = rescore_finished([run])
    assert problems == [] and [r.before["synth-color"].get("revision") for r in done] == [None]
    assert json.loads((run / "scores.json").read_text()) == scores   # same answers, same code

    # a run whose predictions are gone keeps its scores and says why
    (run / "scores.json").write_text(json.dumps(old))
    (run / "predictions.jsonl").unlink()
    done, problems = rescore_finished([run])
    assert done == [] and "predictions.jsonl: missing" in problems[0]
    assert json.loads((run / "scores.json").read_text()) == old


def test_revision_follows_the_scorer_and_the_scoring_modules_it_uses(tmp_path, monkeypatch):
    package = tmp_path / "fakescoring"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("def norm(text):\n    return text.lower()\n")
    (package / "other.py").write_text("def unused():\n    return 1\n")
    (package / "main.py").write_text(
        "from fakescoring.helpers import norm\n\n"
        "def scorer(preds, refs, meta=None):\n"
        "    return {}, [float(norm(p) == r[0]) for p, r in zip(preds, refs)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("fakescoring")]:
        monkeypatch.delitem(sys.modules, name)
    scorer = importlib.import_module("fakescoring.main").scorer
    record = BENCHMARKS.get("synth-color")

    def revision():
        return scoring_revision(record, scorer, package="fakescoring")
    first = revision()
    (package / "other.py").write_text("def unused():\n    return 2\n")
    assert revision() == first   # not used by this scorer
    (package / "helpers.py").write_text("def norm(text):\n    return text.strip()\n")
    assert revision() != first   # a helper it imports
    second = revision()
    assert scoring_revision(dataclasses.replace(record, protocol="stated"), scorer,
                            package="fakescoring") != second   # the record itself
    # the registered benchmarks: their real scorer module, and their record
    assert dataclasses.replace(record, protocol="stated").revision != record.revision
