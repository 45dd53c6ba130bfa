"""`ablate search`: greedy expert addition, round after round, to its lineage."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.arguments import add_executor, add_spec
from harness.cli.command import Command, wide


def search_arguments(p: argparse.ArgumentParser) -> None:
    add_spec(p)
    add_executor(p)


def search(args) -> int:
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
    with wide():
        print("\ncandidates:")
        print(candidate_table(rounds).to_string(index=False))
        print("\nlineage:")
        print(lineage_table(rounds).to_string(index=False))
    print(f"\nwritten: {search.dir}/lineage.csv, candidates.csv, round-N.json")
    return 0


SEARCH = Command("search", "greedy expert addition: each round trains every remaining "
                           "candidate at once and adds the best", search_arguments, search)
