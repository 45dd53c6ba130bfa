"""Done runs brought up to date in the records, apart from submitting anything: a done run
scored by other scoring code than today's is scored again from its stored predictions
(harness.evaluation.rescore) and marked unlogged in every store; a done run that this tracking
store lacks (or so marked) is mirrored into it, without any training. `ablate run` does this
before it submits (harness.scheduler.submit); `ablate report` re-scores through `rescore_done`
too and must not load torch (tests/test_architecture.py), so the run directory and MLflow
modules, which do, are imported where they are used."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.record_names import mlflow_name
from harness.evaluation.rescore import Rescored, rescore_finished

if TYPE_CHECKING:
    from harness.scheduler.states import RunView
    from harness.specs import ExperimentSpec, PlannedRun


def rescore_done(run_paths: list[Path]) -> tuple[list[Rescored], list[str]]:
    """The finished runs among `run_paths` whose scoring code changed, scored again; each is
    marked unlogged wherever it was mirrored, so the stores get the new numbers. Returns
    (what was scored again, why each run that could not be was not)."""
    rescored, problems = rescore_finished(run_paths)
    if rescored:
        from harness.runs.rundir import RunDir
        from harness.tracking.mirror import mirror_again
        for path in dict.fromkeys(item.run for item in rescored):   # once each, in order
            mirror_again(RunDir(path))
    return rescored, problems


def unmirrored(done: list[RunView], uri: str) -> list[RunView]:
    """The done runs that the store at `uri` does not hold complete."""
    from harness.tracking.mirror import tracking_record
    return [v for v in done if not tracking_record(v.run_dir).get(uri, {}).get("complete")]


def run_tags(spec: ExperimentSpec, run: PlannedRun, executor: str) -> dict[str, str]:
    """The MLflow tags of a run of `spec`: its spec, executor and axis labels."""
    return {"spec": spec.name, "spec_file": spec.file, "executor": executor,
            **{mlflow_name(f"axis.{k}"): v for k, v in run.labels.items()}}


def open_experiment(uri: str, workdir: Path, name: str) -> str:
    """The id of spec `name`'s MLflow experiment in the store at `uri`, made if missing; a
    SQLite store keeps its artifacts in WORKDIR/mlartifacts."""
    from harness.tracking.store import open_store
    artifacts = workdir / "mlartifacts" if uri.startswith("sqlite:") else None
    return open_store(uri).experiment(name, artifacts)


def mirror_done(done: list[RunView], spec: ExperimentSpec, uri: str, experiment_id: str,
                executor: str) -> list[PlannedRun]:
    """Mirror each done run into the experiment, as its job would have; returns their runs."""
    from harness.tracking.mirror import MlflowMirror
    for v in done:
        MlflowMirror(uri, experiment_id, run_tags(spec, v.run, executor)).finished(
            v.run.config, v.run_dir)
    return [v.run for v in done]
