"""Rehearse a spec: shrink each of its runs, generate the data, run them through the
scheduler as `ablate run` / `ablate search` would (the executor of choice), render the
spec's report with its reference table, and say per run what happened.

Rehearsal records never mix with real ones: they live in their own work directory (default
`ablate-rehearse/`), and the spec's name, hence its MLflow experiment and search folder, gets
a `-rehearsal` suffix."""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.contained import inside
from core.files import file_lock
from harness.rehearsal.generated_data import write_benchmarks, write_training_data
from harness.rehearsal.geometry import spec_scale
from harness.rehearsal.shrink import Sizes, shrink
from harness.runs.rundir import RunDir
from harness.specs import ExperimentSpec, PlannedRun

SUFFIX = "-rehearsal"


@dataclass
class RunLine:
    name: str
    key: str
    state: str
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    scored: list[str] = field(default_factory=list)
    reason: str = ""

    def text(self) -> str:
        parts = [f"{self.state:<8} {self.name} (run {self.key})"]
        if self.trained or self.reused:
            parts.append("trained " + (", ".join(self.trained) or "-") + "; reused "
                         + (", ".join(self.reused) or "-"))
        if self.scored:
            parts.append(f"scored {len(self.scored)}: " + ", ".join(self.scored))
        if self.reason:
            parts.append(self.reason)
        return " | ".join(parts)


@dataclass
class RehearsalResult:
    spec: str
    workdir: Path
    lines: list[RunLine]
    scale: str
    report_dir: Path | None
    seconds: float
    data_problems: list[str] = field(default_factory=list)   # the real data's bad images

    @property
    def failed(self) -> list[RunLine]:
        return [line for line in self.lines if line.state != "DONE"]


def run_line(run: PlannedRun, workdir: Path, key: str | None = None) -> RunLine:
    from harness.evaluation.scores import read_scores
    from harness.runs.stages import stage_label
    key = key or run.key
    d = RunDir(workdir / "runs" / key)
    status = d.read_json("status.json") if (d.path / "status.json").exists() else {}
    line = RunLine(run.name, key, status.get("state", "NEW"),
                   reason=status.get("reason", ""))
    if (d.path / "stages.json").exists():
        for s in d.read_json("stages.json"):
            (line.reused if s["reused"] else line.trained).append(stage_label(s))
    if line.state == "DONE":
        line.scored = list(read_scores(d.path) or {})
    return line


class Shrinker:
    """Everything a spec's runs share in their rehearsal: the scale, the data, the sizes."""

    def __init__(self, configs, workdir: Path, sizes: Sizes):
        configs = list(configs)
        self.scale, self.geometry = spec_scale(
            [e for c in configs for e in c.model.experts],
            [c.model.fusion.options for c in configs])
        self.workdir, self.sizes = workdir, sizes
        data_root = workdir / "data"
        data_root.mkdir(parents=True, exist_ok=True)
        records = max(32, 4 * sizes.steps * sizes.batch_size)
        needed = sorted({b for c in configs for b in c.eval.sources})
        with file_lock(data_root / ".write.lock"):   # two rehearsals sharing a folder
            self.training = write_training_data(data_root, records)
            self.benchmarks = write_benchmarks(data_root, needed)

    def __call__(self, run: PlannedRun) -> PlannedRun:
        cfg = shrink(run.config, self.scale, self.geometry, self.training, self.benchmarks,
                     self.sizes, self.workdir)
        return PlannedRun(run.name, run.labels, cfg)


def _pick(runs: list[PlannedRun], only: str | None) -> list[PlannedRun]:
    if only is None:
        return runs
    chosen = [r for r in runs if only in (r.name, r.key)
              or only == ",".join(f"{k}={v}" for k, v in r.labels.items())
              or only in r.labels.values()]
    if not chosen:
        from core.errors import ConfigError
        raise ConfigError(f"no run named '{only}'; runs: "
                          + ", ".join(r.name for r in runs), field="--run")
    return chosen


def rehearse(path: str | Path, workdir: Path, executor: str = "inline", only: str | None = None,
             max_parallel: int = 1, profile: str | None = None, sizes: Sizes | None = None,
             stream=None) -> RehearsalResult:
    """Rehearse the spec at `path` in `workdir`; `only` picks one run (name, key or axis
    labels)."""
    from harness.search import is_search_spec
    started = time.time()
    sizes, stream = sizes or Sizes(), stream or sys.stdout
    workdir = Path(workdir).resolve()
    if is_search_spec(path):
        return _rehearse_search(path, workdir, executor, max_parallel, profile, sizes, stream,
                                started)
    from harness.scheduler.states import follow
    from harness.scheduler.submit import prepare
    from harness.specs import load_spec
    full = load_spec(path, check_files=False)
    problems = check_real_data([r.config for r in full.runs], stream)
    shrinker = Shrinker((r.config for r in full.runs), workdir, sizes)
    runs = [shrinker(r) for r in _pick(full.runs, only)]
    spec = dataclasses.replace(full, name=full.name + SUFFIX, runs=runs)
    stream.write(f"{spec.name}: rehearsing {len(runs)} of {len(full.runs)} runs in {workdir} "
                 f"(grids {shrinker.scale.describe()})\n")
    stream.flush()
    submission = prepare(spec, workdir, executor, max_parallel, profile)
    if submission.executor.follows:   # jobs (one Slurm array): each fails on its own
        submission.execute()
    for job in [] if submission.executor.follows else submission.jobs:
        try:   # in this process, one at a time, so a failed run does not stop the others
            submission.executor.submit([job])
        except Exception as exc:   # recorded FAILED with its reason in the run directory
            stream.write(f"   {job[1].cfg.name}: {type(exc).__name__}: {exc}\n")
    submission.release()
    if submission.executor.follows and (submission.submitted or submission.in_flight):
        follow(spec, workdir, stream=stream)
    lines = [run_line(r, workdir) for r in runs]
    report_dir = _report(spec, workdir, lines, stream)
    return RehearsalResult(spec.name, workdir, lines, shrinker.scale.describe(), report_dir,
                           time.time() - started, problems)


def check_real_data(configs, stream) -> list[str]:
    """The spec's own data, where it is on this machine, decoded image by image (`ablate
    check-data`), before the rehearsal runs on generated data: a bad image is named now,
    not mid-stage of the real run. Returns the report's lines if any image is bad."""
    from harness.specs.check_data import check_spec_data
    report = check_spec_data(configs, progress=False)
    stream.write("check-data: " + "\n  ".join(report.lines) + "\n")
    return report.lines if report.bad else []


def _report(spec: ExperimentSpec, workdir: Path, lines: list[RunLine], stream) -> Path | None:
    from analysis.report import experiment_report
    from harness.specs.experiment_manifest import experiment_manifest
    if spec.report is None or not any(line.state == "DONE" for line in lines):
        return None
    report = experiment_report(experiment_manifest(spec), workdir)
    folder = inside(workdir / "reports", spec.name)
    report.write(folder)
    stream.write(report.text("markdown") + "\n")
    return folder


def _rehearse_search(path, workdir: Path, executor: str, max_parallel: int, profile,
                     sizes: Sizes, stream, started: float) -> RehearsalResult:
    """The search's first two rounds at least: its stop rule is set to add whatever the
    first round's best is, and to stop at two added experts."""
    from analysis.report import search_report
    from harness.search import load_search_spec
    from harness.search.greedy import GreedySearch
    from harness.search.search_spec import StopRule, search_manifest
    full = load_search_spec(path, check_files=False)
    arms = [full.start + [e] for e in full.pool]
    problems = check_real_data([full.run(a, full.seeds[0]).config for a in arms], stream)
    shrinker = Shrinker((full.run(a, full.seeds[0]).config for a in arms), workdir, sizes)
    rounds = min(2, len(full.pool))
    search = dataclasses.replace(
        full, name=full.name + SUFFIX, transform=shrinker,
        stop=StopRule(min_gain=-float("inf"), max_experts=len(full.start) + rounds))
    stream.write(f"{search.name}: rehearsing {rounds} rounds of the search in {workdir} "
                 f"(grids {shrinker.scale.describe()})\n")
    stream.flush()
    try:
        GreedySearch(search, workdir, executor, max_parallel=max_parallel, profile=profile,
                     stream=stream).run()
    except Exception as exc:   # the failed runs are named below from their directories
        stream.write(f"   the search stopped: {type(exc).__name__}: {exc}\n")
    lines = _search_lines(search.name, workdir)
    report = search_report(search_manifest(search), workdir)
    folder = workdir / "reports" / search.name
    report.write(folder)
    stream.write(report.text("markdown") + "\n")
    return RehearsalResult(search.name, workdir, lines, shrinker.scale.describe(), folder,
                           time.time() - started, problems)


def _search_lines(name: str, workdir: Path) -> list[RunLine]:
    """Every run the rehearsed search submitted: the run directories whose run is one of
    its arms (named `NAME[...]`)."""
    lines = []
    for folder in sorted((workdir / "runs").iterdir()):
        d = RunDir(folder)
        if not (folder / "status.json").exists():
            continue
        run_name = d.read_json("status.json").get("name", "")
        if run_name.startswith(name + "["):
            lines.append(run_line(PlannedRun(run_name, {}, None), workdir, folder.name))
    return lines
