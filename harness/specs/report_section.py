"""A spec's `report` section: which arm is the baseline, which benchmarks are the columns, and
which published table is printed beside ours. Checked when the spec is loaded, so a wrong arm
name or a paper row that does not exist stops `ablate run` before any job starts, not after
the last one finishes.

    report:
      baseline: append                    # an arm's label ("axis=label,..." with several axes)
      benchmarks: [synth-color, synth-text]   # default: every evaluated benchmark
      reference:
        table: ../reference/eagle_ablation_averages.csv   # relative to the spec file
        title: Eagle, fusion ablation     # default: the file's name
        key: row                          # the column that names rows (default: the first)
        rows:                             # arm -> paper row: its key, or column -> value
          append: {table: "fusion (CLIP+ConvNeXt)", row: sequence append}
        columns: {GQA: gqa, Avg: null}    # paper column -> our benchmark, shown side by side
                                          # (null: on its own); default: every numeric column
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from analysis.arms import TableLayout, arm_id, arm_ids
from analysis.reference import ReferenceMap, ReferenceTable
from harness.config.yamlio import Located


@dataclass(frozen=True)
class ReferenceSection:
    table: str
    rows: dict[str, Any]
    title: str | None = None
    key: str | None = None
    columns: dict[str, str | None] = field(default_factory=dict)   # None: shown on its own


@dataclass(frozen=True)
class ReportSection:
    baseline: Any = None
    benchmarks: list[str] | None = None
    reference: ReferenceSection | None = None


def _hint(name: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.5)
    return (f" (did you mean '{close[0]}'?)" if close else "") + "; arms: " + ", ".join(allowed)


def _baseline(value: Any, arm_axes: list[str], arms: list[str], src: Located) -> str:
    if value is None:
        return arms[0]
    if isinstance(value, dict):
        missing = [a for a in arm_axes if a not in value]
        extra = [k for k in value if k not in arm_axes]
        if missing or extra:
            raise src.error("report.baseline", "name the baseline by every arm axis: "
                            + ", ".join(arm_axes))
        value = arm_id({k: str(v) for k, v in value.items()}, arm_axes)
    value = str(value)
    if value not in arms:
        raise src.error("report.baseline", f"no arm '{value}'{_hint(value, arms)}")
    return value


def _reference(section: ReferenceSection, arms: list[str], benchmarks: list[str],
               src: Located) -> ReferenceMap:
    at = "report.reference"
    path = src.resolve(f"{at}.table", section.table)
    if not path.is_file():
        raise src.error(f"{at}.table", f"reference table not found: {path}")
    table = ReferenceTable.load(path)
    key = section.key or table.columns[0]
    if key not in table.columns:
        raise src.error(f"{at}.key", f"the table has no column '{key}'; columns: "
                        + ", ".join(table.columns))
    rows: dict[str, int] = {}
    for arm, selector in section.rows.items():
        where = f"{at}.rows.{arm}"
        if arm not in arms:
            raise src.error(where, f"no arm '{arm}'{_hint(arm, arms)}")
        wanted = selector if isinstance(selector, dict) else {key: selector}
        for column in wanted:
            if column not in table.columns:
                raise src.error(where, f"the table has no column '{column}'; columns: "
                                + ", ".join(table.columns))
        found = table.find(wanted)
        if len(found) != 1:
            values = ", ".join(f"'{r[key]}'" for r in table.rows)
            raise src.error(where, f"{len(found)} rows of {path.name} match {wanted} (need "
                                   f"exactly one); its '{key}' values: {values}")
        rows[arm] = found[0]
    numeric = table.numeric_columns()
    if section.columns:
        columns = []
        for paper, ours in section.columns.items():
            if paper not in numeric:
                raise src.error(f"{at}.columns.{paper}", f"no numeric column '{paper}' in "
                                f"{path.name}; numeric columns: " + ", ".join(numeric))
            if ours is not None and ours not in benchmarks:
                raise src.error(f"{at}.columns.{paper}", f"'{ours}' is not a benchmark of "
                                "this report; benchmarks: " + ", ".join(benchmarks))
            columns.append((paper, ours))
    else:
        columns = [(c, None) for c in numeric]
    return ReferenceMap(table, section.title or path.stem, rows, columns)


def resolve_report(section: ReportSection, src: Located, runs_labels: list[dict[str, str]],
                   arm_axes: list[str], evaluated: list[str]) -> TableLayout:
    arms = arm_ids(runs_labels, arm_axes)
    baseline = _baseline(section.baseline, arm_axes, arms, src)
    benchmarks = evaluated
    if section.benchmarks is not None:
        for i, b in enumerate(section.benchmarks):
            if b not in evaluated:
                raise src.error(f"report.benchmarks[{i}]", f"no run evaluates '{b}'; "
                                "evaluated: " + ", ".join(evaluated))
        benchmarks = list(section.benchmarks)
    reference = (_reference(section.reference, arms, benchmarks, src)
                 if section.reference else None)
    return TableLayout(arm_axes, arms, baseline, benchmarks, reference)
