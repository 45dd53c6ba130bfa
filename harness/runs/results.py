"""A compact comparison table of finished runs for the terminal (the full paper-layout
reports belong to `analysis`)."""
from __future__ import annotations

import pandas as pd


def _average(scores: dict[str, float], points: set[str]) -> float | None:
    """The mean of the % scores (benchmarks scored in points are left out, as in the
    reports)."""
    fractions = [s for b, s in scores.items() if b not in points]
    return round(100 * sum(fractions) / len(fractions), 1) if fractions else None


def results_table(results, labels: list[dict[str, str]] | None = None) -> pd.DataFrame:
    """One row per run: `labels` (a spec's axis values) index the rows when given, else the
    run names do."""
    rows = []
    for i, r in enumerate(results):
        row = dict(labels[i]) if labels else {"run": r.name}
        points = {b for b, unit in r.units.items() if unit == "points"}
        row.update({b.removeprefix("synth-"): round(s if b in points else 100 * s, 1)
                    for b, s in r.scores.items()})
        row["avg"] = _average(r.scores, points)
        if r.untrained_scores:
            row["avg untrained"] = _average(r.untrained_scores, points)
        row["visual tokens"] = r.cost["visual_tokens"]
        row["params (M)"] = round(sum(m["total"] for m in r.cost["parameters"].values()) / 1e6, 2)
        row["fusion params (k)"] = round(r.cost.get("fusion_added_parameters", 0) / 1e3, 1)
        row["GFLOPs/sample"] = round(r.cost["forward_flops_per_sample"] / 1e9, 3)
        speed = r.cost.get("train_samples_per_s", {})
        if speed:
            row["samples/s"] = round(list(speed.values())[-1], 1)   # the last stage's
        row["train s"] = round(r.cost["wall_time_s"], 0)
        rows.append(row)
    index = list(labels[0]) if labels else ["run"]
    return pd.DataFrame(rows).set_index(index)
