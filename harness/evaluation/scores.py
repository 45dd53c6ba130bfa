"""A run's headline scores: for each benchmark it scored, the one number its papers print
(the benchmark registry's `main_metric`: MME's perception points, POPE's mean F1, DocVQA's
ANLS, ...), written once to scores.json when the run is scored. Every reader (the results
table, `ablate status`, MLflow, the reports, the search's objective) takes the number from
there instead of knowing which metric a benchmark leads with. Each record also names the
protocol and the scoring revision that produced it (harness.evaluation.revision); records
written before they were recorded lack both, and read as of an unknown revision."""
from __future__ import annotations

import json
from pathlib import Path

from harness.evaluation.benchmarks import BENCHMARKS


def headlines(metrics: dict[str, dict[str, float]]) -> dict[str, dict]:
    """benchmark -> {metric, value, unit, protocol, revision} of its headline."""
    return {name: BENCHMARKS.get(name).headline(m) for name, m in metrics.items()}


def _unknown_scoring(metrics: dict[str, dict[str, float]]) -> dict[str, dict]:
    """A run scored before scores.json: its headlines by today's registry, but without a
    protocol or revision, since nothing says which code scored it."""
    return {name: {k: v for k, v in h.items() if k not in ("protocol", "revision")}
            for name, h in headlines(metrics).items()}


def read_scores(run_path: str | Path, tag: str = "") -> dict[str, dict] | None:
    """scores{tag}.json, or for a run scored before runs wrote it, the same record made from
    its metrics{tag}.json by the registry; None when the run has neither."""
    run_path = Path(run_path)
    for name, make in ((f"scores{tag}.json", lambda d: d),
                       (f"metrics{tag}.json", _unknown_scoring)):
        if (run_path / name).exists():
            return make(json.loads((run_path / name).read_text()))
    return None


def average(scores: dict[str, dict]) -> float | None:
    """The mean of the headline fractions (points-scaled benchmarks are left out, as in the
    reports), as a fraction."""
    values = [s["value"] for s in scores.values() if s["unit"] == "fraction"]
    return sum(values) / len(values) if values else None
