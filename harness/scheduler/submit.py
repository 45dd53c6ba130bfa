"""`ablate run`: from a validated spec to submitted jobs. Everything that can be wrong (the
executor's profile, the cluster's partitions, the tracking store) is checked before the first
job is submitted or the first record written. Runs that are done or in flight are skipped;
done runs are brought up to date in the records first (harness.scheduler.backfill: scored
again where the scoring code changed, mirrored into a store that lacks them), without any
training."""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigError
from core.files import try_file_lock
from core.record_names import default_uri
from harness.config.run_config import device_problem
from harness.config.selection import Rung
from harness.evaluation.rescore import Rescored
from harness.scheduler import backfill
from harness.scheduler.executors import Executor, ExecutorOptions, build_executor
from harness.scheduler.job import QueuedJob, RunJob, TrackingTarget
from harness.scheduler.states import IN_FLIGHT, SUBMITTABLE, RunView, view_runs, view_spec
from harness.specs import ExperimentSpec, PlannedRun
from harness.specs.experiment_manifest import record_spec
from harness.specs.lock import check_artifacts
from harness.tracking.store import check_reachable
from harness.training.loop import BatchSplitError, split

ON_THIS_MACHINE = ("inline", "local")   # executors whose jobs run where `ablate` runs


@dataclass
class Submission:
    """What `ablate run` is about to do; `execute` submits the jobs."""
    executor: Executor
    tracking_uri: str
    submitted: list[PlannedRun] = field(default_factory=list)
    done: list[PlannedRun] = field(default_factory=list)
    in_flight: list[PlannedRun] = field(default_factory=list)
    mirrored: list[PlannedRun] = field(default_factory=list)
    rescored: list[Rescored] = field(default_factory=list)
    not_rescored: list[str] = field(default_factory=list)   # why, per run that could not be
    jobs: list[QueuedJob] = field(default_factory=list)

    claims: ExitStack = field(default_factory=ExitStack)   # the submitted runs' claims

    def execute(self) -> None:
        try:
            if self.jobs:
                self.executor.submit(self.jobs)
        finally:
            self.release()

    def release(self) -> None:
        """Let go of the runs' claims: their jobs are recorded (job.json), so another
        submitter sees them in flight from now on."""
        self.claims.close()


def claim(views: list[RunView], workdir: Path) -> tuple[ExitStack, list[RunView],
                                                        list[RunView]]:
    """Take the claim of each run about to be submitted, so that concurrent `ablate run`s of
    overlapping specs submit every run once: a run claimed by another submitter is in flight
    for this one. Claims are flocks, so a submitter that dies lets go of its claims. Once
    claimed, a run is looked at again: another submitter may have recorded its job between
    our first look and our claim. Returns (the claims held, runs to submit, runs now in
    flight or done)."""
    held, todo, elsewhere = ExitStack(), [], []
    for v in views:
        one = ExitStack()
        if one.enter_context(try_file_lock(v.run_dir.claim_path)):
            held.enter_context(one)
            todo.append(v)
        else:
            one.close()
            elsewhere.append(v)
    fresh = view_runs([v.run for v in todo], workdir) if todo else []
    still = [f for f in fresh if f.state in SUBMITTABLE]
    elsewhere += [f for f in fresh if f.state not in SUBMITTABLE]
    return held, still, elsewhere


def preflight(runs: list[PlannedRun], spec_file: str, workdir: Path, executor_name: str,
              max_parallel: int = 1, profile: str | None = None,
              tracking_uri: str | None = None, gpus_per_job: int | None = None
              ) -> tuple[Executor, str]:
    """Every check of a submission that needs no record: the executor and its profile, the
    tracking store, each run's device on this machine and each stage's batch over the job's
    ranks. It writes nothing, so `ablate run` and `ablate search` call it before their first
    write. Returns the executor, fitted to the runs, and the tracking URI."""
    workdir = Path(workdir).resolve()
    executor = build_executor(executor_name, ExecutorOptions(workdir, max_parallel, profile,
                                                             gpus_per_job))
    uri = tracking_uri or default_uri(workdir)
    if tracking_uri:
        check_reachable(uri)
    if executor.name in ON_THIS_MACHINE:   # a Slurm job finds its GPU on its node
        for run in runs:
            problem = device_problem(run.config.device)
            if problem:
                raise ConfigError(f"run {run.name}: {problem}", file=spec_file, field="device")
    executor.place({run.config.device for run in runs})
    ranks = executor.ranks()
    for run in runs:   # one rank was checked with the spec; the job's ranks are known now
        for stage in run.config.stages:
            try:
                split(stage, ranks, run.config.parallel.micro_batch)
            except BatchSplitError as exc:
                raise ConfigError(f"run {run.name} on {executor.describe()}: {exc}",
                                  file=spec_file, field="parallel.micro_batch") from None
    check_artifacts([run.config for run in runs], spec_file)
    return executor, uri


def prepare(spec: ExperimentSpec, workdir: Path, executor_name: str, max_parallel: int = 1,
            profile: str | None = None, tracking_uri: str | None = None,
            record: bool = True, rung: Rung | None = None,
            gpus_per_job: int | None = None) -> Submission:
    """The submission of `spec`'s runs that are not done. `record`: write the spec's manifest
    beside the records (analysis.report_manifest) once every check has passed; a search's round
    batches, which are not specs of their own, pass False. `rung`: every job pauses its run's
    last stage there (successive halving); the caller leaves out runs already scored at it.
    `gpus_per_job`: the local executor's GPUs per job (None: one where runs use a GPU)."""
    workdir = Path(workdir).resolve()
    executor, uri = preflight(spec.runs, spec.file, workdir, executor_name, max_parallel,
                              profile, tracking_uri, gpus_per_job)
    submission = Submission(executor, uri)
    if record:
        record_spec(spec, workdir)
    views = view_spec(spec, workdir, explain=False)
    todo = []
    for v in views:
        if v.state in SUBMITTABLE:
            todo.append(v)
        else:
            (submission.in_flight if v.state in IN_FLIGHT else submission.done).append(v.run)
    finished = [v for v in views if v.state == "DONE"]
    submission.rescored, submission.not_rescored = backfill.rescore_done(
        [v.run_dir.path for v in finished])
    missing = backfill.unmirrored(finished, uri)   # after re-scoring, which unlogs what it scores
    if not todo and not missing:
        return submission
    submission.claims, todo, elsewhere = claim(todo, workdir)
    for v in elsewhere:
        (submission.done if v.state == "DONE" else submission.in_flight).append(v.run)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        experiment_id = backfill.open_experiment(uri, workdir, spec.name)
        submission.mirrored = backfill.mirror_done(missing, spec, uri, experiment_id,
                                                   executor.name)
        target = TrackingTarget(uri, experiment_id)
        submission.jobs = [_queue(spec, v, executor, target, workdir, rung) for v in todo]
        submission.submitted = [v.run for v in todo]
    except BaseException:
        submission.release()
        raise
    return submission


def _queue(spec: ExperimentSpec, view: RunView, executor: Executor, target: TrackingTarget,
          workdir: Path, rung: Rung | None) -> QueuedJob:
    """The job of one run about to be submitted, its run directory made."""
    view.run_dir.path.mkdir(parents=True, exist_ok=True)
    job = RunJob(view.run.config, str(workdir), target,
                 backfill.run_tags(spec, view.run, executor.name), executor.threads(), rung=rung)
    return QueuedJob(view.run_dir, job)
