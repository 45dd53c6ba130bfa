"""An arm is one row of an ablation table: the runs that share every axis label except the
replicate axes (seeds). Its id is the label itself when one axis tells arms apart, else
"axis=label,axis=label", the same text a spec uses to name it (baseline, reference rows)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def arm_id(labels: dict[str, str], arm_axes: list[str]) -> str:
    if not arm_axes:
        return "all"          # a spec without axes (or with seeds only) is one arm
    if len(arm_axes) == 1:
        return str(labels[arm_axes[0]])
    return ",".join(f"{a}={labels[a]}" for a in arm_axes)


def arm_ids(runs_labels: list[dict[str, str]], arm_axes: list[str]) -> list[str]:
    """Arms in the order their first run appears (the spec's order)."""
    seen: dict[str, None] = {}
    for labels in runs_labels:
        seen.setdefault(arm_id(labels, arm_axes))
    return list(seen)


@dataclass(frozen=True)
class TableLayout:
    """How a spec lays out its table (harness.specs.report_section resolves it when the spec loads):
    the axes that tell arms apart (not seeds), the arms in spec order, the baseline arm, the
    benchmark columns, and the published table beside ours (analysis.reference.ReferenceMap)."""
    arm_axes: list[str]
    arms: list[str]
    baseline: str
    benchmarks: list[str]
    reference: Any = None
