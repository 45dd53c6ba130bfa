"""`ablate fetch`, `ablate plan` and `ablate check-data`: what a spec needs, checked or got
before anything runs (its models, its cost, its data)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli.arguments import add_spec, add_workers
from harness.cli.command import Command, wide


def fetch_arguments(p: argparse.ArgumentParser) -> None:
    add_spec(p)
    p.add_argument("--update", action="store_true",
                   help="re-resolve every model to the hub's current commit (default: keep "
                        "the commits already pinned)")


def fetch_models(args) -> int:
    from harness.specs import load_spec
    from harness.specs.lock import fetch
    spec = load_spec(args.spec, check_files=False)   # models only: data may live elsewhere
    path = fetch([r.config for r in spec.runs], spec.file, update=args.update)
    print(f"pinned in {path}: runs of {spec.name} now build from these commits, offline")
    return 0


def plan_arguments(p: argparse.ArgumentParser) -> None:
    add_spec(p)
    p.add_argument("--profile", help="Slurm profile to size the array and GPU with (default: "
                                     "the spec's `slurm:`)")
    p.add_argument("--check-data", action="store_true",
                   help="also decode every image of the spec's data on this machine (as "
                        "`ablate check-data`)")
    add_workers(p)


def plan(args) -> int:
    from harness.planning.plan import PlanDoesNotFit, plan_table, search_plan
    from harness.search import is_search_spec, load_search_spec
    from harness.specs import load_spec
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
    with wide():
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
    from harness.specs import load_spec
    if is_search_spec(path):
        search = load_search_spec(path, check_files=check_files)
        return [search.run(search.start + [e], search.seeds[0]).config for e in search.pool]
    return [r.config for r in load_spec(path, check_files=check_files).runs]


def _print_data_check(configs: list, workers: int | None) -> int:
    from harness.specs.check_data import check_spec_data
    report = check_spec_data(configs, workers, progress=sys.stderr.isatty())
    print("check-data:\n" + "\n".join("  " + line for line in report.lines))
    return 1 if report.bad else 0


def check_data_arguments(p: argparse.ArgumentParser) -> None:
    add_spec(p)
    add_workers(p)


def check_data(args) -> int:
    # a missing image is named while the spec is read (validation)
    return _print_data_check(_spec_configs(args.spec), args.workers)


FETCH = Command("fetch", "download every model a spec names into the Hugging Face cache and "
                         "pin each to its commit in SPEC.lock.json", fetch_arguments,
                fetch_models)
PLAN = Command("plan", "validate a spec without weights, data or GPUs; show its runs, what "
                       "each still trains, the estimated GPU-hours and the Slurm array it "
                       "would submit", plan_arguments, plan)
CHECK_DATA = Command("check-data", "decode every image of a spec's LLaVA data once, in "
                                   "parallel; name each bad or missing one with its record "
                                   "(results cached by the data's fingerprint)",
                     check_data_arguments, check_data)
