"""Mirrors one run directory into one MLflow run: params (the flattened resolved config),
tags (spec, axis values, run key, stage keys and whether each was reused, job id), metrics
(per benchmark, cost, and the per-step training curves of every stage) and artifacts
(resolved config, predictions, metrics, cost).

It is the pipeline's hook, called with the run's lock held. Which MLflow run belongs to the
harness run is kept in the run directory (tracking.json, per tracking URI), so a requeued or
re-run job continues the same MLflow run instead of creating a second one, and a finished run
is logged once. A finished run scored again (harness.evaluation.rescore) is marked unlogged in
every store it was logged to, so each gets the new numbers the next time it is mirrored."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from core.record_names import HEADLINE_TAG, flatten, mlflow_name
from harness.config.run_config import RunConfig
from harness.evaluation.passes import PASSES
from harness.evaluation.scores import average, read_scores
from harness.runs.pipeline import RunHooks
from harness.runs.rundir import RunDir
from harness.runs.stages import stage_label
from harness.tracking.store import open_store, retry

# each pass before answering's record of its decisions (MoVA's LLM router: routing.json)
PASS_RECORDS = tuple(e.builder.record for e in PASSES.entries())
ARTIFACTS = ("config.yaml", "metrics.json", "cost.json", "stages.json", "predictions.jsonl",
             "per_question.json", "metrics_untrained.json", "predictions_untrained.jsonl",
             *(f"{record}.json" for record in PASS_RECORDS))
# what the headline tag holds of scores.json's record: all but the value (a metric)
HEADLINE_FIELDS = ("metric", "unit", "protocol", "revision")
MLFLOW_STATE = {"FAILED": "FAILED", "INTERRUPTED": "KILLED", "PAUSED": "KILLED"}


def tracking_record(run_dir: RunDir) -> dict:
    """tracking URI -> {run_id, experiment_id, params, complete, metrics} for this run."""
    f = run_dir.path / "tracking.json"
    return json.loads(f.read_text()) if f.exists() else {}


def mirror_again(run_dir: RunDir) -> None:
    """Mark the run as not yet logged in every store it was logged to: its numbers changed
    (scored again), and `finished` logs a run once."""
    record = tracking_record(run_dir)
    if record:
        run_dir.write_json("tracking.json", {uri: {**entry, "complete": False}
                                             for uri, entry in record.items()})


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]


class MlflowMirror(RunHooks):
    def __init__(self, uri: str, experiment_id: str, tags: dict[str, str]):
        self.uri, self.experiment_id, self.tags = uri, experiment_id, dict(tags)
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = open_store(self.uri).client
        return self._client

    # bookkeeping in the run directory --------------------------------------------------------
    def _save(self, run_dir: RunDir, entry: dict) -> None:
        record = tracking_record(run_dir)
        record[self.uri] = entry
        run_dir.write_json("tracking.json", record)

    def _ensure_run(self, cfg: RunConfig, run_dir: RunDir) -> dict:
        from mlflow.entities import Param, RunTag
        entry = tracking_record(run_dir).get(self.uri)
        if entry is None:
            run = retry(lambda: self.client.create_run(
                self.experiment_id, run_name=cfg.name, tags={"run_key": cfg.key}))
            entry = {"run_id": run.info.run_id, "experiment_id": self.experiment_id,
                     "complete": False}
            self._save(run_dir, entry)
        if not entry.get("params"):
            params = [Param(k[:250], v[:6000]) for k, v in flatten(cfg.to_dict()).items()]
            for chunk in _chunks(params, 100):
                retry(lambda c=chunk: self.client.log_batch(entry["run_id"], params=c))
            entry["params"] = True
            self._save(run_dir, entry)
        tags = {**self.tags, "run_key": cfg.key, "run_dir": str(run_dir.path)}
        retry(lambda: self.client.log_batch(
            entry["run_id"], tags=[RunTag(k, str(v)) for k, v in tags.items()]))
        return entry

    # RunHooks --------------------------------------------------------------------------------
    def started(self, cfg: RunConfig, run_dir: RunDir) -> None:
        entry = self._ensure_run(cfg, run_dir)
        retry(lambda: self.client.update_run(entry["run_id"], status="RUNNING"))

    def stopped(self, cfg: RunConfig, run_dir: RunDir, state: str, reason: str) -> None:
        from mlflow.entities import RunTag
        entry = self._ensure_run(cfg, run_dir)
        retry(lambda: self.client.log_batch(entry["run_id"], tags=[
            RunTag("state", state), RunTag("reason", reason[:5000])]))
        retry(lambda: self.client.set_terminated(entry["run_id"], MLFLOW_STATE[state]))

    def rescored(self, cfg: RunConfig, run_dir: RunDir, what: list) -> None:
        mirror_again(run_dir)   # `finished`, called next, logs the new numbers

    def finished(self, cfg: RunConfig, run_dir: RunDir) -> None:
        entry = tracking_record(run_dir).get(self.uri)
        if entry and entry.get("complete"):
            return
        entry = self._ensure_run(cfg, run_dir)
        run_id = entry["run_id"]
        metrics, tags = self._metrics(run_dir)
        from mlflow.entities import RunTag
        for chunk in _chunks(metrics, 1000):
            retry(lambda c=chunk: self.client.log_batch(run_id, metrics=c))
        retry(lambda: self.client.log_batch(run_id, tags=[
            RunTag(k, v) for k, v in {**tags, "state": "DONE"}.items()]))
        for name in ARTIFACTS:
            if (run_dir.path / name).exists():
                retry(lambda n=name: self.client.log_artifact(run_id, str(run_dir.path / n)))
        retry(lambda: self.client.set_terminated(run_id, "FINISHED"))
        entry["complete"] = True
        entry["metrics"] = len(metrics)
        self._save(run_dir, entry)

    @staticmethod
    def _metrics(run_dir: RunDir) -> tuple[list, dict[str, str]]:
        """Everything numeric the run directory holds, as MLflow metrics, plus stage tags."""
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        out: list = []

        def add(key: str, value: Any, step: int = 0) -> None:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append(Metric(mlflow_name(key), float(value), now, step))

        for tag, fname in (("", "metrics.json"), ("untrained/", "metrics_untrained.json")):
            path = run_dir.path / fname
            if path.exists():
                scores = json.loads(path.read_text())
                for bench, values in scores.items():
                    for name, value in values.items():
                        add(f"{tag}{bench}/{name}", value)
                heads = read_scores(run_dir.path, fname.removeprefix("metrics")
                                    .removesuffix(".json"))
                if heads and average(heads) is not None:
                    add(f"{tag}average/headline", average(heads))
        for record in PASS_RECORDS:   # a pass before answering judged (an LLM router's accuracy)
            if (run_dir.path / f"{record}.json").exists():
                for name, value in run_dir.read_json(f"{record}.json").items():
                    add(f"{record}/{name}", value)
        cost = run_dir.read_json("cost.json")
        for module, counts in cost.pop("parameters").items():
            add(f"cost/params/{module}/total", counts["total"])
            add(f"cost/params/{module}/trainable", counts["trainable"])
        for key, value in cost.items():
            if isinstance(value, dict):   # per stage: step_time_s, train_samples_per_s
                for stage, number in value.items():
                    add(f"cost/{key}/{stage}", number)
            else:
                add(f"cost/{key}", value)
        tags: dict[str, str] = {
            f"{HEADLINE_TAG}{bench}": json.dumps({k: h[k] for k in HEADLINE_FIELDS if k in h})
            for bench, h in (read_scores(run_dir.path) or {}).items()}
        for stage in run_dir.read_json("stages.json"):
            label = stage_label(stage)
            label = mlflow_name(label)
            tags[f"stage.{label}.key"] = stage["key"]
            tags[f"stage.{label}.reused"] = str(stage["reused"]).lower()
            trained_by = RunDir(Path(stage["dir"])).read_json("stage.json").get("run")
            tags[f"stage.{label}.trained_by"] = str(trained_by)
            for rec in RunDir(Path(stage["dir"])).metrics_log():
                if "loss" in rec and "step" in rec:
                    add(f"train/{label}/loss", rec["loss"], rec["step"])
                    add(f"train/{label}/lr", rec["lr"], rec["step"])
        return out, tags
