"""Greedy expert addition: the search spec's checks, the round loop's decisions and records,
reuse of finished runs and of each expert's pre-alignment, resuming a killed search, and
Optuna tuning per arm. Runs are tiny (seconds each)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.errors import ConfigError
from harness.cli import main
from harness.search import GreedySearch, load_search_spec
from tests.tiny import tiny_run_yaml

ROOT = Path(__file__).parent.parent

SEARCH = """\
name: NAME
base: base.yaml
search:
  experts:
    a: {id: clip-vit, preset: tiny, resolution: 32, freeze: false}
    b: {id: clip-vit, preset: tiny, resolution: 32, freeze: false, view: {color: gray}}
    c: {id: clip-vit, preset: tiny, resolution: 32, freeze: false, view: {pixels: 4}}
  start: [a]
  pool: [b, c]
  objective:
    benchmarks:
      synth-color: {max: 1}
      synth-pope: {max: 1, weight: 2}
  stop: {min_gain: 0, max_experts: 3}
  seeds: SEEDS
EXTRA"""


def write_search(tmp_path, name="tiny_search", seeds="[0]", extra="", prealign=True,
                 sft_steps=5, edit=None) -> Path:
    d = tmp_path / "spec"
    d.mkdir(exist_ok=True)
    (d / "base.yaml").write_text(tiny_run_yaml(prealign=prealign, sft_steps=sft_steps))
    text = SEARCH.replace("NAME", name).replace("SEEDS", seeds).replace("EXTRA", extra)
    if edit:
        old, new = edit
        assert old in text, old
        text = text.replace(old, new)
    path = d / f"{name}.yaml"
    path.write_text(text)
    return path


def stage_starts(workdir: Path) -> dict[str, int]:
    """Stage directory -> how many times its training started (resumes included)."""
    out = {}
    for d in (workdir / "stages").iterdir():
        log = d / "metrics.jsonl"
        out[d.name] = sum('"event": "start"' in line for line in log.read_text().splitlines()) \
            if log.exists() else 0
    return out


# --- bad search specs: an error naming file, line and field; nothing submitted -------------

BAD = [
    ("pool: [b, c]", "pool: []", "search.pool", "pool is empty"),
    ("pool: [b, c]", "pool: [a, c]", "search.pool[0]", "in the start set and in the pool"),
    ("synth-color: {max: 1}", "synth-text: {max: 1}", "search.objective.benchmarks.synth-text",
     "no run evaluates benchmark 'synth-text'"),
    ("synth-color: {max: 1}", "synth-color: {}", "search.objective.benchmarks.synth-color",
     "normalization missing"),
    ("synth-color: {max: 1}", "synth-color: {weight: 1}",
     "search.objective.benchmarks.synth-color", "normalization missing"),
    ("pool: [b, c]", "pool: [b, z]", "search.pool[1]", "unknown expert 'z'"),
    ("max_experts: 3", "max_experts: 1", "search.stop.max_experts", "must exceed"),
    ("view: {pixels: 4}", "view: {pixels: 0}", "search.experts.c.view.pixels", "must be >= 1"),
    ("id: clip-vit, preset: tiny, resolution: 32, freeze: false, view: {color: gray}",
     "id: clip-vit, preset: tiny, resolution: 30, freeze: false",
     "search.experts.b", "cannot take resolution 30"),
    ("seeds: [0]", "seeds: [0]\n  halving: {rungs: [0.5, 0.25]}", "search.halving.rungs",
     "rungs must increase"),
    ("seeds: [0]", "seeds: [0]\n  halving: {rungs: [1.0]}", "search.halving.rungs",
     "must be < 1"),
    ("seeds: [0]", "seeds: [0]\n  halving: {rungs: [0.5], keep: 0}", "search.halving.keep",
     "must be > 0"),
    ("seeds: [0]", "seeds: [0]\n  halving: {rungs: [0.5], selection: {benchmarks: [synth-text]}}",
     "search.halving.selection.benchmarks[0]", "'synth-text' is not in the objective"),
    ("seeds: [0]", "seeds: [0]\n  halving: {rungs: [0.5]}\n  tune: {path: \"stages[sft].lr\", "
     "low: 1.0e-4, high: 1.0e-3}", "search.halving", "cannot be combined"),
    ("seeds: [0]", "seeds: [0]\n  halving: {rungs: [0.5], rule: chance}", "search.halving.rule",
     "allowed values: 'fraction', 'evidence'"),
    ("weight: 2}\n  stop: {min_gain: 0, max_experts: 3}\n  seeds: [0]",
     "weight: 2, metric: f1}\n  stop: {min_gain: 0, max_experts: 3}\n  seeds: [0]\n"
     "  halving: {rungs: [0.5], rule: evidence}", "search.halving.selection.benchmarks[1]",
     "'synth-pope' is judged by 'f1', which is not their mean; allowed metrics: accuracy, anls"),
]


@pytest.mark.parametrize("old,new,field,message", BAD)
def test_bad_search_spec_is_refused_before_anything_is_submitted(tmp_path, capsys, old, new,
                                                                 field, message):
    path = write_search(tmp_path, edit=(old, new))
    with pytest.raises(ConfigError) as err:
        load_search_spec(path)
    assert err.value.field == field, str(err.value)
    assert message in str(err.value)
    assert err.value.line is not None and err.value.file == str(path)
    workdir = tmp_path / "work"
    assert main(["search", str(path), "--workdir", str(workdir)]) == 2
    assert message in capsys.readouterr().err
    assert not workdir.exists()


def test_an_expert_error_points_at_its_definition_in_the_search_spec(tmp_path):
    path = write_search(tmp_path, edit=("resolution: 32, freeze: false, view: {pixels: 4}",
                                        "resolution: 32, freeze: false, layers: [9]"))
    with pytest.raises(ConfigError) as err:
        load_search_spec(path)
    text = path.read_text().splitlines()
    assert "layers: [9]" in text[err.value.line - 1]
    assert err.value.file == str(path)


# --- the round loop -------------------------------------------------------------------------

def test_search_decides_from_the_numbers_records_them_and_reruns_for_free(tmp_path, capsys):
    path = write_search(tmp_path)
    spec = load_search_spec(path)
    workdir = tmp_path / "work"
    rounds = GreedySearch(spec, workdir, executor="inline").run()

    # round 1 tries both candidates on top of the start set; each decision follows its numbers
    assert [c.experts for c in rounds[0].candidates] == [["a", "b"], ["a", "c"]]
    for r in rounds:
        best = max(r.candidates, key=lambda c: c.mean)
        gain = best.mean - r.current.mean
        assert r.chosen == (best.added if gain > spec.stop.min_gain else None)
        for c in r.candidates:
            run = c.runs[0]
            metrics = json.loads((workdir / "runs" / run.key / "metrics.json").read_text())
            expected = (100 * metrics["synth-color"]["accuracy"]
                        + 2 * 100 * metrics["synth-pope"]["accuracy"]) / 3
            assert run.objective == pytest.approx(expected)
    search_dir = workdir / "searches" / "tiny_search"
    lineage = json.loads((search_dir / "lineage.json").read_text())
    assert lineage[0]["experts"] == "a" and lineage[0]["added"] == "(start)"
    for prev, row in zip(lineage, lineage[1:]):
        assert row["change"] == pytest.approx(row["objective"] - prev["objective"], abs=0.02)
    candidates = json.loads((search_dir / "candidates.json").read_text())
    assert len(candidates) == sum(len(r.candidates) for r in rounds)
    assert sum(c["added"] for c in candidates) == sum(r.chosen is not None for r in rounds)
    round1 = json.loads((search_dir / "round-1.json").read_text())
    assert round1["decision"].startswith(("added", "stopped"))
    assert f"{round1['current']['mean']:.2f}" in round1["decision"]
    assert [c["experts"] for c in round1["candidates"]] == [["a", "b"], ["a", "c"]]
    assert round1["candidates"][0]["runs"][0]["key"] == rounds[0].candidates[0].runs[0].key

    # every expert's pre-alignment trained once in the whole search, reused by every arm
    prealign = [d for d in (workdir / "stages").iterdir() if d.name.startswith("prealign-")]
    assert sorted(d.name.split("-")[1] for d in prealign) == ["a", "b", "c"]
    trained = {}
    for run_dir in (workdir / "runs").iterdir():
        for s in json.loads((run_dir / "stages.json").read_text()):
            if s["name"] == "prealign" and not s["reused"]:
                trained[s["expert"]] = trained.get(s["expert"], 0) + 1
    assert trained == {"a": 1, "b": 1, "c": 1}

    # a second search over the same records trains nothing and decides the same
    before = stage_starts(workdir)
    again = GreedySearch(spec, workdir, executor="inline").run()
    assert stage_starts(workdir) == before
    assert [r.chosen for r in again] == [r.chosen for r in rounds]
    assert [r.decision for r in again] == [r.decision for r in rounds]


class PlantedSearch(GreedySearch):
    """The round loop over planted objectives instead of trained runs: checks the decision
    rule, the stopping rules and the tables on numbers known in advance."""

    def __init__(self, spec, planted, tmp_path):
        super().__init__(spec, tmp_path / "work", executor="inline")
        self.planted, self.asked = planted, []

    def evaluate(self, arms, what):
        from harness.search.round_types import Arm, SeedRun
        self.asked.append([tuple(e) for e, _ in arms])
        return [Arm(e, added, [SeedRun(f"k{i}", seed, v, {"synth-color": v, "synth-pope": v},
                                       {"synth-color": v / 100, "synth-pope": v / 100})
                               for i, (seed, v) in enumerate(zip(self.spec.seeds,
                                                                 self.planted["+".join(e)]))])
                for e, added in arms]


def test_round_logic_on_planted_numbers(tmp_path):
    path = write_search(tmp_path, seeds="[0, 1]",
                        edit=("pool: [b, c]", "pool: [b, c, d]"))
    text = path.read_text().replace("    c: {", "    d: {id: sam, preset: tiny, resolution: 32}\n"
                                               "    c: {").replace("min_gain: 0", "min_gain: 1.5")
    path.write_text(text.replace("max_experts: 3", "max_experts: 4"))
    spec = load_search_spec(path)
    planted = {"a": [10, 12], "a+b": [20, 22], "a+c": [30, 34], "a+d": [30, 34],
               "a+c+b": [40, 40], "a+c+d": [35, 35], "a+c+b+d": [41, 41]}
    search = PlantedSearch(spec, planted, tmp_path)
    rounds = search.run()
    # round 1: c and d tie at 32 -> the pool's order picks c; round 2: b (+8);
    # round 3: d gains +1.0, not more than min_gain 1.5 -> stop
    assert [r.chosen for r in rounds] == ["c", "b", None]
    assert search.asked[0] == [("a",), ("a", "b"), ("a", "c"), ("a", "d")]
    assert search.asked[1] == [("a", "c", "b"), ("a", "c", "d")]
    assert rounds[0].candidates[1].std == pytest.approx(2 * 2 ** 0.5)
    assert "+1.00 over 40.00, not more than min_gain 1.5" in rounds[2].decision
    lineage = json.loads((tmp_path / "work" / "searches" / "tiny_search" /
                          "lineage.json").read_text())
    assert [(r["added"], r["objective"], r["change"]) for r in lineage] == [
        ("(start)", 11.0, None), ("c", 32.0, 21.0), ("b", 40.0, 8.0)]
    assert lineage[1]["experts"] == "a + c" and lineage[1]["synth-color"] == 32.0
    table = json.loads((tmp_path / "work" / "searches" / "tiny_search" /
                        "candidates.json").read_text())
    assert [(r["round"], r["candidate"], r["gain"], r["added"]) for r in table] == [
        (1, "b", 10.0, False), (1, "c", 21.0, True), (1, "d", 21.0, False),
        (2, "b", 8.0, True), (2, "d", 3.0, False), (3, "d", 1.0, False)]

    # the size limit ends a search that would go on
    path.write_text(path.read_text().replace("max_experts: 4", "max_experts: 2"))
    rounds = PlantedSearch(load_search_spec(path), planted, tmp_path).run()
    assert [r.chosen for r in rounds] == ["c"]
    assert rounds[-1].decision.endswith("stopped at the size limit of 2 experts")


def test_prealigned_expert_weights_carry_into_the_combination(tmp_path):
    """The joint stages start from each expert's pre-aligned weights (not its init), and the
    pre-aligned expert is the same tensor in every combination that contains it."""
    import torch
    from safetensors.torch import load_file
    path = write_search(tmp_path)
    spec = load_search_spec(path)
    workdir = tmp_path / "work"
    from harness.runs.pipeline import run
    for experts in (["a", "b"], ["a", "c"]):
        run(spec.run(experts, 0).config, workdir, progress=False)
    pre = next((workdir / "stages").glob("prealign-a-*"))
    pre_w = load_file(pre / "weights.safetensors")
    assert pre_w and all(k.startswith("experts.a.") for k in pre_w)
    for align in (workdir / "stages").glob("align-*"):
        w = load_file(align / "weights.safetensors")
        for k, v in pre_w.items():   # align trains only the projector: the expert is as pre-aligned
            assert torch.equal(w[k], v), k
    from models.builder import build_solo
    from models.llm import load_llm
    cfg = spec.run(["a", "b"], 0).config
    llm = load_llm(cfg.model.llm, workdir / "cache" / "llm", [])
    solo = build_solo(cfg.model, cfg.model.experts[0], cfg.seed, llm)
    init = {k: v for k, v in solo.state_dict().items() if k in pre_w}
    assert any(not torch.equal(init[k], pre_w[k]) for k in pre_w)  # training moved it


@pytest.mark.long   # 23 s: the search's seed replicates; default run kept under 15 min
def test_seeds_rank_by_the_mean_and_report_the_spread(tmp_path):
    path = write_search(tmp_path, seeds="[0, 1]", edit=("pool: [b, c]", "pool: [b]"),
                        prealign=False)
    spec = load_search_spec(path)
    rounds = GreedySearch(spec, tmp_path / "work", executor="inline").run()
    cand = rounds[0].candidates[0]
    objectives = [r.objective for r in cand.runs]
    assert [r.seed for r in cand.runs] == [0, 1]
    assert cand.mean == pytest.approx(sum(objectives) / 2)
    assert cand.std == pytest.approx(abs(objectives[0] - objectives[1]) / 2 ** 0.5)
    table = json.loads((tmp_path / "work" / "searches" / "tiny_search" /
                        "candidates.json").read_text())
    assert table[0]["seeds"] == 2 and table[0]["std"] == pytest.approx(cand.std, abs=0.01)


@pytest.mark.long   # 19 s: optuna per arm; default run kept under 15 min
def test_optuna_tunes_each_arm_and_a_rerun_asks_nothing_new(tmp_path):
    extra = textwrap.indent(textwrap.dedent("""\
        tune: {path: "stages[sft].lr", low: 1.0e-4, high: 3.0e-3, trials: 2, parallel: 2}
        """), "  ")
    path = write_search(tmp_path, extra=extra, edit=("pool: [b, c]", "pool: [b]"),
                        prealign=False)
    spec = load_search_spec(path)
    workdir = tmp_path / "work"
    rounds = GreedySearch(spec, workdir, executor="inline").run()
    for arm in [rounds[0].current, *rounds[0].candidates]:
        trials = arm.tuning["trials"]
        assert len(trials) == 2
        best = max(trials, key=lambda t: t["objective"])
        assert arm.tuning["value"] == best["value"] and arm.mean == pytest.approx(
            best["objective"])
    assert (workdir / "searches" / "tiny_search" / "optuna.journal").exists()
    # the written tables carry the tuned value at full precision (it is not a score)
    table = json.loads((workdir / "searches" / "tiny_search" / "candidates.json").read_text())
    assert table[0]["stages[sft].lr"] == pytest.approx(
        rounds[0].candidates[0].tuning["value"], rel=1e-6)
    runs_before = sorted(p.name for p in (workdir / "runs").iterdir())
    assert len(runs_before) == 4   # 2 arms x 2 trials
    again = GreedySearch(spec, workdir, executor="inline").run()
    assert sorted(p.name for p in (workdir / "runs").iterdir()) == runs_before
    assert again[0].candidates[0].tuning == rounds[0].candidates[0].tuning


# --- killed mid-round -----------------------------------------------------------------------

def kill_search_when(cmd: list[str], workdir: Path, log: Path, ready, timeout_s: float):
    """Start `ablate search` (cmd) in a session of its own, wait until `ready()` returns
    something true, then kill the search, its dispatcher and its jobs (the whole session,
    as a crash would); returns what `ready()` returned (false on timeout)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline, found = time.time() + timeout_s, None
    while time.time() < deadline and not (found := ready()):
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
    subprocess.run(["pkill", "-9", "-f", str(workdir)], check=False)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return found


@pytest.mark.long   # 80 s; the halving acceptance search is killed and resumed too
def test_killed_search_resumes_without_retraining_finished_candidates(tmp_path):
    path = write_search(tmp_path, sft_steps=30)
    workdir = tmp_path / "work"
    cmd = [sys.executable, "-m", "harness.cli", "search", str(path), "--workdir",
           str(workdir), "--max-parallel", "1"]
    def finished_while_training() -> list[str]:
        """Run keys DONE once round 1 has two finished candidates and the next training."""
        states = {}
        for d in (workdir / "runs").glob("*"):
            status = d / "status.json"
            if status.exists():
                states[d.name] = json.loads(status.read_text())["state"]
        if sum(s == "DONE" for s in states.values()) >= 2 and "RUNNING" in states.values():
            return [k for k, s in states.items() if s == "DONE"]
        return []

    done_at_kill = kill_search_when(cmd, workdir, tmp_path / "first.log",
                                    finished_while_training, timeout_s=600)
    assert done_at_kill, "the search never reached a finished candidate"
    time.sleep(1)
    finished = {k: (workdir / "runs" / k / "metrics.json").stat().st_mtime_ns
                for k in done_at_kill}
    starts = stage_starts(workdir)

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "already done" in out.stdout
    for k, mtime in finished.items():   # finished candidates untouched
        assert (workdir / "runs" / k / "metrics.json").stat().st_mtime_ns == mtime
    after = stage_starts(workdir)
    for name, n in starts.items():
        complete = (workdir / "stages" / name / "result.json").exists()
        if complete and n:
            assert after[name] == n, f"{name} was trained again"
    assert "lineage:" in out.stdout
    assert (workdir / "searches" / "tiny_search" / "lineage.csv").exists()


def one_round_search(tmp_path, extra: str, sft_steps: int):
    """A one-round search (max 2 experts, no pre-alignment) with `extra` (its halving), run
    inline: (spec file, spec, workdir, rounds)."""
    path = write_search(tmp_path, extra=extra, sft_steps=sft_steps, prealign=False,
                        edit=("max_experts: 3", "max_experts: 2"))
    spec = load_search_spec(path)
    workdir = tmp_path / "work"
    return path, spec, workdir, GreedySearch(spec, workdir, executor="inline").run()


HALVING = """\
  halving: {rungs: [0.4], keep: 0.5, min_keep: 1, selection: {synthetic_per_skill: 3}}
"""


@pytest.mark.long   # 22-36 s; the halving acceptance search takes the same path
def test_halving_stops_the_trailing_candidate_at_its_rung_and_reruns_for_free(tmp_path, capsys):
    """Two candidates, one rung at 40% of the last stage keeping one: the candidate behind on
    the selection split stays paused at step 4 of 10, the leader finishes exactly as the same
    run without halving does, and the round records the numbers behind the cut."""
    path, spec, workdir, rounds = one_round_search(tmp_path, HALVING, sft_steps=10)
    (r,) = rounds
    stopped = [c for c in r.candidates if c.stopped]
    finished = [c for c in r.candidates if c.finished]
    assert len(stopped) == 1 and len(finished) == 1
    rung = r.halving["rungs"][0]
    assert rung["stopped"] == [stopped[0].added] and rung["kept"] == [finished[0].added]
    assert rung["scores"][finished[0].added] >= rung["scores"][stopped[0].added]
    assert stopped[0].stopped["step"] == 4 and stopped[0].stopped["total"] == 10
    assert "selection split" in r.halving["selection"]
    assert r.chosen in (finished[0].added, None)
    loser = workdir / "runs" / spec.run(stopped[0].experts, 0).key
    status = json.loads((loser / "status.json").read_text())
    assert status["state"] == "PAUSED" and "stopped by successive halving at rung 1" in \
        status["reason"] and "behind the last candidate kept" in status["reason"]
    assert not (loser / "metrics.json").exists()
    # steps trained, counted from the stage records: the stopped candidate's last stage
    # trained 4 of its 10 steps
    sft_steps = sorted(sum('"loss"' in line for line in (d / "metrics.jsonl").read_text()
                           .splitlines()) for d in (workdir / "stages").glob("sft-*"))
    assert sft_steps == [4, 10, 10]
    # `ablate status` on the search spec shows the paused candidate and why
    assert main(["status", str(path), "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "PAUSED" in out and "stopped by successive halving" in out
    # the report says which split the rungs read, and where the stopped candidate stopped
    assert main(["report", str(path), "--workdir", str(workdir), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "Rung decisions read the selection split (synth-color, synth-pope)" in out
    assert "stopped at rung 1 (step 4/10" in out
    # the winner ends where the same run without halving ends
    (tmp_path / "plain").mkdir()
    plain = write_search(tmp_path / "plain", sft_steps=10, prealign=False,
                         edit=("max_experts: 3", "max_experts: 2"))
    winner = spec.run(finished[0].experts, 0)
    from harness.runs.pipeline import run
    straight = run(load_search_spec(plain).run(finished[0].experts, 0).config,
                   tmp_path / "straight", progress=False)
    assert straight.key == winner.key
    assert straight.metrics == json.loads((workdir / "runs" / winner.key /
                                           "metrics.json").read_text())
    # run again over the same records: nothing trains, the same decisions
    before = stage_starts(workdir)
    again = GreedySearch(spec, workdir, executor="inline").run()
    assert stage_starts(workdir) == before
    assert [x.decision for x in again] == [x.decision for x in rounds]
    a, b = json.dumps(again[0].halving), json.dumps(r.halving)
    assert a == b, (a, b)


@pytest.mark.long   # about 25 s: two rungs on real (tiny) runs, then the same search again
def test_evidence_rungs_read_the_runs_per_question_records_and_rerun_to_the_same_decisions(
        tmp_path, capsys):
    """The evidence rule on trained runs: each rung reads the paused runs' per-question
    selection scores (their count is the split's), records its intervals, and a search run
    again over the same records trains nothing and decides the same, intervals included."""
    extra = ("  halving: {rungs: [0.25, 0.5], rule: evidence, "
             "selection: {synthetic_per_skill: 3}}\n")
    _, spec, workdir, rounds = one_round_search(tmp_path, extra, sft_steps=8)
    (r,) = rounds
    assert r.halving["rule"] == "evidence"
    first = r.halving["rungs"][0]
    assert first["intervals"] and all(iv["questions"] == 2 * 3
                                      for iv in first["intervals"].values())
    assert first["level"] == pytest.approx(1 - 2 * 0.05 / (1 * 2))
    last = r.halving["rungs"][-1]
    assert last.get("skipped") or "against_current" in last   # the start set at the last rung
    before = stage_starts(workdir)
    again = GreedySearch(spec, workdir, executor="inline").run()
    assert stage_starts(workdir) == before
    assert json.dumps(again[0].halving) == json.dumps(r.halving)
    assert [x.decision for x in again] == [x.decision for x in rounds]


def test_plan_of_a_halving_search_bounds_its_gpu_hours_with_and_without(capsys):
    from harness.search.search_spec import Halving
    h = Halving(rungs=[0.5], keep=0.3, min_keep=1)
    # 3 candidates: all train half, one goes on: (3 * 0.5 + 0.5) / 3 of their last stage
    assert h.last_stage_share(3) == pytest.approx(2 / 3)
    assert Halving(rungs=[0.25, 0.5], keep=0.5).last_stage_share(4) == pytest.approx(
        (4 * 0.25 + 2 * 0.25 + 1 * 0.5) / 4)
    assert Halving(rungs=[0.5], keep=0.5, min_keep=2).last_stage_share(2) == 1.0   # skipped
    spec = ROOT / "experiments" / "tiny" / "greedy_known_answer_halving.yaml"
    assert main(["plan", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "successive halving (rungs 0.5, keep 0.3, at least 1)" in out
    assert "GPU-hours without halving" in out and "with it" in out
    # by evidence: bounded between every round decided at the first rung and no one stopped
    from harness.search.search_spec import Halving as H
    assert H(rungs=[0.25, 0.5], rule="evidence").last_stage_share(3) == 1.0
    assert H(rungs=[0.25, 0.5], rule="evidence").last_stage_share(3, decided_at_first=True) \
        == pytest.approx((1 + 2 * 0.25) / 3)
    spec = ROOT / "experiments" / "tiny" / "greedy_known_answer_evidence.yaml"
    assert main(["plan", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "successive halving by evidence (rungs 0.125, 0.25, 0.5, 0.75, risk 0.05" in out
    assert "(every round decided at the first rung)" in out and "(no one stopped)" in out
