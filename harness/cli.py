"""`ablate`: the command line. Each subcommand is one line of --help; user errors (bad config,
missing data, unknown ids) print one clear line and exit 2 before any work starts."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from core.contained import inside
from core.errors import HarnessError
from core.registry import UnknownIdError

DEFAULT_WORKDIR = "ablate-work"
DEFAULT_REHEARSAL_WORKDIR = "ablate-rehearse"


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger().setLevel(logging.ERROR)  # open_clip reports random init at WARNING


def _quiet_models() -> None:
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class _RegistryChoices:
    """argparse choices read from a registry when they are first needed (checking a value, or
    --help), so the CLI lists what the registry holds without importing it for every
    command: the executors' module pulls in submitit and torch, which `ablate report` does
    not need."""

    def __init__(self, module: str, registry: str):
        self.module, self.registry = module, registry

    def _names(self) -> list[str]:
        import importlib
        return getattr(importlib.import_module(self.module), self.registry).names()

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __iter__(self):
        return iter(self._names())


EXECUTOR_CHOICES = _RegistryChoices("harness.scheduler.executors", "EXECUTORS")


def cmd_train(args) -> int:
    from harness.config.run_config import device_problem
    from harness.runs.pipeline import run
    from harness.runs.results import results_table
    from harness.spec.run_file import load_run_config
    from harness.training import split
    from harness.training.distributed import env_world_size
    configs = [load_run_config(p) for p in args.configs]  # validate all before running any
    ranks = args.nproc if env_world_size() <= 1 else env_world_size()
    for path, cfg in zip(args.configs, configs):
        problem = device_problem(cfg.device)
        if problem:
            raise HarnessError(f"{path}: {problem}")
        for stage in cfg.stages:   # the global batch must split over the ranks
            split(stage, ranks, cfg.parallel.micro_batch)
    if args.nproc > 1 and env_world_size() <= 1:
        from harness.training.launch import launch
        argv = [a for a in (args.argv or []) if a]
        return launch(argv, args.nproc)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    results = []
    for cfg in configs:
        if main_rank:
            print(f"== {cfg.name} (run {cfg.key})", flush=True)
        result = run(cfg, Path(args.workdir), progress=not args.no_progress)
        if main_rank:
            print(f"   run directory: {result.path}", flush=True)
        results.append(result)
    if main_rank:
        print()
        print(results_table(results).to_string())
    return 0


def cmd_plan(args) -> int:
    from harness.planning.plan import PlanDoesNotFit, plan_table, search_plan
    from harness.search import is_search_spec, load_search_spec
    from harness.spec import load_spec
    failure = None
    try:
        if is_search_spec(args.spec):
            spec = load_search_spec(args.spec, check_files=False)
            table, footer = search_plan(spec, Path(args.workdir), args.profile)
        else:
            spec = load_spec(args.spec, check_files=False)  # full specs plan without data
            table, footer = plan_table(spec, Path(args.workdir), args.profile)
    except PlanDoesNotFit as exc:
        failure, table, footer = exc, exc.table, exc.footer
    print(f"{spec.name}: {spec.description}" if spec.description else spec.name)
    with _wide():
        print(table.to_string())
    print("\n".join(footer))
    if failure is not None:
        raise failure
    if args.check_data:
        return _print_data_check(_spec_configs(args.spec, check_files=False), args.workers)
    return 0


def _spec_configs(path: str, check_files: bool = True) -> list:
    """The run configs of an experiment spec, or of a search spec's first round (its start
    with each candidate: every data source the search will use)."""
    from harness.search import is_search_spec, load_search_spec
    from harness.spec import load_spec
    if is_search_spec(path):
        search = load_search_spec(path, check_files=check_files)
        return [search.run(search.start + [e], search.seeds[0]).config for e in search.pool]
    return [r.config for r in load_spec(path, check_files=check_files).runs]


def _print_data_check(configs: list, workers: int | None) -> int:
    from harness.spec.check_data import check_spec_data
    report = check_spec_data(configs, workers, progress=sys.stderr.isatty())
    print("check-data:\n" + "\n".join("  " + line for line in report.lines))
    return 1 if report.bad else 0


def cmd_check_data(args) -> int:
    # a missing image is named while the spec is read (validation)
    return _print_data_check(_spec_configs(args.spec), args.workers)


def cmd_run(args) -> int:
    from harness.scheduler.states import follow, render, view_spec
    from harness.scheduler.submit import prepare
    from harness.spec import load_spec
    spec = load_spec(args.spec)  # every run validated before anything is submitted
    submission = prepare(spec, Path(args.workdir), args.executor, args.max_parallel,
                         args.profile or spec.slurm_profile, args.tracking_uri,
                         gpus_per_job=args.gpus_per_job)
    print(f"{spec.name}: {len(spec.runs)} runs; submitting {len(submission.submitted)} "
          f"({submission.executor.describe()}), {len(submission.done)} already done, "
          f"{len(submission.in_flight)} already in flight"
          + (f", {len(submission.mirrored)} done runs recorded in MLflow" if submission.mirrored
             else ""))
    print(f"records: MLflow {submission.tracking_uri}, experiment '{spec.name}'; run "
          f"directories under {Path(args.workdir).resolve() / 'runs'}", flush=True)
    for item in submission.rescored:
        print("\n".join(item.lines()))
    for problem in submission.not_rescored:
        print(f"warning: {problem}", file=sys.stderr)
    submission.execute()
    workdir = Path(args.workdir)
    if submission.executor.follows and not args.no_follow and (submission.submitted or
                                                               submission.in_flight):
        try:
            with _wide():
                views = follow(spec, workdir, heartbeat_s=60 * args.heartbeat)
        except KeyboardInterrupt:
            print(f"\nstopped following; the jobs go on. `ablate status {args.spec}` shows "
                  "them.")
            return 130
    else:
        views = view_spec(spec, workdir)
    if not submission.executor.follows or args.no_follow or not (submission.submitted or
                                                                 submission.in_flight):
        with _wide():
            print(render(spec, views))
    _print_results(views)
    return 1 if any(v.state in ("FAILED", "LOST", "INTERRUPTED") for v in views) else 0


def _print_results(views) -> None:
    from harness.runs.pipeline import load_result
    from harness.runs.results import results_table
    done = [v for v in views if v.state == "DONE"]
    if not done:
        return
    table = results_table([load_result(v.run_dir) for v in done],
                          [v.run.labels or {"run": v.run.name} for v in done])
    print()
    with _wide():
        print(table.to_string())


def cmd_status(args) -> int:
    from harness.scheduler.states import render, view_spec
    from harness.search import is_search_spec, load_search_spec
    from harness.spec import ExperimentSpec, load_spec
    if is_search_spec(args.spec):   # the runs the search has submitted so far
        from harness.search.search_spec import searched_runs
        search = load_search_spec(args.spec)
        runs = searched_runs(search, Path(args.workdir).resolve())
        if not runs:
            print(f"{search.name}: the search has submitted no run yet")
            return 0
        spec = ExperimentSpec(search.name, search.file, search.description,
                              sorted({k for r in runs for k in r.labels}), runs)
    else:
        spec = load_spec(args.spec)
    with _wide():
        print(render(spec, view_spec(spec, Path(args.workdir))))
    return 0


def _positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--heartbeat must be a positive number of minutes, "
                                         f"got {text!r}")
    return value


def _wide():
    import pandas as pd
    return pd.option_context("display.width", 250, "display.max_columns", 50,
                             "display.max_colwidth", 60)


def cmd_fetch(args) -> int:
    from harness.spec import load_spec
    from harness.spec.lock import fetch
    spec = load_spec(args.spec, check_files=False)   # models only: data may live elsewhere
    path = fetch([r.config for r in spec.runs], spec.file, update=args.update)
    print(f"pinned in {path}: runs of {spec.name} now build from these commits, offline")
    return 0


def cmd_validate(args) -> int:
    from harness.spec.run_file import load_run_config
    for path in args.configs:
        cfg = load_run_config(path)
        print(f"{path}: ok (run {cfg.key}, {len(cfg.stages)} stages, "
              f"{len(cfg.model.experts)} experts)")
    return 0


def cmd_list(args) -> int:
    from harness.evaluation.benchmarks import BENCHMARKS
    from models.experts import EXPERTS, WRAPPERS
    from models.fusion import FUSIONS
    from models.llm import LLMS
    from models.projectors import PROJECTORS
    from models.templates import TEMPLATES
    tables = {"experts": EXPERTS, "wrappers": WRAPPERS, "fusions": FUSIONS,
              "projectors": PROJECTORS, "llms": LLMS, "templates": TEMPLATES,
              "benchmarks": BENCHMARKS}
    for kind in ([args.kind] if args.kind else list(tables)):
        print(f"{kind}:")
        for entry in tables[kind].entries():
            presets = getattr(entry.builder, "presets", None)
            extra = f"  [presets: {', '.join(presets)}]" if isinstance(presets, dict) else ""
            if isinstance(entry.builder, dict):   # a wrapper: the expert families it covers
                extra = f"  [experts: {', '.join(sorted(entry.builder))}]"
            print(f"  {entry.name:18s} {entry.summary}{extra}")
    return 0


def cmd_search(args) -> int:
    from harness.search import GreedySearch, load_search_spec
    spec = load_search_spec(args.spec)   # validated before anything is submitted
    search = GreedySearch(spec, Path(args.workdir), args.executor, args.max_parallel,
                          args.profile or spec.slurm_profile, args.tracking_uri,
                          gpus_per_job=args.gpus_per_job)
    print(f"{spec.name}: greedy expert addition from {' + '.join(spec.start)} over "
          f"{', '.join(spec.pool)}; objective: "
          + ", ".join(f"{b} (/{n.max:g})" for b, n in spec.objective.items())
          + f"; {len(spec.seeds)} seed(s); state in {search.dir}", flush=True)
    rounds = search.run()
    from harness.search import candidate_table, lineage_table
    with _wide():
        print("\ncandidates:")
        print(candidate_table(rounds).to_string(index=False))
        print("\nlineage:")
        print(lineage_table(rounds).to_string(index=False))
    print(f"\nwritten: {search.dir}/lineage.csv, candidates.csv, round-N.json")
    return 0


def cmd_rehearse(args) -> int:
    from harness.rehearsal import rehearse
    from harness.rehearsal.shrink import Sizes
    workdir = Path(args.workdir or DEFAULT_REHEARSAL_WORKDIR)
    result = rehearse(args.spec, workdir, args.executor, args.run, args.max_parallel,
                      args.profile, Sizes(steps=args.steps))
    print(f"\n{result.spec}: {len(result.lines)} runs rehearsed in {result.seconds:.0f} s "
          f"(grids {result.scale})")
    for line in result.lines:
        print("  " + line.text())
    if result.report_dir:
        print(f"report: {result.report_dir}")
    if result.data_problems:
        print("error: the spec's data has images that do not decode:\n  "
              + "\n  ".join(result.data_problems), file=sys.stderr)
    if result.failed:
        print(f"error: {len(result.failed)} of {len(result.lines)} runs failed: "
              + "; ".join(f"{line.name}: {line.state}: {line.reason}" for line in result.failed),
              file=sys.stderr)
        return 1
    return 1 if result.data_problems else 0


def report_manifest(path: str | Path, workdir: Path):
    """The spec's manifest as its last submission wrote it (reading it needs neither the data
    nor the training code). Where the spec file has changed since, or was never submitted,
    the spec is loaded as it is now; if that fails (its data is gone, say), the submitted
    manifest still reports the records that exist."""
    from analysis.report_manifest import read_manifest, spec_name
    submitted = read_manifest(workdir, spec_name(path))
    if submitted is not None and not submitted.spec_changed():
        return submitted
    try:
        return _current_manifest(path)
    except HarnessError:
        if submitted is None:
            raise
        return submitted


def _current_manifest(path: str | Path):
    from harness.search import is_search_spec, load_search_spec
    from harness.search.search_spec import search_manifest
    if is_search_spec(path):
        return search_manifest(load_search_spec(path))
    from harness.spec import load_spec
    from harness.spec.experiment_manifest import experiment_manifest
    return experiment_manifest(load_spec(path))


def rescore_for_report(manifest, workdir: Path, source: str) -> list[str]:
    """An experiment's finished runs whose scoring code has changed since they were scored,
    scored again from their stored predictions before the report reads them; the report's
    header lines saying which, with which protocol. Reading the revisions loads no model
    code; only a re-scoring does."""
    if manifest.kind == "search":   # its rounds were decided on the scores of their time
        return []
    from harness.evaluation.rescore import rescore_finished
    done, problems = rescore_finished([workdir / "runs" / r.key for r in manifest.runs])
    lines = [f"not scored again: {p}" for p in problems]
    if not done:
        return lines
    from harness.runs.rundir import RunDir
    from harness.tracking.mirror import mirror_again
    for path in {item.run for item in done}:
        mirror_again(RunDir(path))
    lines.append(f"scored again from their stored predictions, nothing generated, since the "
                 f"scoring code changed: {len({item.run for item in done})} runs")
    lines += ["  " + line for item in done for line in item.lines()]
    if source == "mlflow":
        lines.append("  MLflow still holds the earlier numbers until `ablate run` mirrors "
                     "these runs again")
    return lines


def cmd_report(args) -> int:
    from analysis.report import build_report
    workdir = Path(args.workdir)
    manifest = report_manifest(args.spec, workdir)
    rescored = rescore_for_report(manifest, workdir, args.source)
    report = build_report(manifest, workdir, args.source, args.tracking_uri)
    report.header += rescored
    # --out is the user's choice; the default folder is named by the spec, so kept inside
    out = Path(args.out) if args.out else inside(workdir / "reports", report.name)
    written = report.write(out)
    print(report.text(args.format), end="")
    figures = sorted({p.stem for p in written if p.suffix == ".png"})
    print(f"\nwritten to {out.resolve()}: {len(report.tables)} tables "
          f"(.txt .md .tex .csv .html)" + (f", figures {', '.join(figures)} (.png .pdf)"
                                            if figures else "")
          + (", records.csv" if report.records is not None else ""))
    return 0


def cmd_routing_labels(args) -> int:
    from collections import Counter

    from harness.downstream.routing_labels import build_routing_labels, write_skill_labels
    experts = {}
    for item in args.expert:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise HarnessError(f"--expert {item!r}: expected NAME=RUN_DIR")
        experts[name] = path
    if args.synthetic:
        by_skill = {}
        for item in args.skill:
            skill, sep, names = item.partition("=")
            if not sep or not skill:
                raise HarnessError(f"--skill {item!r}: expected SKILL=EXPERT[+EXPERT...]")
            by_skill[skill] = [n for n in names.split("+") if n]
        labels = write_skill_labels(args.synthetic, by_skill, args.out)
        experts = {n: None for names in by_skill.values() for n in names}
    elif args.base is None:
        raise HarnessError("routing-labels needs --base and --expert (from runs), or "
                           "--synthetic and --skill (by skill)")
    else:
        labels = build_routing_labels(args.base, experts, args.out, args.data, args.limit,
                                      args.max_experts, args.margin)
    counts = Counter(len(v) for v in labels.values())
    uses = Counter(n for v in labels.values() for n in v)
    print(f"{args.out}: {len(labels)} samples; experts per sample: "
          + ", ".join(f"{k}: {counts[k]}" for k in sorted(counts))
          + "; samples per expert: " + ", ".join(f"{n}: {uses[n]}" for n in experts))
    return 0


def _workdir(text: str) -> str:
    """A work directory: an existing folder, or a path that can become one."""
    path = Path(text).expanduser()
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise argparse.ArgumentTypeError(f"{part} exists and is not a folder; give a "
                                                 "folder (or a new path) for the work directory")
            break
    return text


def add_workdir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default=DEFAULT_WORKDIR, type=_workdir,
                   help=f"runs, records and caches live here (default: ./{DEFAULT_WORKDIR})")


def _at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}")
        return value
    return parse


_positive, _non_negative = _at_least(1), _at_least(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ablate", description="Ablation harness for multimodal LLMs with a mixture of "
                                   "vision encoders.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train and evaluate run configs in-process; print a table")
    p.add_argument("configs", nargs="+", help="run config YAML files")
    add_workdir(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--nproc", type=_positive, default=1,
                   help="run each config as N processes on this machine (one per GPU, or N "
                        "CPU processes with gloo), data-parallel or sharded by the config's "
                        "`parallel:` (default 1)")
    p.set_defaults(func=cmd_train)

    def spec_command(name: str, summary: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary)
        p.add_argument("spec", help="experiment spec YAML")
        add_workdir(p)
        p.set_defaults(func=func)
        return p

    p = spec_command("fetch", "download every model a spec names into the Hugging Face "
                              "cache and pin each to its commit in SPEC.lock.json", cmd_fetch)
    p.add_argument("--update", action="store_true",
                   help="re-resolve every model to the hub's current commit (default: keep "
                        "the commits already pinned)")

    def add_workers(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workers", type=_positive, default=None,
                       help="processes decoding images (default: this machine's cores, at "
                            "most 32)")

    p = spec_command("plan", "validate a spec without weights, data or GPUs; show its runs, "
                             "what each still trains, the estimated GPU-hours and the Slurm "
                             "array it would submit", cmd_plan)
    p.add_argument("--profile", help="Slurm profile to size the array and GPU with (default: "
                                     "the spec's `slurm:`)")
    def add_executor(p: argparse.ArgumentParser) -> None:
        p.add_argument("--executor", default="local", choices=EXECUTOR_CHOICES,
                       metavar="EXECUTOR", help="%(choices)s. local: jobs on this machine "
                       "(default); slurm: one job array per submission; inline: in this "
                       "process, for debugging")
        p.add_argument("--max-parallel", type=_positive, default=1,
                       help="local executor: jobs at once (default 1)")
        p.add_argument("--gpus-per-job", type=_non_negative, default=None,
                       help="local executor: GPUs (and ranks) per job, each job its own "
                            "(default: 1 where a run's device is cuda or auto and this "
                            "machine has a GPU, else 0)")
        p.add_argument("--profile", help="slurm executor: resources profile, e.g. "
                                         "slurm/local.yaml")
        p.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. http://host:5000 "
                                              "(default: sqlite file WORKDIR/mlflow.db)")

    p.add_argument("--check-data", action="store_true",
                   help="also decode every image of the spec's data on this machine (as "
                        "`ablate check-data`)")
    add_workers(p)
    p = spec_command("check-data", "decode every image of a spec's LLaVA data once, in "
                                   "parallel; name each bad or missing one with its record "
                                   "(results cached by the data's fingerprint)", cmd_check_data)
    add_workers(p)
    p = spec_command("run", "submit a spec's runs that are not done, and follow them", cmd_run)
    add_executor(p)
    p.add_argument("--no-follow", action="store_true", help="submit and return")
    p.add_argument("--heartbeat", type=_positive_minutes, default=5.0, metavar="MINUTES",
                   help="when following into a log (not a terminal), a line per running "
                        "run every MINUTES: step, loss, pace, ETA (default 5)")
    p = spec_command("search", "greedy expert addition: each round trains every remaining "
                               "candidate at once and adds the best", cmd_search)
    add_executor(p)
    spec_command("status", "the state of a spec's runs: progress, failures with their reason "
                           "and log", cmd_status)
    from analysis.render import FORMATS
    from analysis.report import SOURCES
    p = spec_command("report", "a spec's paper-layout tables and plots from its records (a "
                               "search spec: the lineage and the rounds)", cmd_report)
    p.set_defaults(loads_models=False)
    p.add_argument("--format", default="rich", choices=FORMATS,
                   help="what to print (default rich, the terminal); --out gets every format")
    p.add_argument("--out", help="folder for the tables and figures (default "
                                 "WORKDIR/reports/SPEC_NAME)")
    p.add_argument("--source", default="rundirs", choices=SOURCES,
                   help="read the run directories (default, the source of truth) or MLflow")
    p.add_argument("--tracking-uri", help="with --source mlflow: the store (default: the "
                                          "sqlite file WORKDIR/mlflow.db)")

    p = sub.add_parser("rehearse", help="every run of a spec (experiment or search) end to end "
                                        "on this CPU in minutes: tiny stand-ins of its experts "
                                        "and LLM, generated data in the real formats, its "
                                        "stages with capped steps, its report")
    p.add_argument("spec", help="experiment or search spec YAML")
    p.add_argument("--workdir", default=None, type=_workdir,
                   help=f"rehearsal work directory (default "
                                                   f"./{DEFAULT_REHEARSAL_WORKDIR}, apart "
                                                   f"from real records)")
    p.add_argument("--executor", default="inline", choices=EXECUTOR_CHOICES,
                   metavar="EXECUTOR", help="%(choices)s. inline: in this process "
                   "(default); local or slurm: as jobs")
    p.add_argument("--max-parallel", type=_positive, default=1,
                   help="local executor: jobs at once (default 1)")
    p.add_argument("--profile", help="slurm executor: resources profile")
    p.add_argument("--run", help="rehearse only this run (its name, key or axis labels)")
    p.add_argument("--steps", type=_positive, default=2,
                   help="training steps of each stage (default 2)")
    p.set_defaults(func=cmd_rehearse)

    p = sub.add_parser("routing-labels", help="MoVA routing labels: per sample, the experts "
                                              "whose run lowers the base run's loss")
    p.add_argument("--base", help="the base-only run's directory (WORKDIR/runs/<key>)")
    p.add_argument("--synthetic", metavar="RUN_CONFIG",
                   help="instead of runs: label a synthetic dataset's samples by skill")
    p.add_argument("--skill", action="append", default=[], metavar="SKILL=EXPERT[+EXPERT]",
                   help="with --synthetic: the experts a skill needs; repeat per skill")
    p.add_argument("--expert", action="append", default=[], metavar="NAME=RUN_DIR",
                   help="a single-expert run, named as the MoVA model names that expert; "
                        "repeat for each expert")
    p.add_argument("--out", required=True, help="JSON file to write {sample id: [experts]}")
    p.add_argument("--data", default="sft", choices=["align", "sft", "eval"],
                   help="which of the runs' data to label (default sft)")
    p.add_argument("--limit", type=_positive, help="label only the first N samples")
    p.add_argument("--max-experts", type=_positive, default=3, help="at most this many per "
                                                                    "sample (default 3)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="an expert must lower the loss by more than this (default 0)")
    p.set_defaults(func=cmd_routing_labels)

    p = sub.add_parser("validate", help="check run configs without running anything")
    p.add_argument("configs", nargs="+")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("list", help="list registered experts, their paper wrappers, fusions, "
                                    "projectors, LLMs, templates and benchmarks")
    p.add_argument("kind", nargs="?", choices=["experts", "wrappers", "fusions", "projectors",
                                               "llms", "templates", "benchmarks"])
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raw = list(sys.argv[1:] if argv is None else argv)
    if "--nproc" in raw:   # what each rank of `train --nproc N` runs: the same, without it
        i = raw.index("--nproc")
        raw = raw[:i] + raw[i + 2:]
    args.argv = raw
    _quiet_libraries()
    from harness.data.fingerprints import use_workdir
    # data fingerprints are cached in the work directory the command works in
    use_workdir(getattr(args, "workdir", None) or (DEFAULT_REHEARSAL_WORKDIR
                                                   if args.command == "rehearse" else None))
    if getattr(args, "loads_models", True):   # a report reads records only
        _quiet_models()
    try:
        return args.func(args)
    except (HarnessError, UnknownIdError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C: the run in flight was marked INTERRUPTED with its checkpoint kept (harness.
        # runs.pipeline); one line, and 128 + SIGINT as a shell reports a signal
        print(f"\ninterrupted: `ablate {args.command}` stopped by Ctrl-C; a run it was "
              "training is INTERRUPTED and resumes from its last checkpoint when run again",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
