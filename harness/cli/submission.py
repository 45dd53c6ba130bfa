"""`ablate run` and `ablate status`: a spec's runs submitted and followed, or looked at."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli.arguments import add_executor, add_spec
from harness.cli.command import Command, wide


def _positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--heartbeat must be a positive number of minutes, "
                                         f"got {text!r}")
    return value


def run_arguments(p: argparse.ArgumentParser) -> None:
    add_spec(p)
    add_executor(p)
    p.add_argument("--no-follow", action="store_true", help="submit and return")
    p.add_argument("--heartbeat", type=_positive_minutes, default=5.0, metavar="MINUTES",
                   help="when following into a log (not a terminal), a line per running "
                        "run every MINUTES: step, loss, pace, ETA (default 5)")


def run(args) -> int:
    from harness.scheduler.states import follow, render, view_spec
    from harness.scheduler.submit import prepare
    from harness.specs import load_spec
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
            with wide():
                views = follow(spec, workdir, heartbeat_s=60 * args.heartbeat)
        except KeyboardInterrupt:
            print(f"\nstopped following; the jobs go on. `ablate status {args.spec}` shows "
                  "them.")
            return 130
    else:
        views = view_spec(spec, workdir)
    if not submission.executor.follows or args.no_follow or not (submission.submitted or
                                                                 submission.in_flight):
        with wide():
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
    with wide():
        print(table.to_string())


def status(args) -> int:
    from harness.scheduler.states import render, view_spec
    from harness.search import is_search_spec, load_search_spec
    from harness.specs import ExperimentSpec, load_spec
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
    with wide():
        print(render(spec, view_spec(spec, Path(args.workdir))))
    return 0


RUN = Command("run", "submit a spec's runs that are not done, and follow them",
              run_arguments, run)
STATUS = Command("status", "the state of a spec's runs: progress, failures with their reason "
                           "and log", add_spec, status)
