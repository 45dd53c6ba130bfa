"""`ablate`: the command line. Each subcommand is one line of --help; user errors (bad config,
missing data, unknown ids) print one clear line and exit 2 before any work starts."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from harness.errors import HarnessError
from models.registry import UnknownIdError

DEFAULT_WORKDIR = "ablate-work"


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger().setLevel(logging.ERROR)  # open_clip reports random init at WARNING
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def cmd_train(args) -> int:
    from harness.config import load_run_config
    from harness.pipeline import run
    from harness.summary import results_table

    configs = [load_run_config(p) for p in args.configs]  # validate all before running any
    results = []
    for cfg in configs:
        print(f"== {cfg.name} (run {cfg.key})", flush=True)
        result = run(cfg, Path(args.workdir), progress=not args.no_progress)
        print(f"   run directory: {result.path}", flush=True)
        results.append(result)
    print()
    print(results_table(results).to_string())
    return 0


def cmd_validate(args) -> int:
    from harness.config import load_run_config
    for path in args.configs:
        cfg = load_run_config(path)
        print(f"{path}: ok (run {cfg.key}, {len(cfg.stages)} stages, "
              f"{len(cfg.model.experts)} experts)")
    return 0


def cmd_list(args) -> int:
    from harness.evaluation.benchmarks import BENCHMARKS
    from models.experts import EXPERTS
    from models.fusion import FUSIONS
    from models.llm import LLMS
    from models.projectors import PROJECTORS
    from models.templates import TEMPLATES
    tables = {"experts": EXPERTS, "fusions": FUSIONS, "projectors": PROJECTORS, "llms": LLMS,
              "templates": TEMPLATES, "benchmarks": BENCHMARKS}
    for kind in ([args.kind] if args.kind else list(tables)):
        print(f"{kind}:")
        for entry in tables[kind].entries():
            presets = getattr(entry.builder, "presets", None)
            extra = f"  [presets: {', '.join(presets)}]" if isinstance(presets, dict) else ""
            print(f"  {entry.name:18s} {entry.summary}{extra}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ablate", description="Ablation harness for multimodal LLMs with a mixture of "
                                   "vision encoders.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train and evaluate run configs in-process; print a table")
    p.add_argument("configs", nargs="+", help="run config YAML files")
    p.add_argument("--workdir", default=DEFAULT_WORKDIR,
                   help=f"runs, records and caches live here (default: ./{DEFAULT_WORKDIR})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("validate", help="check run configs without running anything")
    p.add_argument("configs", nargs="+")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("list", help="list registered experts, fusions, projectors, LLMs, "
                                    "templates and benchmarks")
    p.add_argument("kind", nargs="?", choices=["experts", "fusions", "projectors", "llms",
                                               "templates", "benchmarks"])
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return args.func(args)
    except (HarnessError, UnknownIdError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
