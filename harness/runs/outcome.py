"""What a run returns, and how its records read back as that: a finished run's RunResult
(each benchmark's headline, all metrics, cost) or a PausedRun (its selection scores at a
successive-halving rung)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from harness.config.selection import Rung
from harness.evaluation.scores import read_scores
from harness.runs.rundir import RunDir


@dataclass
class RunResult:
    key: str
    name: str
    path: Path
    scores: dict[str, float]              # benchmark -> its headline metric's value
    metrics: dict[str, dict[str, float]]  # benchmark -> all metrics
    cost: dict
    untrained_scores: dict[str, float] | None = None
    units: dict[str, str] = dataclasses.field(default_factory=dict)  # fraction | points


@dataclass
class PausedRun:
    """A run paused at a rung: its last stage checkpointed there and scored on the selection
    split (harness.config.selection); submitted again without the rung, or with a later one,
    it continues from that checkpoint."""
    key: str
    name: str
    rung: dict                            # rung.json: number, fraction, stage, step, total
    scores: dict[str, float]              # selection benchmark -> its headline value
    metrics: dict[str, dict[str, float]]
    per_question: dict[str, dict[str, float]]   # benchmark -> question -> score


def load_result(run_dir: RunDir) -> RunResult:
    """A finished run's numbers as its records state them: each benchmark's headline from
    scores.json (written from the benchmark registry when the run was scored)."""
    metrics = run_dir.read_json("metrics.json")
    cost = run_dir.read_json("cost.json")
    config = run_dir.read_json("config.json")
    scores = read_scores(run_dir.path)
    untrained = read_scores(run_dir.path, "_untrained")
    return RunResult(run_dir.path.name, config["name"], run_dir.path,
                     {b: h["value"] for b, h in scores.items()}, metrics, cost,
                     {b: h["value"] for b, h in untrained.items()} if untrained else None,
                     {b: h["unit"] for b, h in scores.items()})


def rung_dir(run_dir: RunDir, rung: Rung) -> RunDir:
    return RunDir(run_dir.path / "rungs" / rung.folder_name())


def load_paused(run_dir: RunDir, rung: Rung) -> PausedRun | None:
    """The run's records at `rung`, if it has been scored there (rung.json is written
    last)."""
    folder = rung_dir(run_dir, rung)
    if not (folder.path / "rung.json").exists():
        return None
    record = folder.read_json("rung.json")
    return PausedRun(run_dir.path.name, record["run"], record,
                     {b: h["value"] for b, h in read_scores(folder.path).items()},
                     folder.read_json("metrics.json"),
                     folder.read_json("per_question.json"))
