"""The greedy expert-addition search's tables, from the round records it writes
(WORKDIR/searches/NAME/round-N.json): the lineage (the chosen path, one row per added expert)
and one candidate table per round (every arm tried, its gain, whether it was added).
Benchmarks are normalized to 0-100 as the search spec's objective defines; the objective is
their weighted mean."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from analysis.tables import DASH, Table, mean_sd, num

_ROUND = re.compile(r"round-(\d+)\.json")


def load_rounds(folder: Path) -> list[dict]:
    """The round records in order; a missing folder (no round finished yet) gives none."""
    files = sorted(((int(m.group(1)), p) for p in Path(folder).glob("round-*.json")
                    if (m := _ROUND.fullmatch(p.name))), key=lambda x: x[0])
    return [json.loads(p.read_text()) for _, p in files]


def _std(arm: dict) -> float:
    return arm["std"] if len(arm["runs"]) > 1 else math.nan


def _tuned(arm: dict) -> dict:
    t = arm.get("tuning")
    return {t["path"]: t["value"]} if t else {}


def chosen_path(rounds: list[dict]) -> list[tuple[int, dict]]:
    """(round, arm) for the start set and each round's added candidate."""
    path = [(0, rounds[0]["current"])] if rounds else []
    for r in rounds:
        if r["chosen"]:
            path.append((r["round"], next(c for c in r["candidates"]
                                          if c["added"] == r["chosen"])))
    return path


def lineage_frame(rounds: list[dict]) -> pd.DataFrame:
    """One row per step of the chosen path: round, expert set, expert added, each benchmark
    (normalized mean over seeds), the objective, its spread and its change."""
    if not rounds:
        return pd.DataFrame()
    rows, previous = [], None
    for number, arm in chosen_path(rounds):
        row = {"round": number, "experts": " + ".join(arm["experts"]),
               "added": arm["added"] or "(start)", **arm["benchmarks"],
               "objective": arm["mean"], "std": arm["std"],
               "change": math.nan if previous is None else arm["mean"] - previous, **_tuned(arm)}
        rows.append(row)
        previous = arm["mean"]
    return pd.DataFrame(rows)


def candidate_frame(rounds: list[dict]) -> pd.DataFrame:
    """Every candidate of every round: benchmarks, objective mean and spread over seeds, gain
    over the round's current set, and whether it was added."""
    rows = []
    for r in rounds:
        for c in r["candidates"]:
            rows.append({"round": r["round"], "candidate": c["added"],
                         "experts": " + ".join(c["experts"]), **c["benchmarks"],
                         "objective": c["mean"], "std": c["std"], "seeds": len(c["runs"]),
                         "gain": c["mean"] - r["current"]["mean"],
                         "added": c["added"] == r["chosen"], **_tuned(c),
                         **({"halving": _halving_cell(c)} if "halving" in r else {})})
    return pd.DataFrame(rows)


def _halving_cell(arm: dict) -> str:
    """What successive halving did with a candidate: where it stopped and by how much it
    trailed the cut on the selection split, or how far it went."""
    stop = arm.get("stopped")
    if stop:
        behind = f", {stop['behind']:.1f} behind" if stop.get("behind") is not None else ""
        return (f"stopped at rung {stop['rung']} (step {stop['step']}/{stop['total']}: "
                f"{stop['objective']:.1f}{behind})")
    reached = arm.get("rungs") or []
    return f"kept at {len(reached)} rung{'s' * (len(reached) != 1)}" if reached else ""


def halving_notes(r: dict) -> list[str]:
    """The round's rung decisions, and which split they were made on."""
    h = r.get("halving")
    if not h:
        return []
    notes = [f"Rung decisions read the {h['selection']}; the round's choice reads the "
             "reported benchmarks. A stopped candidate was not trained to the end."]
    for g in h["rungs"]:
        if g.get("skipped"):
            notes.append(f"Rung {g['rung']} ({g['fraction']:g}): skipped, {g['skipped']}.")
        else:
            notes.append(f"Rung {g['rung']} ({g['fraction']:g}): {g['contenders']} "
                         f"contenders, kept {', '.join(g['kept']) or 'none'}; stopped "
                         f"{', '.join(g['stopped']) or 'none'}.")
    return notes


def _benchmarks(rounds: list[dict]) -> list[str]:
    return list(rounds[0]["current"]["benchmarks"]) if rounds else []


def _tuned_cells(frame: pd.DataFrame, rounds: list[dict]) -> dict[str, list[str]]:
    """The tuned hyperparameter's value per row, where the search tunes one."""
    paths = {a["tuning"]["path"] for r in rounds for a in [r["current"], *r["candidates"]]
             if a.get("tuning")}
    return {p: [DASH if pd.isna(v) else f"{v:.3g}" for v in frame[p]] for p in sorted(paths)
            if p in frame}


def lineage_table(rounds: list[dict], title: str) -> Table:
    frame = lineage_frame(rounds)
    if frame.empty:
        return Table("lineage", title, frame, frame, ["No round of the search has finished."])
    arms = [arm for _, arm in chosen_path(rounds)]
    frame = frame.set_index("round")
    cells = pd.DataFrame({
        "experts": frame["experts"],
        "added": frame["added"],
        **{b: [num(v) for v in frame[b]] for b in _benchmarks(rounds)},
        "objective": [mean_sd(a["mean"], _std(a)) for a in arms],
        "change": [DASH if math.isnan(v) else num(v, signed=True) for v in frame["change"]],
        **_tuned_cells(frame, rounds),
    }, index=frame.index)
    last = rounds[-1]
    notes = ["Benchmarks normalized to 0-100 by the search spec's objective; objective: their "
             "weighted mean (± over seeds where there are several).",
             f"Stopped after round {last['round']}: {last['decision']}"
             if not last["chosen"] else f"Last decision (round {last['round']}): "
             f"{last['decision']}"]
    return Table("lineage", title, frame, cells, notes)


def round_tables(rounds: list[dict], title: str) -> list[Table]:
    frame = candidate_frame(rounds)
    out = []
    for r in rounds:
        part = frame[frame["round"] == r["round"]].drop(columns="round").set_index("candidate")
        cands = r["candidates"]
        cells = pd.DataFrame({
            "experts": part["experts"],
            **{b: [num(v) for v in part[b]] for b in _benchmarks(rounds)},
            "objective": [mean_sd(c["mean"], _std(c)) for c in cands],
            "gain": [num(v, signed=True) for v in part["gain"]],
            "seeds": part["seeds"].astype(str),
            "added": ["yes" if a else "" for a in part["added"]],
            **_tuned_cells(part, rounds),
            **({"halving": part["halving"]} if "halving" in part else {}),
        }, index=part.index)
        current = r["current"]
        out.append(Table(f"round-{r['round']}", f"{title}: round {r['round']} candidates "
                         f"(current set {' + '.join(current['experts'])}, objective "
                         f"{num(current['mean'])})", part, cells,
                         [r["decision"], *halving_notes(r)]))
    return out
