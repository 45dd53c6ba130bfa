"""A spec's run records as one tidy pandas frame: one row per run, with its axis labels, seed,
state, every benchmark metric, the cost columns and the flattened config, types restored;
plus a long frame of per-question scores for paired statistics.

Two sources give the same frame: the run directories (the source of truth) and MLflow (what a
shared tracking server holds). Both are reduced to the same raw record (strings for params, as
MLflow keeps them), and one function restores the types, so neither source is special.

Columns:
    run, key, arm                   the run's name, key and table row (analysis.arms)
    state, reason                   DONE/FAILED/INTERRUPTED/RUNNING/NEW, and why
    <axis>                          one per spec axis (and `variant`), the value's label
    seed                            the run's seed
    <benchmark>/<metric>            as the scorer reports it (fractions in [0, 1]); which of
                                    them is the benchmark's headline, and its unit, is in
                                    Records.headlines, read from the runs' own records, and
                                    the protocol each run's headline was computed by in
                                    Records.protocols
    cost/<name>                     visual_tokens, params_total, params_trainable,
                                    fusion_params, flops_per_sample, train_samples_per_s (the
                                    last stage's), peak_memory_mb, wall_time_s,
                                    routing_s_per_question, routing_flops_per_question
                                    (an LLM router's pass)
    routing/<metric>                an LLM router against the held-out routing labels
    param/<config path>             the resolved config, flattened as in MLflow
"""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.record_names import HEADLINE_TAG, flatten, mlflow_name

QUESTION_COLUMNS = ["key", "benchmark", "question", "score"]
MLFLOW_STATES = {"FINISHED": "DONE", "RUNNING": "RUNNING", "SCHEDULED": "RUNNING",
                 "FAILED": "FAILED", "KILLED": "INTERRUPTED"}
_INT = re.compile(r"-?\d+")
HEADLINE_FIELDS = ("metric", "unit", "protocol")   # what a table needs of a headline record
_FLOAT = re.compile(r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?|-?inf|nan")


@dataclass(frozen=True)
class RunRef:
    """What the report knows of a run before reading its records: the spec's view of it."""
    key: str
    name: str
    labels: dict[str, str]
    arm: str = "all"        # the table row it belongs to (analysis.arms)


@dataclass
class RawRecord:
    """One run as either source holds it, before types are restored."""
    state: str = "NEW"
    reason: str = ""
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    questions: list[tuple[str, str, float]] = field(default_factory=list)
    # bench -> metric, unit and, where the run recorded it, protocol
    headlines: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Records:
    runs: pd.DataFrame          # one row per run, spec order
    questions: pd.DataFrame     # key, benchmark, question, score
    source: str                 # where they were read, for the report's header
    headlines: dict[str, dict[str, str]] = field(default_factory=dict)  # bench -> metric, unit
    # bench -> protocol -> how many finished runs state it ("": runs scored before
    # protocols were recorded)
    protocols: dict[str, dict[str, int]] = field(default_factory=dict)

    def headline(self, benchmark: str) -> tuple[str, str] | None:
        """(column, unit) of the number a table shows for `benchmark`, as the runs recorded
        it; None when no finished run scored it."""
        h = self.headlines.get(benchmark)
        if h is None or f"{benchmark}/{h['metric']}" not in self.runs.columns:
            return None
        return f"{benchmark}/{h['metric']}", h["unit"]


def restore(text: Any) -> Any:
    """A value MLflow returned as a string, back to what it was: bool, None, int, float or
    the string itself (lists stay the JSON text they were logged as)."""
    if not isinstance(text, str):
        return text
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def restore_column(values: pd.Series) -> pd.Series:
    """Axis labels are strings; a column whose every label is a number (a learning rate, a
    resolution, a seed) or a bool becomes that type, a mixed one stays text."""
    restored = [restore(v) for v in values]
    present = [v for v in restored if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pd.Series(restored, index=values.index, dtype=object)
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       for v in present):
        return pd.Series(restored, index=values.index)
    return values


def _cost(parameters: dict[str, dict[str, float]], flat: dict[str, float],
          samples_per_s: float | None) -> dict[str, float]:
    out = {"visual_tokens": flat.get("visual_tokens"),
           "params_total": sum(c["total"] for c in parameters.values()) if parameters else None,
           "params_trainable": (sum(c["trainable"] for c in parameters.values())
                                if parameters else None),
           "fusion_params": flat.get("fusion_added_parameters"),
           "flops_per_sample": flat.get("forward_flops_per_sample"),
           "train_samples_per_s": samples_per_s,
           "peak_memory_mb": flat.get("peak_memory_mb"),
           "wall_time_s": flat.get("wall_time_s"),
           # MoVA's LLM router: its pass before each answer
           "routing_s_per_question": flat.get("routing_s_per_question"),
           "routing_flops_per_question": flat.get("routing_flops_per_question")}
    return {k: v for k, v in out.items() if v is not None}


# --- run directories ------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _questions(per_question: dict | None, predictions: list[dict]) -> list[tuple]:
    """(benchmark, question id, score): per_question.json holds {question: score} per
    benchmark; a run scored before it did holds a list in the order the predictions were
    written, whose ids then come from predictions.jsonl."""
    if not per_question:
        return []
    ids: dict[str, list[str]] = {}
    for p in predictions:
        ids.setdefault(p["benchmark"], []).append(str(p["id"]))
    out = []
    for bench, scores in per_question.items():
        if isinstance(scores, dict):
            out.extend((bench, str(q), float(s)) for q, s in scores.items())
            continue
        names = ids.get(bench)
        if names is None or len(names) != len(scores):
            continue   # ids unknown: no pairing possible for this benchmark
        out.extend((bench, q, float(s)) for q, s in zip(names, scores))
    return out


def _read_predictions(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError):
        return []


def run_dir_record(path: Path) -> RawRecord:
    status = _read_json(path / "status.json")
    if status is None:
        return RawRecord()
    rec = RawRecord(state=status.get("state", "NEW"), reason=status.get("reason", ""))
    config = _read_json(path / "config.json")
    if config:
        rec.params = flatten(config)
    if rec.state != "DONE":
        return rec
    rec.metrics = _read_json(path / "metrics.json") or {}
    routing = _read_json(path / "routing.json")
    if routing:   # an LLM router's accuracy: routing/<metric>, as MLflow holds it
        rec.metrics["routing"] = {k: v for k, v in routing.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
    rec.headlines = {b: {k: h[k] for k in HEADLINE_FIELDS if k in h}
                     for b, h in (_read_json(path / "scores.json") or {}).items()}
    cost = _read_json(path / "cost.json") or {}
    speeds = list((cost.get("train_samples_per_s") or {}).values())
    rec.cost = _cost(cost.get("parameters") or {}, cost, speeds[-1] if speeds else None)
    rec.questions = _questions(_read_json(path / "per_question.json"),
                               _read_predictions(path / "predictions.jsonl"))
    return rec


def from_run_dirs(runs: list[RunRef], workdir: Path) -> Records:
    raws = {r.key: run_dir_record(Path(workdir) / "runs" / r.key) for r in runs}
    return assemble(runs, raws, f"run directories under {Path(workdir).resolve() / 'runs'}")


# --- MLflow -----------------------------------------------------------------------------------
def _mlflow_record(client, run, last_stage: str | None) -> RawRecord:
    tags, data = run.data.tags, run.data
    # a requeued run is RUNNING again while its tags still hold the last attempt's end
    state = (MLFLOW_STATES["RUNNING"] if run.info.status == "RUNNING" else
             tags.get("state") or MLFLOW_STATES.get(run.info.status, run.info.status))
    rec = RawRecord(state=state, reason=tags.get("reason", ""), params=dict(data.params))
    if state != "DONE":
        return rec
    rec.headlines = {name.removeprefix(HEADLINE_TAG): json.loads(value)
                     for name, value in tags.items() if name.startswith(HEADLINE_TAG)}
    parameters: dict[str, dict[str, float]] = {}
    flat: dict[str, float] = {}
    speeds: dict[str, float] = {}
    for name, value in data.metrics.items():
        head, _, rest = name.partition("/")
        if head in ("train", "untrained", "average"):
            continue
        if head != "cost":
            rec.metrics.setdefault(head, {})[rest] = value
        elif rest.startswith("params/"):
            module, _, kind = rest.removeprefix("params/").rpartition("/")
            parameters.setdefault(module, {})[kind] = value
        elif rest.startswith("train_samples_per_s/"):
            speeds[rest.removeprefix("train_samples_per_s/")] = value
        else:
            flat[rest] = value
    stage = mlflow_name(last_stage) if last_stage else None
    rec.cost = _cost(parameters, flat, speeds.get(stage) if stage else None)
    with tempfile.TemporaryDirectory() as tmp:
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        if {"per_question.json", "predictions.jsonl"} <= files:
            per_q = Path(client.download_artifacts(run.info.run_id, "per_question.json", tmp))
            preds = Path(client.download_artifacts(run.info.run_id, "predictions.jsonl", tmp))
            rec.questions = _questions(_read_json(per_q), _read_predictions(preds))
    return rec


def _last_stage(params: dict[str, str]) -> str | None:
    stages = [(int(m.group(1)), v) for k, v in params.items()
              if (m := re.fullmatch(r"stages\.(\d+)\.name", k))]
    return max(stages)[1] if stages else None


def from_mlflow(runs: list[RunRef], uri: str, experiment: str) -> Records:
    """The spec's experiment in an MLflow store; a run key logged twice (it should not be)
    is read from its latest MLflow run."""
    from mlflow.tracking import MlflowClient

    from core.record_names import quiet
    quiet()
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    found: dict[str, Any] = {}
    if exp is not None:
        page = None
        while True:
            batch = client.search_runs([exp.experiment_id], max_results=1000, page_token=page,
                                       order_by=["attributes.start_time ASC"])
            for run in batch:
                key = run.data.tags.get("run_key")
                if key:
                    found[key] = run
            page = batch.token
            if not page:
                break
    wanted = {r.key for r in runs}
    raws = {key: _mlflow_record(client, run, _last_stage(run.data.params))
            for key, run in found.items() if key in wanted}
    return assemble(runs, raws, f"MLflow {uri}, experiment '{experiment}'")


# --- one frame ------------------------------------------------------------------------------
def assemble(runs: list[RunRef], raws: dict[str, RawRecord], source: str) -> Records:
    rows, questions = [], []
    headlines: dict[str, dict[str, str]] = {}
    protocols: dict[str, dict[str, int]] = {}
    for ref in runs:
        raw = raws.get(ref.key, RawRecord())
        for bench, h in raw.headlines.items():
            headlines.setdefault(bench, {"metric": h["metric"], "unit": h["unit"]})
            counts = protocols.setdefault(bench, {})
            counts[h.get("protocol", "")] = counts.get(h.get("protocol", ""), 0) + 1
        row: dict[str, Any] = {"run": ref.name, "key": ref.key, "arm": ref.arm,
                               "state": raw.state, "reason": raw.reason}
        row.update(ref.labels)
        row["seed"] = restore(raw.params.get("seed"))
        for bench, metrics in raw.metrics.items():
            for metric, value in metrics.items():
                row[f"{bench}/{metric}"] = float(value)
        row.update({f"cost/{k}": float(v) for k, v in raw.cost.items()})
        row.update({f"param/{k}": restore(v) for k, v in raw.params.items()})
        rows.append(row)
        questions.extend((ref.key, b, q, s) for b, q, s in raw.questions)
    frame = pd.DataFrame(rows)
    for axis in {k for r in runs for k in r.labels}:
        if axis in frame:
            frame[axis] = restore_column(frame[axis])
    for col in frame.columns:
        if "/" in col and not col.startswith("param/"):     # metrics and cost
            frame[col] = pd.to_numeric(frame[col])
    return Records(frame, pd.DataFrame(questions, columns=QUESTION_COLUMNS), source, headlines,
                   protocols)


def display_scale(unit: str) -> float:
    """Fractions print as %, `points` on their published scale (MME 0-2000)."""
    return 1.0 if unit == "points" else 100.0
