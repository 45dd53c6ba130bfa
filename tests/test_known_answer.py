"""The acceptance checks of the greedy search: experiments/tiny/greedy_known_answer.yaml, run as
a user runs it, adds the experts in the planted order within 30 minutes on a 2-core CPU, and
trains each expert's pre-alignment exactly once (counted from the run records); its
successive-halving twin does the same on a fraction of the fine-tuning steps, killed between
rungs and run again. Several minutes each, so they are marked `long`: the default test run
skips them and CI runs them separately."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_search import kill_search_when

SPEC = Path(__file__).parent.parent / "experiments" / "tiny" / "greedy_known_answer.yaml"


@pytest.mark.long
@pytest.mark.covered
def test_known_answer_search_adds_the_planted_experts_in_order(tmp_path):
    workdir = tmp_path / "work"
    started = time.time()
    out = subprocess.run([sys.executable, "-m", "harness.cli", "search", str(SPEC),
                          "--workdir", str(workdir), "--max-parallel", "2"],
                         capture_output=True, text=True, timeout=1800)
    elapsed = time.time() - started
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert elapsed < 1800
    search = workdir / "searches" / "greedy_known_answer"
    lineage = json.loads((search / "lineage.json").read_text())
    assert [row["added"] for row in lineage] == ["(start)", "hue", "sharp"], lineage
    candidates = json.loads((search / "candidates.json").read_text())
    assert not any(c["added"] for c in candidates if c["candidate"] == "decoy")

    # each expert's pre-alignment ran exactly once across the whole search
    trained: dict[str, int] = {}
    for run_dir in (workdir / "runs").iterdir():
        for stage in json.loads((run_dir / "stages.json").read_text()):
            if stage["name"] == "prealign" and not stage["reused"]:
                trained[stage["expert"]] = trained.get(stage["expert"], 0) + 1
    assert trained == {"outline": 1, "hue": 1, "sharp": 1, "decoy": 1}, trained


HALVING_SPEC = SPEC.with_name("greedy_known_answer_halving.yaml")


def _rung_records(workdir: Path, fraction: str) -> dict[str, int]:
    """run key -> mtime of its rung record at `fraction` (e.g. "0.25")."""
    return {p.parents[2].name: p.stat().st_mtime_ns
            for p in (workdir / "runs").glob(f"*/rungs/{fraction}-*/rung.json")}


@pytest.mark.long
def test_known_answer_search_with_halving_killed_between_rungs(tmp_path):
    """The same known-answer search with successive halving: killed once every round-1
    candidate has been scored at the first rung, and run again, it picks the planted order,
    decides from the records written before the kill (untouched), trains each expert's
    pre-alignment once, and trains fewer fine-tuning steps than the search without halving
    would (counted from the stage records against that search's plan)."""
    workdir = tmp_path / "work"
    cmd = [sys.executable, "-m", "harness.cli", "search", str(HALVING_SPEC), "--workdir",
           str(workdir), "--max-parallel", "2"]
    kill_search_when(cmd, workdir, tmp_path / "first.log",
                     lambda: len(_rung_records(workdir, "0.5")) >= 3, timeout_s=1500)
    before_kill = _rung_records(workdir, "0.5")
    assert len(before_kill) == 3, "round 1's candidates never reached the first rung"

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "rung 1 (0.5 of the last stage): 3 runs: all scored at this rung already" in \
        out.stdout
    after = _rung_records(workdir, "0.5")
    assert {k: after[k] for k in before_kill} == before_kill   # decided from the same records
    search = workdir / "searches" / "greedy_known_answer_halving"
    lineage = json.loads((search / "lineage.json").read_text())
    assert [row["added"] for row in lineage] == ["(start)", "hue", "sharp"], lineage
    round1 = json.loads((search / "round-1.json").read_text())
    assert round1["halving"]["rungs"][0]["stopped"] and "selection split" in \
        round1["halving"]["selection"]
    from harness.search import load_search_spec
    spec = load_search_spec(HALVING_SPEC)
    for c in round1["candidates"]:
        if c.get("stopped"):   # paused where it was stopped, saying by how much it trailed
            status = json.loads((workdir / "runs" / spec.run(c["experts"], 0).key /
                                 "status.json").read_text())
            assert status["state"] == "PAUSED" and "behind the last candidate kept" in \
                status["reason"], status

    trained: dict[str, int] = {}
    sft_steps = 0
    for stage in (workdir / "stages").iterdir():
        info = json.loads((stage / "stage.json").read_text())
        steps = sum('"loss"' in line for line in (stage / "metrics.jsonl").read_text()
                    .splitlines())
        if info["stage"]["name"] == "prealign":
            trained[info["expert"]] = trained.get(info["expert"], 0) + 1
        if info["stage"]["name"] == "sft":
            sft_steps += steps
    assert trained == {"outline": 1, "hue": 1, "sharp": 1, "decoy": 1}, trained
    # without halving the rounds train 6 fine-tuning stages of 200 steps (1200 steps); with
    # it, round 1: the start set 200, its 3 candidates 100 each, 1 of them on to 200; round 2:
    # 2 candidates 100 each, 1 on to 200
    assert sft_steps == 200 + 3 * 100 + 100 + 2 * 100 + 100 == 900, sft_steps
