"""`ablate routing-labels`: MoVA's routing labels, from finished runs or by skill."""
from __future__ import annotations

import argparse

from core.errors import HarnessError
from harness.cli.arguments import positive
from harness.cli.command import Command


def routing_labels_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--limit", type=positive, help="label only the first N samples")
    p.add_argument("--max-experts", type=positive, default=3, help="at most this many per "
                                                                   "sample (default 3)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="an expert must lower the loss by more than this (default 0)")


def routing_labels(args) -> int:
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


ROUTING_LABELS = Command("routing-labels", "MoVA routing labels: per sample, the experts whose "
                                           "run lowers the base run's loss",
                         routing_labels_arguments, routing_labels)
