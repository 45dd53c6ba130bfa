"""`ablate list`: what the registries hold (experts, wrappers, fusions, ... benchmarks)."""
from __future__ import annotations

import argparse

from harness.cli.command import Command

KINDS = ["experts", "wrappers", "fusions", "projectors", "llms", "templates", "benchmarks"]


def list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", choices=KINDS)


def list_registries(args) -> int:
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


LIST = Command("list", "list registered experts, their paper wrappers, fusions, projectors, "
                       "LLMs, templates and benchmarks", list_arguments, list_registries)
