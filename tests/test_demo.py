"""The acceptance check of the foundation: `ablate train experiments/tiny/two_experts.yaml`
trains and evaluates on this CPU, far above chance on the easy skills and above the same
model untrained. Marked slow (about 2 minutes); CI runs it."""
from pathlib import Path

import pytest

from harness.cli import main
from harness.runs.pipeline import load_result
from harness.runs.rundir import RunDir

CONFIG = Path(__file__).parent.parent / "experiments" / "tiny" / "two_experts.yaml"


@pytest.mark.long   # an acceptance run (80 s); the pipeline's path is in the default tests
def test_two_experts_learns_the_easy_skills(tmp_path, capsys):
    assert main(["train", str(CONFIG), "--workdir", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "two_experts" in out and "avg" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    result = load_result(RunDir(run_dir))
    s, untrained = result.scores, result.untrained_scores
    # chance: color 25%, chart 33%, position 25%
    assert s["synth-color"] >= 0.8 and s["synth-chart"] >= 0.8, s
    assert s["synth-position"] >= 0.45, s
    avg = sum(s.values()) / len(s)
    assert avg > sum(untrained.values()) / len(untrained) + 0.3, (s, untrained)
