"""Scoring finished runs again without training: a benchmark added to a finished spec only
evaluates (every stage is reused)."""
import json

from harness.cli import main
from harness.runs import pipeline
from harness.spec import load_spec
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
    weights = {p: p.stat().st_mtime_ns for p in (work / "stages").glob("*/weights.*")}
    assert len(stage_logs) == len(weights) == 2   # align and sft, trained once

    write_spec(tmp_path / "spec", TWO_BENCHMARKS)   # the user adds a benchmark
    monkeypatch.setattr(pipeline, "train_stage", refuse("train_stage"))
    capsys.readouterr()
    assert main(["run", str(spec), "--workdir", str(work), "--executor", "inline"]) == 0
    second, _ = run_dir(work, spec)
    assert second != first   # the eval is part of the run's key: a new run ...
    stages = json.loads((second / "stages.json").read_text())
    assert [s["reused"] for s in stages] == [True, True]   # ... whose every stage is reused
    assert {p: p.read_bytes() for p in (work / "stages").glob("*/metrics.jsonl")} == stage_logs
    assert {p: p.stat().st_mtime_ns for p in (work / "stages").glob("*/weights.*")} == weights
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
