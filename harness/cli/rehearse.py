"""`ablate rehearse`: every run of a spec end to end on this CPU, in minutes."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli.arguments import DEFAULT_REHEARSAL_WORKDIR, EXECUTOR_CHOICES, positive
from harness.cli.arguments import workdir as workdir_argument
from harness.cli.command import Command


def rehearse_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="experiment or search spec YAML")
    p.add_argument("--workdir", default=DEFAULT_REHEARSAL_WORKDIR, type=workdir_argument,
                   help=f"rehearsal work directory (default "
                                                   f"./{DEFAULT_REHEARSAL_WORKDIR}, apart "
                                                   f"from real records)")
    p.add_argument("--executor", default="inline", choices=EXECUTOR_CHOICES,
                   metavar="EXECUTOR", help="%(choices)s. inline: in this process "
                   "(default); local or slurm: as jobs")
    p.add_argument("--max-parallel", type=positive, default=1,
                   help="local executor: jobs at once (default 1)")
    p.add_argument("--profile", help="slurm executor: resources profile")
    p.add_argument("--run", help="rehearse only this run (its name, key or axis labels)")
    p.add_argument("--steps", type=positive, default=2,
                   help="training steps of each stage (default 2)")


def rehearse_spec(args) -> int:
    from harness.rehearsal import rehearse
    from harness.rehearsal.shrink import Sizes
    workdir = Path(args.workdir)
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


REHEARSE = Command("rehearse", "every run of a spec (experiment or search) end to end on this "
                               "CPU in minutes: tiny stand-ins of its experts and LLM, generated "
                               "data in the real formats, its stages with capped steps, its "
                               "report", rehearse_arguments, rehearse_spec)
