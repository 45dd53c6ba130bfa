"""What stage and run reuse saves a greedy search: the search's training compute and wall time
with reuse (as `ablate search` runs it) against the same search with reuse turned off.

"Reuse off" replays the same rounds the way separate per-round scripts would: every round
trains its current set again next to its candidates, and every run trains all its stages in
a fresh working directory (so each expert's pre-alignment is trained once per run that
contains it). Both sides run at most --max-parallel runs at a time, one torch thread each.

Compute is reported two ways: measured training seconds (steps x mean step time, summed over
the stages actually trained) and estimated training FLOPs (harness.planning.estimate, the plan's
formula).

    python benchmarks/search_reuse.py [--spec experiments/tiny/greedy_known_answer.yaml]
        [--workdir bench-work] [--max-parallel 2]"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def trained_stages(workdir: Path) -> list[dict]:
    """Each stage trained under workdir: name, expert, seconds (steps x mean step time)."""
    out = []
    for d in sorted((workdir / "stages").glob("*")):
        if not (d / "result.json").exists():
            continue
        res = json.loads((d / "result.json").read_text())
        info = json.loads((d / "stage.json").read_text())
        out.append({"dir": d.name, "run": info["run"], "expert": info.get("expert"),
                    "stage": info["stage"]["name"], "seconds": res["steps"] * res["step_time"]})
    return out


def flops(stages: list[dict], configs: dict) -> float:
    from harness.planning.estimate import stage_flops
    total = 0.0
    for s in stages:
        cfg = configs[s["run"]]
        stage = next(x for x in cfg.stages if x.name == s["stage"])
        total += stage_flops(cfg, stage, s["expert"]) or 0.0
    return total


def _isolated(args) -> tuple[str, list[dict]]:
    cfg, workdir = args
    import torch
    torch.set_num_threads(1)
    from harness.runs.pipeline import run
    run(cfg, Path(workdir), progress=False)
    return cfg.key, trained_stages(Path(workdir))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "experiments/tiny/greedy_known_answer.yaml"))
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--max-parallel", type=int, default=2)
    args = parser.parse_args()
    from harness.cli import _quiet_libraries
    from harness.search import GreedySearch, load_search_spec
    _quiet_libraries()
    spec = load_search_spec(args.spec)
    root = Path(args.workdir).resolve()
    shutil.rmtree(root, ignore_errors=True)

    # with reuse: the search as `ablate search` runs it
    t0 = time.time()
    with open(root.parent / f"{root.name}-search.log", "w") as log:
        rounds = GreedySearch(spec, root / "reuse", max_parallel=args.max_parallel,
                              stream=log).run()
    reuse_wall = time.time() - t0
    reuse_stages = trained_stages(root / "reuse")
    configs = {}
    arms_by_round = []
    for r in rounds:
        arms = [r.current, *r.candidates]
        arms_by_round.append(arms)
        for arm in arms:
            for sr in arm.runs:
                cfg = spec.run(arm.experts, sr.seed, sr.extra).config
                configs[cfg.key] = cfg

    # reuse off: every round retrains its current set; every run in a fresh workdir
    jobs = []
    for n, arms in enumerate(arms_by_round, start=1):
        for arm in arms:
            for sr in arm.runs:
                cfg = configs[sr.key]
                jobs.append((cfg, str(root / "isolated" / f"round{n}-{cfg.key}")))
    t0 = time.time()
    with ProcessPoolExecutor(args.max_parallel) as pool:
        isolated = list(pool.map(_isolated, jobs))
    off_wall = time.time() - t0
    off_stages = [s for _, stages in isolated for s in stages]

    def describe(stages):
        per = {}
        for s in stages:
            per[s["stage"]] = per.get(s["stage"], 0) + 1
        return ", ".join(f"{k} x{v}" for k, v in sorted(per.items()))

    reuse_flops, off_flops = flops(reuse_stages, configs), flops(off_stages, configs)
    reuse_s = sum(s["seconds"] for s in reuse_stages)
    off_s = sum(s["seconds"] for s in off_stages)
    print(f"search: {spec.name}, {len(rounds)} rounds, {len(configs)} distinct runs, "
          f"at most {args.max_parallel} runs at a time")
    print(f"{'':12s}{'stages trained':>44s}{'train s':>10s}{'TFLOPs':>10s}{'wall s':>10s}")
    print(f"{'reuse':12s}{describe(reuse_stages):>44s}{reuse_s:10.0f}"
          f"{reuse_flops / 1e12:10.2f}{reuse_wall:10.0f}")
    print(f"{'reuse off':12s}{describe(off_stages):>44s}{off_s:10.0f}"
          f"{off_flops / 1e12:10.2f}{off_wall:10.0f}")
    print(f"reuse saves {100 * (1 - reuse_s / off_s):.0f}% of measured training time, "
          f"{100 * (1 - reuse_flops / off_flops):.0f}% of estimated FLOPs and "
          f"{100 * (1 - reuse_wall / off_wall):.0f}% of wall time")
    print("lineage: " + " -> ".join(["+".join(spec.start)]
                                    + [r.chosen for r in rounds if r.chosen]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
