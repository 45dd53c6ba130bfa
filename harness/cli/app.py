"""The `ablate` entry point: the command table, in --help's order, the parser built from it,
and `main`, which runs one command and turns a user's error into one line and exit code 2
(Ctrl-C: 130)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from core.errors import HarnessError
from core.registry import UnknownIdError
from harness.cli.command import Command
from harness.cli.expert_search import SEARCH
from harness.cli.label_routing import ROUTING_LABELS
from harness.cli.listing import LIST
from harness.cli.rehearse import REHEARSE
from harness.cli.reporting import REPORT
from harness.cli.run_configs import TRAIN, VALIDATE
from harness.cli.spec_checks import CHECK_DATA, FETCH, PLAN
from harness.cli.submission import RUN, STATUS

COMMANDS: dict[str, Command] = {c.name: c for c in (
    TRAIN, FETCH, PLAN, CHECK_DATA, RUN, SEARCH, STATUS, REPORT, REHEARSE, ROUTING_LABELS,
    VALIDATE, LIST)}


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger().setLevel(logging.ERROR)  # open_clip reports random init at WARNING


def _quiet_models() -> None:
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ablate", description="Ablation harness for multimodal LLMs with a mixture of "
                                   "vision encoders.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        command.add_arguments(sub.add_parser(command.name, help=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = COMMANDS[args.command]
    raw = list(sys.argv[1:] if argv is None else argv)
    if "--nproc" in raw:   # what each rank of `train --nproc N` runs: the same, without it
        i = raw.index("--nproc")
        raw = raw[:i] + raw[i + 2:]
    args.argv = raw
    quiet_libraries()
    from harness.data.fingerprints import use_workdir
    # data fingerprints are cached in the work directory the command works in
    use_workdir(getattr(args, "workdir", None))
    if command.loads_models:   # a report reads records only
        _quiet_models()
    try:
        return command.run(args)
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
