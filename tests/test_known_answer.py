"""The acceptance check of the greedy search: experiments/tiny/greedy_known_answer.yaml, run as
a user runs it, adds the experts in the planted order within 30 minutes on a 2-core CPU, and
trains each expert's pre-alignment exactly once (counted from the run records). About 8
minutes, so it is marked `long`: the default test run skips it and CI runs it separately."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

SPEC = Path(__file__).parent.parent / "experiments" / "tiny" / "greedy_known_answer.yaml"


@pytest.mark.long
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
