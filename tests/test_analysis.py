"""Records -> tables: a table built from hand-made records equals the expected frame cell for
cell (means and spreads over seeds, changes, the paired bootstrap interval on a case worked
out by hand); MLflow and the run directories give the same records; reports of specs with
failed or unrun runs say so and still render; reference tables mark approximate values and
reject bad mappings before anything runs; the greedy tables and every output format."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.lineage import lineage_table, round_tables
from analysis.records import from_mlflow, from_run_dirs, restore
from analysis.reference import ReferenceTable
from analysis.render import FORMATS, render
from analysis.report import build_report
from analysis.stats import paired_bootstrap
from analysis.tables import ablation_tables, protocol_notes
from core.errors import ConfigError
from harness.cli import main, report_manifest
from harness.evaluation.benchmarks import BENCHMARKS
from harness.evaluation.scores import headlines
from harness.specs import load_spec
from harness.specs.experiment_manifest import experiment_manifest

HAND = """\
name: hand
base: base.yaml
axes:
  lr: {path: "stages[sft].lr", values: [1.0e-3, 3.0e-4, 1.0e-4]}
  seed: {path: seed, values: [1, 2]}
report:
  baseline: 0.001
  benchmarks: [synth-color, synth-pope]
"""

# per-question scores of each (lr label, seed): color has 3 questions, pope 2
SCORES = {
    ("0.001", 1): {"synth-color": [1, 0, 0], "synth-pope": [1, 0]},
    ("0.001", 2): {"synth-color": [1, 0, 1], "synth-pope": [1, 1]},
    ("0.0003", 1): {"synth-color": [1, 1, 0], "synth-pope": [1, 0]},
    ("0.0003", 2): {"synth-color": [1, 1, 1], "synth-pope": [1, 1]},
}
SPEED = {("0.001", 1): 50.0, ("0.001", 2): 50.0, ("0.0003", 1): 50.0, ("0.0003", 2): 70.0}


def write_run(work, run, state, scores=None, speed=50.0, reason=None):
    d = work / "runs" / run.key
    d.mkdir(parents=True)
    status = {"state": state, "name": run.name, **({"reason": reason} if reason else {})}
    (d / "status.json").write_text(json.dumps(status))
    (d / "config.json").write_text(json.dumps(run.config.to_dict()))
    if state != "DONE":
        return d
    metrics = {b: {"accuracy": sum(s) / len(s)} for b, s in scores.items()}
    metrics["synth-pope"].update(f1=0.5, yes_ratio=0.5)
    (d / "metrics.json").write_text(json.dumps(metrics))
    # as today's scorers record them (protocol, revision), so a report scores nothing again
    (d / "scores.json").write_text(json.dumps(headlines(metrics)))
    (d / "per_question.json").write_text(json.dumps(scores))
    with open(d / "predictions.jsonl", "w") as f:
        for b, s in scores.items():
            for i in range(len(s)):
                f.write(json.dumps({"id": f"{b}-q{i}", "benchmark": b, "question": "?",
                                    "prediction": "x", "answers": ["x"]}) + "\n")
    (d / "cost.json").write_text(json.dumps({
        "parameters": {"llm": {"total": 1_000_000, "trainable": 500_000},
                       "projector": {"total": 200_000, "trainable": 200_000}},
        "visual_tokens": 64, "fusion_channels": 32, "fusion_added_parameters": 0,
        "forward_flops_per_sample": 2e9, "step_time_s": {"align": 0.1, "sft": 0.2},
        "train_samples_per_s": {"align": 100.0, "sft": speed}, "peak_memory_mb": 1000.0,
        "wall_time_s": 60.0}))
    (d / "stages.json").write_text("[]")
    return d


@pytest.fixture
def hand_records(tiny_spec, tmp_path):
    """Four finished runs (two arms x two seeds), one failed run, one never run."""
    path = tiny_spec("hand", HAND)
    spec = load_spec(path)
    work = tmp_path / "work"
    for run in spec.runs:
        key = (run.labels["lr"], int(run.labels["seed"]))
        if key in SCORES:
            write_run(work, run, "DONE", SCORES[key], SPEED[key])
        elif key[1] == 1:
            write_run(work, run, "FAILED", reason="Traceback ...\nRuntimeError: boom")
    return path, spec, work


def test_bootstrap_on_cases_worked_by_hand():
    # every question improves by the same amount: the interval has no width
    iv = paired_bootstrap({"a": np.full(7, 2.5)})
    assert (iv.estimate, iv.low, iv.high) == (2.5, 2.5, 2.5)
    # differences (0, 100, 0): the resampled mean is 0 w.p. 8/27, 100/3 w.p. 12/27, 200/3
    # w.p. 6/27 and 100 w.p. 1/27 > 2.5%, so the 95% interval is [0, 100]
    iv = paired_bootstrap({"a": np.array([0.0, 100.0, 0.0])})
    assert iv.estimate == pytest.approx(100 / 3) and (iv.low, iv.high) == (0.0, 100.0)
    # a second benchmark with no change halves the statistic (the mean over benchmarks)
    iv = paired_bootstrap({"a": np.array([0.0, 100.0, 0.0]), "b": np.zeros(2)})
    assert iv.estimate == pytest.approx(50 / 3) and (iv.low, iv.high) == (0.0, 50.0)
    # the same records give the same interval
    d = {"a": np.random.default_rng(1).normal(size=40)}
    assert paired_bootstrap(d) == paired_bootstrap(d)


def test_hand_made_records_give_the_expected_table_cell_for_cell(hand_records):
    _, spec, work = hand_records
    records = from_run_dirs(experiment_manifest(spec).runs, work)
    runs = records.runs
    # one row per run, types restored
    assert list(runs["state"]) == ["DONE", "DONE", "DONE", "DONE", "FAILED", "NEW"]
    assert runs["lr"].tolist() == [1e-3, 1e-3, 3e-4, 3e-4, 1e-4, 1e-4]
    assert runs["seed"].tolist()[:5] == [1, 2, 1, 2, 1] and math.isnan(runs["seed"].iloc[5])
    assert runs["param/stages.1.lr"].iloc[2] == 3e-4
    assert runs["param/model.experts.0.freeze"].iloc[0] is False
    assert runs["param/model.experts.0.id"].iloc[0] == "clip-vit"
    assert runs["synth-color/accuracy"].iloc[1] == pytest.approx(2 / 3)
    assert runs["cost/params_total"].iloc[0] == 1_200_000
    assert runs["cost/train_samples_per_s"].iloc[3] == 70.0   # the last stage's
    assert len(records.questions) == 4 * 5

    ablation, deltas = ablation_tables(records, spec.report, "hand")[:2]
    # how each headline was computed, under the table
    for bench in ("synth-color", "synth-pope"):
        assert f"Protocol, {bench}: {BENCHMARKS.get(bench).protocol_name}." in ablation.notes
    records.protocols["synth-pope"] = {"official": 3, "": 1}   # runs scored by other code
    assert protocol_notes(records, ["synth-pope"]) == [
        "Protocol, synth-pope: its runs were scored under 2 protocols, so its numbers are not "
        "comparable: official (3 runs); not recorded (scored before runs recorded their "
        "protocol) (1 run)."]
    s = math.sqrt(2) * 100 / 6        # sd of two values 100/6 either side of the mean
    nan = math.nan
    expected = pd.DataFrame({
        "synth-color": [50.0, 250 / 3, nan], "synth-color sd": [s, s, nan],
        "synth-pope": [75.0, 75.0, nan], "synth-pope sd": [math.sqrt(2) * 25] * 2 + [nan],
        # per-seed averages: (100/3 + 50)/2, (200/3 + 100)/2 = 125/3, 250/3 for the baseline;
        # (200/3 + 50)/2, 100 = 175/3, 100 for lr 3e-4
        "avg": [62.5, 475 / 6, nan], "avg sd": [math.sqrt(2) * 125 / 6] * 2 + [nan],
        "change": [0.0, 100 / 6, nan],
        # color differences per question (seed means): (0, 100, 0); pope: (0, 0); the
        # statistic is half the color mean: 0 w.p. 8/27, ..., 50 w.p. 1/27 > 2.5%
        "change low": [nan, 0.0, nan], "change high": [nan, 50.0, nan],
        "runs": [2, 2, 0],
        "visual tokens": [64.0, 64.0, nan], "params (M)": [1.2, 1.2, nan],
        "trainable (M)": [0.7, 0.7, nan], "GFLOPs/sample": [2.0, 2.0, nan],
        "train samples/s": [50.0, 60.0, nan],
    }, index=pd.Index(["0.001", "0.0003", "0.0001"], name="lr"))
    pd.testing.assert_frame_equal(ablation.frame, expected, rtol=1e-12)
    assert ablation.cells.loc["0.001", "change"] == "baseline"
    assert ablation.cells.loc["0.0003", "change"] == "+16.7 [+0.0, +50.0]"
    assert ablation.cells.loc["0.0003", "synth-color"] == "83.3 ± 23.6"
    assert ablation.cells.loc["0.0001", "runs"] == "0/2 (1 failed, 1 not run)"
    assert ablation.cells.loc["0.0001", "avg"] == "-"
    assert any("Only 4 of 6 runs have finished: 1 failed, 1 not run yet" in n
               for n in ablation.notes)
    assert any(n.startswith("FAILED: hand[lr=0.0001,seed=1]") and n.endswith("boom")
               for n in ablation.notes)

    expected_deltas = pd.DataFrame({
        "synth-color": [100 / 3, nan], "synth-color low": [0.0, nan],
        "synth-color high": [100.0, nan],
        "synth-pope": [0.0, nan], "synth-pope low": [0.0, nan], "synth-pope high": [0.0, nan],
    }, index=pd.Index(["0.0003", "0.0001"], name="lr"))
    pd.testing.assert_frame_equal(deltas.frame, expected_deltas, rtol=1e-12)


def test_report_of_a_spec_with_failed_and_unrun_runs_says_so_and_renders(hand_records,
                                                                         tmp_path, capsys):
    path, _, work = hand_records
    out_dir = tmp_path / "report"
    assert main(["report", str(path), "--workdir", str(work), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "6 runs: 4 finished, 1 failed, 1 not run" in out
    assert "Only 4 of 6 runs have finished" in out and "RuntimeError: boom" in out
    assert "+16.7 [+0.0, +50.0]" in out
    for table in ("ablation", "deltas"):
        for suffix in ("txt", "md", "tex", "csv", "html"):
            assert (out_dir / f"{table}.{suffix}").stat().st_size > 0
    for fig in ("benchmarks", "accuracy_vs_cost"):
        assert (out_dir / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out_dir / f"{fig}.pdf").read_bytes()[:4] == b"%PDF"
    tex = (out_dir / "ablation.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"$\pm$" in tex
    assert "synth-color" in tex and r"hand" in tex
    back = pd.read_csv(out_dir / "ablation.csv", index_col=0)
    assert back.loc[0.0003, "change"] == pytest.approx(100 / 6)
    assert "<table" in (out_dir / "ablation.html").read_text()
    md = (out_dir / "ablation.md").read_text()
    assert md.startswith("### hand") and "| lr |" in md
    assert (out_dir / "records.csv").exists()

    for fmt in FORMATS:   # every format prints
        assert main(["report", str(path), "--workdir", str(work), "--out", str(out_dir),
                     "--format", fmt]) == 0
        assert "0.0003" in capsys.readouterr().out


def test_report_with_no_finished_run_says_so(tiny_spec, tmp_path, capsys):
    path = tiny_spec("hand", HAND)
    work = tmp_path / "empty"
    assert main(["report", str(path), "--workdir", str(work), "--out",
                 str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "No run has finished: 6 not run yet" in out
    assert "nothing to plot yet" in out
    assert not list((tmp_path / "r").glob("*.png"))
    assert (tmp_path / "r" / "ablation.md").exists()

    # two axes tell arms apart: the table's rows are indexed by both
    path = tiny_spec("two_axes", HAND.replace(
        "  seed: {path: seed, values: [1, 2]}", "  steps: {path: \"stages[sft].steps\", "
        "values: [5, 6]}").replace("baseline: 0.001", "baseline: {lr: 0.001, steps: 6}"))
    spec = load_spec(path)
    assert spec.report.baseline == "lr=0.001,steps=6"
    table = build_report(report_manifest(path, work), work).tables[0]
    assert table.frame.index.names == ["lr", "steps"]
    assert table.cells.loc[("0.001", "6"), "change"] == "baseline"


def test_mlflow_and_run_directories_give_the_same_records(hand_records, tmp_path):
    from harness.runs.rundir import RunDir
    from harness.tracking.mirror import MlflowMirror
    from harness.tracking.store import open_store
    _, spec, work = hand_records
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = open_store(uri).experiment(spec.name, tmp_path / "artifacts")
    for run in spec.runs:
        run_dir = RunDir(work / "runs" / run.key)
        state = run_dir.status()["state"]
        mirror = MlflowMirror(uri, experiment, {"spec": spec.name})
        if state == "DONE":
            mirror.finished(run.config, run_dir)
        elif state == "FAILED":
            mirror.stopped(run.config, run_dir, "FAILED", run_dir.status()["reason"])
    from_dirs = from_run_dirs(experiment_manifest(spec).runs, work)
    from_store = from_mlflow(experiment_manifest(spec).runs, uri, spec.name)
    a, b = from_dirs.runs, from_store.runs
    pd.testing.assert_frame_equal(a[sorted(a.columns)], b[sorted(b.columns)])
    order = ["key", "benchmark", "question"]
    pd.testing.assert_frame_equal(
        from_dirs.questions.sort_values(order).reset_index(drop=True),
        from_store.questions.sort_values(order).reset_index(drop=True))


def test_restore_brings_back_types():
    assert [restore(t) for t in ["True", "False", "None", "3", "-2", "0.001", "1e-05",
                                 "clip-vit", "[1, 2]"]] == \
        [True, False, None, 3, -2, 0.001, 1e-05, "clip-vit", "[1, 2]"]


REF_SPEC = """\
name: with_paper
base: base.yaml
variants:
  - {name: small, set: {"stages[sft].lr": 1.0e-4}}
  - {name: large, set: {"stages[sft].lr": 1.0e-3}}
report:
  reference:
    table: paper.csv
    rows: {small: A, large: {method: B, layers: "1,2"}}
    columns: {Acc: synth-color, Avg: null}
"""
PAPER = """\
# source: A Paper (arXiv 0000.00000), Table 2.
method,layers,Acc,Avg
A,1,61.5,~500
B,"1,2",62.5,510
"""


def test_reference_table_printed_beside_ours_with_approximate_marked(tiny_spec, tmp_path):
    path = tiny_spec("with_paper", REF_SPEC)
    (path.parent / "paper.csv").write_text(PAPER)
    spec = load_spec(path)
    ref = spec.report.reference
    assert ref.rows == {"small": 0, "large": 1}
    assert ref.columns == [("Acc", "synth-color"), ("Avg", None)]
    work = tmp_path / "w"
    for run, scores in zip(spec.runs, ([1, 0, 0], [1, 1, 0])):
        write_run(work, run, "DONE", {"synth-color": scores, "synth-pope": [1, 0]})
    report = build_report(report_manifest(path, work), work)
    table = report.tables[0]
    assert table.frame.loc["large", "synth-color (paper)"] == 62.5
    assert table.cells.loc["small", "paper Avg"] == "≈500"     # the cell says ~
    assert table.cells.loc["large", "paper Avg"] == "510"
    columns = list(table.cells.columns)
    assert columns.index("synth-color (paper)") == columns.index("synth-color") + 1
    assert any("A Paper (arXiv 0000.00000), Table 2." in n for n in table.notes)
    assert any(n.startswith("Paper's evaluation: not stated") for n in table.notes)
    assert any(n.startswith("≈: approximate") for n in table.notes)

    # a source line saying "approximate" marks every number
    (path.parent / "paper.csv").write_text(PAPER.replace("Table 2.", "Figure 3, approximate."))
    table = build_report(report_manifest(path, work), work).tables[0]
    assert table.cells.loc["large", "paper Avg"] == "≈510"
    assert "$\\approx$510" in render(table, "latex")

    # a toolkit line says which evaluation produced the paper's numbers
    (path.parent / "paper.csv").write_text(PAPER.replace("method,", "# toolkit: lmms-eval\n"
                                                                    "method,"))
    table = build_report(report_manifest(path, work), work).tables[0]
    assert "Paper's evaluation: lmms-eval." in table.notes
    assert table.frame.loc["large", "synth-color (paper)"] == 62.5


@pytest.mark.parametrize("old, new, field, message", [
    ("small: A,", "tiny: A,", "report.reference.rows.tiny", "no arm 'tiny'"),
    ('layers: "1,2"', 'layers: "1,3"', "report.reference.rows.large", "0 rows of paper.csv"),
    ("Acc: synth-color", "Acc: synth-colour", "report.reference.columns.Acc",
     "not a benchmark"),
    ("Avg: null", "method: null", "report.reference.columns.method", "no numeric column"),
    ("table: paper.csv", "table: nope.csv", "report.reference.table",
     "reference table not found"),
    ("report:\n", "report:\n  baseline: medium\n", "report.baseline", "no arm 'medium'"),
    ("# source: ", "# from: ", None, "must state its source"),
    ("method,", "# toolkit: a\n# toolkit: b\nmethod,", None, "states its toolkit once"),
    ("method,", "# toolkit:\nmethod,", None, "'# toolkit:' is empty"),
])
def test_bad_report_section_is_a_clear_error_before_anything_runs(
        tiny_spec, tmp_path, capsys, old, new, field, message):
    body, paper = REF_SPEC, PAPER
    if old in body:
        body = body.replace(old, new)
    else:
        paper = paper.replace(old, new)
    path = tiny_spec("with_paper", body)
    (path.parent / "paper.csv").write_text(paper)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    text = str(err.value)
    assert message in text
    if field:
        assert field in text and "with_paper.yaml" in text
    else:
        assert "paper.csv" in text
    work = tmp_path / "work"
    assert main(["run", str(path), "--workdir", str(work)]) == 2
    assert message in capsys.readouterr().err
    assert not work.exists()


def test_reference_tables_in_experiments_state_their_source():
    from pathlib import Path
    folder = Path(__file__).resolve().parent.parent / "experiments" / "reference"
    files = sorted(folder.glob("*.csv"))
    assert len(files) >= 9
    for f in files:
        table = ReferenceTable.load(f)
        assert table.source and table.rows and table.numeric_columns(), f
    assert ReferenceTable.load(folder / "eagle_ablation_averages.csv").approximate
    assert "lmms-eval" in ReferenceTable.load(folder / "eagle_final_models.csv").toolkit
    assert not ReferenceTable.load(folder / "mova_table8_num_experts.csv").approximate


ROUNDS = [
    {"round": 1, "current": {"experts": ["a"], "added": None, "mean": 20.0, "std": 0.0,
                             "benchmarks": {"x": 20.0}, "runs": [{}], "tuning": None},
     "candidates": [
         {"experts": ["a", "b"], "added": "b", "mean": 50.0, "std": 2.0,
          "benchmarks": {"x": 50.0}, "runs": [{}, {}], "tuning": None},
         {"experts": ["a", "c"], "added": "c", "mean": 30.0, "std": 1.0,
          "benchmarks": {"x": 30.0}, "runs": [{}, {}], "tuning": None}],
     "chosen": "b", "decision": "added b: objective 50.00, +30.00 over 20.00 > min_gain 1"},
    {"round": 2, "current": {"experts": ["a", "b"], "added": "b", "mean": 50.0, "std": 2.0,
                             "benchmarks": {"x": 50.0}, "runs": [{}, {}], "tuning": None},
     "candidates": [
         {"experts": ["a", "b", "c"], "added": "c", "mean": 50.5, "std": 0.5,
          "benchmarks": {"x": 50.5}, "runs": [{}, {}], "tuning": None}],
     "chosen": None, "decision": "stop: best candidate c gains +0.50, not more than 1"},
]


def test_greedy_tables_and_plot_from_round_records(tmp_path):
    from analysis.plots import greedy_path, save
    lineage = lineage_table(ROUNDS, "s: lineage")
    assert lineage.frame["experts"].tolist() == ["a", "a + b"]
    assert lineage.frame["change"].tolist()[1] == 30.0
    assert lineage.cells["objective"].tolist() == ["20.0", "50.0 ± 2.0"]
    assert lineage.notes[-1].startswith("Stopped after round 2: stop: best candidate c")
    r1, r2 = round_tables(ROUNDS, "s")
    assert r1.frame["gain"].tolist() == [30.0, 10.0]
    assert r1.cells["added"].tolist() == ["yes", ""]
    assert r2.frame.index.tolist() == ["c"] and r2.notes == [ROUNDS[1]["decision"]]
    # a tuned hyperparameter keeps its digits (a learning rate is not a score to round)
    tuned = json.loads(json.dumps(ROUNDS))
    for r in tuned:
        for arm in [r["current"], *r["candidates"]]:
            arm["tuning"] = {"path": "stages[sft].lr", "value": 3e-4, "trials": []}
    assert lineage_table(tuned, "t").cells["stages[sft].lr"].tolist() == ["0.0003"] * 2
    assert round_tables(tuned, "t")[0].frame["stages[sft].lr"].tolist() == [3e-4] * 2
    paths = save(greedy_path(ROUNDS, "s"), tmp_path / "g")
    assert [p.stat().st_size > 1000 for p in paths] == [True, True]


def test_search_report_from_the_search_records(tmp_path, capsys):
    from pathlib import Path
    spec = Path(__file__).resolve().parent.parent / "experiments/tiny/greedy_known_answer.yaml"
    work = tmp_path / "work"
    assert main(["report", str(spec), "--workdir", str(work)]) == 0
    assert "No round of the search has finished yet" in capsys.readouterr().out
    folder = work / "searches" / "greedy_known_answer"
    folder.mkdir(parents=True)
    for r in ROUNDS:
        (folder / f"round-{r['round']}.json").write_text(json.dumps(r))
    assert main(["report", str(spec), "--workdir", str(work), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "| 1 | a + b | b | 50.0 | 50.0 ± 2.0 | +30.0 |" in out
    assert (work / "reports" / "greedy_known_answer" / "greedy_path.png").exists()
    assert (work / "reports" / "greedy_known_answer" / "round-2.tex").exists()
