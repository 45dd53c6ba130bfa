"""Paper-layout tables from the records frame.

Each table is kept twice: `frame`, the numbers (what CSV gets and what tests compare), and
`cells`, the same rows as text for people (mean ± sd, change [interval], ≈ on approximate
paper values, a dash where nothing was measured). Scores are percentages (scorers report
fractions); changes are percentage points against the baseline arm.

- ablation: one row per arm in spec order; the benchmarks, their average, the change of the
  average against the baseline with its paired bootstrap interval, the runs behind the row,
  the cost columns, and the paper's numbers where the spec maps a reference table;
- deltas: every benchmark's change against the baseline, with its interval;
- fusion: where the arms differ in fusion strategy, each strategy's score beside its cost.
The greedy search's tables are in analysis.lineage."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.arms import TableLayout
from analysis.records import Records, display_scale
from analysis.stats import LEVEL, RESAMPLES, Interval, mean_std, paired_bootstrap

DASH = "-"
PM = "±"
APPROX = "≈"


@dataclass
class Table:
    name: str                      # file stem in the report folder
    title: str
    frame: pd.DataFrame            # numbers
    cells: pd.DataFrame            # text, same rows
    notes: list[str] = field(default_factory=list)


# --- formatting -----------------------------------------------------------------------------
def num(x: float, digits: int = 1, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def mean_sd(mean: float, sd: float, digits: int = 1) -> str:
    if sd is None or math.isnan(sd):
        return num(mean, digits)
    return f"{num(mean, digits)} {PM} {num(sd, digits)}"


def change(delta: float, low: float = math.nan, high: float = math.nan) -> str:
    if math.isnan(low):
        return num(delta, signed=True)
    return f"{num(delta, signed=True)} [{num(low, signed=True)}, {num(high, signed=True)}]"


def count(x: float) -> str:
    if x is None or math.isnan(x):
        return DASH
    return f"{int(round(x)):,}"


# --- per arm ----------------------------------------------------------------------------------
@dataclass
class ArmStats:
    arm: str
    runs: pd.DataFrame                    # every run of the arm
    done: pd.DataFrame                    # its finished runs
    scores: dict[str, tuple[float, float]]   # benchmark -> (mean, sd) in %
    avg: tuple[float, float]
    cost: dict[str, float]


def _arm_stats(records: Records, arm: str, benchmarks: list[str]) -> ArmStats:
    frame = records.runs
    runs = frame[frame["arm"] == arm]
    done = runs[runs["state"] == "DONE"]
    heads = [records.headline(b) for b in benchmarks]
    cols = [h[0] if h else None for h in heads]
    scores = {b: mean_std((display_scale(h[1]) * done[h[0]]).dropna().tolist() if h
                          else []) for b, h in zip(benchmarks, heads)}
    per_run = []
    # the average is over % benchmarks: a 0-2000 MME score would swamp it
    percent = [h[0] for h in heads if h is not None and display_scale(h[1]) == 100.0]
    if len(done) and all(c is not None for c in cols) and percent:
        per_run = (100 * done[percent]).dropna().mean(axis=1).tolist()
    cost = {}
    for name, col, scale in (("visual tokens", "cost/visual_tokens", 1),
                             ("params (M)", "cost/params_total", 1e-6),
                             ("trainable (M)", "cost/params_trainable", 1e-6),
                             ("fusion params (k)", "cost/fusion_params", 1e-3),
                             ("GFLOPs/sample", "cost/flops_per_sample", 1e-9),
                             ("train samples/s", "cost/train_samples_per_s", 1),
                             ("peak memory (MB)", "cost/peak_memory_mb", 1),
                             *ROUTING_COLUMNS):
        values = done[col].dropna() if col in done else pd.Series(dtype=float)
        cost[name] = float(values.mean() * scale) if len(values) else math.nan
    return ArmStats(arm, runs, done, scores, mean_std(per_run), cost)


# MoVA's LLM router (router: llm): what its pass before each answer costs, and how often it
# names exactly the experts the held-out routing labels list; shown when an arm routes so
ROUTING_COLUMNS = (("routing GFLOPs/q", "cost/routing_flops_per_question", 1e-9),
                   ("router exact (%)", "routing/exact_match", 100))


def _question_means(records: Records, keys: list[str], benchmark: str) -> pd.Series:
    """question id -> score in %, averaged over the given runs (an arm's seeds)."""
    q = records.questions
    q = q[(q["benchmark"] == benchmark) & q["key"].isin(keys)]
    return 100 * q.groupby("question")["score"].mean()


def paired_changes(records: Records, arm: ArmStats, base: ArmStats, benchmarks: list[str]
                   ) -> dict[str, np.ndarray]:
    """benchmark -> per-question (arm - baseline) on the questions both answered."""
    out = {}
    arm_keys, base_keys = arm.done["key"].tolist(), base.done["key"].tolist()
    if not arm_keys or not base_keys:
        return out
    for b in benchmarks:
        ours, theirs = _question_means(records, arm_keys, b), _question_means(records,
                                                                              base_keys, b)
        both = ours.index.intersection(theirs.index)
        if len(both):
            out[b] = (ours[both] - theirs[both]).to_numpy()
    return out


def _interval(changes: dict[str, np.ndarray], benchmarks: list[str]) -> Interval | None:
    if not benchmarks or any(b not in changes for b in benchmarks):
        return None
    return paired_bootstrap({b: changes[b] for b in benchmarks})


# --- tables -----------------------------------------------------------------------------------
def _index(frame: pd.DataFrame, layout: TableLayout) -> pd.Index:
    if len(layout.arm_axes) <= 1:
        return pd.Index(layout.arms, name=layout.arm_axes[0] if layout.arm_axes else "arm")
    firsts = [frame[frame["arm"] == a].iloc[0] for a in layout.arms]
    return pd.MultiIndex.from_tuples([tuple(str(r[x]) for x in layout.arm_axes)
                                      for r in firsts], names=layout.arm_axes)


def _runs_cell(stats: ArmStats) -> str:
    text = f"{len(stats.done)}/{len(stats.runs)}"
    others = Counter(s for s in stats.runs["state"] if s != "DONE")
    if others:
        text += " (" + ", ".join(f"{n} {s.lower() if s != 'NEW' else 'not run'}"
                                 for s, n in others.items()) + ")"
    return text


def status_notes(frame: pd.DataFrame) -> list[str]:
    """Plain words on what is missing: how many runs finished, and why the others did not."""
    total, done = len(frame), int((frame["state"] == "DONE").sum())
    if done == total:
        return []
    states = Counter(frame.loc[frame["state"] != "DONE", "state"])
    words = {"NEW": "not run yet", "RUNNING": "running", "FAILED": "failed",
             "INTERRUPTED": "interrupted"}
    notes = [("No run has finished: " if done == 0 else f"Only {done} of {total} runs have "
              "finished: ") + ", ".join(f"{n} {words.get(s, s.lower())}"
                                        for s, n in states.items())
             + ". Rows without a finished run show a dash."]
    for _, r in frame[frame["state"].isin(["FAILED", "INTERRUPTED"])].iterrows():
        reason = (r["reason"] or "no reason recorded").strip().splitlines()[-1][:200]
        notes.append(f"{r['state']}: {r['run']} (run {r['key']}): {reason}")
    return notes


def ablation_tables(records: Records, layout: TableLayout, title: str) -> list[Table]:
    """The ablation table, and the per-benchmark changes when questions can be paired."""
    frame = records.runs
    stats = {a: _arm_stats(records, a, layout.benchmarks) for a in layout.arms}
    base = stats[layout.baseline]
    seeds = max((len(s.done) for s in stats.values()), default=0) > 1
    rows, cells, delta_rows, delta_cells = [], [], [], []
    n_questions = 0
    ref = layout.reference
    paired_to: dict[str, str] = {ours: paper for paper, ours in (ref.columns if ref else [])
                                 if ours}
    routed = any(not math.isnan(stats[a].cost[name]) for a in layout.arms
                 for name, _, _ in ROUTING_COLUMNS)
    for arm in layout.arms:
        s = stats[arm]
        row, cell = {}, {}
        changes = paired_changes(records, s, base, layout.benchmarks) if arm != base.arm \
            else {}
        for b in layout.benchmarks:
            m, sd = s.scores[b]
            row[b] = m
            cell[b] = mean_sd(m, sd)
            if seeds:
                row[f"{b} sd"] = sd
            if b in paired_to:
                value = ref.value(arm, paired_to[b])
                row[f"{b} (paper)"] = value.value if value else math.nan
                cell[f"{b} (paper)"] = _paper_cell(value)
        row["avg"], cell["avg"] = s.avg[0], mean_sd(*s.avg)
        if seeds:
            row["avg sd"] = s.avg[1]
        delta = s.avg[0] - base.avg[0]
        interval = _interval(changes, layout.benchmarks)
        row["change"] = delta
        row["change low"] = interval.low if interval else math.nan
        row["change high"] = interval.high if interval else math.nan
        if arm == base.arm:
            cell["change"] = "baseline"
        else:
            cell["change"] = change(delta, row["change low"], row["change high"])
        if interval:
            n_questions = max(n_questions, interval.questions)
        row["runs"] = len(s.done)
        cell["runs"] = _runs_cell(s)
        for name in ("visual tokens", "params (M)", "trainable (M)", "GFLOPs/sample",
                     "train samples/s"):
            row[name] = s.cost[name]
            cell[name] = count(s.cost[name]) if name == "visual tokens" else \
                num(s.cost[name], 2 if name != "train samples/s" else 1)
        for name, _, _ in ROUTING_COLUMNS if routed else ():
            row[name], cell[name] = s.cost[name], num(s.cost[name], 2)
        if ref:
            for paper, ours in ref.columns:
                if ours is None:
                    value = ref.value(arm, paper)
                    row[f"paper {paper}"] = value.value if value else math.nan
                    cell[f"paper {paper}"] = _paper_cell(value)
        rows.append(row)
        cells.append(cell)
        if arm != base.arm:
            drow, dcell = {}, {}
            for b in layout.benchmarks:
                d = s.scores[b][0] - base.scores[b][0]
                iv = paired_bootstrap({b: changes[b]}) if b in changes else None
                drow[b] = d
                drow[f"{b} low"] = iv.low if iv else math.nan
                drow[f"{b} high"] = iv.high if iv else math.nan
                dcell[b] = change(d, drow[f"{b} low"], drow[f"{b} high"])
            delta_rows.append(drow)
            delta_cells.append(dcell)
    index = _index(frame, layout)
    table = Table("ablation", title, pd.DataFrame(rows, index=index),
                  pd.DataFrame(cells, index=index))
    table.notes = (status_notes(frame) + _ablation_notes(layout, seeds, n_questions)
                   + protocol_notes(records, layout.benchmarks))
    if routed:
        table.notes.append("routing GFLOPs/q: the LLM router's pass before each answer "
                           "(FlopCounterMode, first batch); router exact: its choice equals "
                           "the held-out routing labels, in % of the labeled questions.")
    out = [table]
    if not len(base.done):
        table.notes.append(f"The baseline '{layout.baseline}' has no finished run, so no "
                           "change is computed.")
    others_done = any(len(stats[a].done) for a in layout.arms if a != base.arm)
    if delta_rows and len(base.done) and others_done and not records.questions.empty:
        others = index[[a != layout.baseline for a in layout.arms]]
        out.append(Table("deltas", f"{title}: change of each benchmark against "
                                   f"{layout.baseline}", pd.DataFrame(delta_rows, index=others),
                         pd.DataFrame(delta_cells, index=others),
                         [f"Percentage points against the baseline '{layout.baseline}'; "
                          f"[low, high]: the {LEVEL:.0%} paired bootstrap interval over the "
                          "questions both arms answered."]))
    fusion = fusion_table(frame, layout, table, stats)
    if fusion is not None:
        out.append(fusion)
    return out


def protocol_notes(records: Records, benchmarks: list[str]) -> list[str]:
    """How each benchmark's headline was computed, as the runs recorded it (the benchmark
    registry's protocol): one line per benchmark, naming every protocol where runs differ
    (runs scored before protocols were recorded say so)."""
    notes = []
    for bench in benchmarks:
        counts = records.protocols.get(bench)
        if not counts:
            continue
        named = {p or "not recorded (scored before runs recorded their protocol)": n
                 for p, n in counts.items()}
        if len(named) == 1:
            notes.append(f"Protocol, {bench}: {next(iter(named))}.")
        else:
            notes.append(f"Protocol, {bench}: its runs were scored under {len(named)} "
                         "protocols, so its numbers are not comparable: " + "; ".join(
                             f"{p} ({n} run{'s' if n > 1 else ''})" for p, n in named.items())
                         + ".")
    return notes


def _paper_cell(value) -> str:
    if value is None:
        return DASH
    text = f"{value.value:g}"
    return APPROX + text if value.approximate else text


def _ablation_notes(layout: TableLayout, seeds: bool, n_questions: int) -> list[str]:
    notes = ["Scores: each benchmark's headline metric (MME perception and OCRBench in their "
             "published points, the rest in %: POPE mean F1, DocVQA ANLS, ChartQA relaxed "
             "accuracy, else accuracy); avg: the mean of the % scores; change: avg minus the "
             f"baseline '{layout.baseline}', in points."]
    if seeds:
        notes.append(f"{PM}: sample standard deviation over seeds.")
    if n_questions:
        notes.append(f"[low, high]: {LEVEL:.0%} paired bootstrap interval of the change over "
                     f"the same {n_questions} questions ({RESAMPLES:,} resamples, each "
                     "benchmark resampled within itself, seeds averaged per question).")
    ref = layout.reference
    if ref:
        notes.append(f"Paper: {ref.title} (source: {ref.table.source}).")
        notes.append(f"Paper's evaluation: {ref.table.toolkit}." if ref.table.toolkit else
                     "Paper's evaluation: not stated by the source, so its numbers may come "
                     "from other scoring code than ours.")
        cells = [ref.value(a, p) for a in ref.rows for p, _ in ref.columns]
        if any(c is not None and c.approximate for c in cells):
            notes.append(f"{APPROX}: approximate paper value (read off a figure or a summary, "
                         "as the source says); not the paper's exact number.")
        unmapped = [a for a in layout.arms if a not in ref.rows]
        if unmapped:
            notes.append("No paper row for: " + ", ".join(unmapped) + ".")
    return notes


def fusion_table(frame: pd.DataFrame, layout: TableLayout, ablation: Table,
                 stats: dict[str, ArmStats]) -> Table | None:
    """Fusion strategies side by side with their cost, where the arms differ in fusion."""
    col = "param/model.fusion.id"
    if col not in frame:
        return None
    by_arm = {a: frame.loc[(frame["arm"] == a), col].dropna() for a in layout.arms}
    fusions = {a: (v.iloc[0] if len(v) else None) for a, v in by_arm.items()}
    if len({f for f in fusions.values() if f is not None}) < 2:
        return None
    src = ablation.frame
    numbers = pd.DataFrame({
        "fusion": [fusions[a] for a in layout.arms],
        "avg": src["avg"].to_numpy(), "change": src["change"].to_numpy(),
        "visual tokens": src["visual tokens"].to_numpy(),
        "fusion params (k)": [stats[a].cost["fusion params (k)"] for a in layout.arms],
        "GFLOPs/sample": src["GFLOPs/sample"].to_numpy(),
        "train samples/s": src["train samples/s"].to_numpy(),
        "peak memory (MB)": [stats[a].cost["peak memory (MB)"] for a in layout.arms],
    }, index=src.index)
    cells = pd.DataFrame({
        "fusion": [f or DASH for f in numbers["fusion"]],
        "avg": ablation.cells["avg"], "change": ablation.cells["change"],
        "visual tokens": ablation.cells["visual tokens"],
        "fusion params (k)": [num(x) for x in numbers["fusion params (k)"]],
        "GFLOPs/sample": ablation.cells["GFLOPs/sample"],
        "train samples/s": ablation.cells["train samples/s"],
        "peak memory (MB)": [num(x, 0) for x in numbers["peak memory (MB)"]],
    }, index=src.index)
    return Table("fusion", f"{ablation.title}: fusion strategies and their cost", numbers,
                 cells, ["fusion params: parameters the fusion adds; GFLOPs: one training "
                         "forward of one sample (torch FlopCounterMode); train samples/s: "
                         "the last stage's training throughput on the run's device."])

