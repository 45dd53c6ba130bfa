"""What stage reuse and successive halving save a greedy search: the known-answer search four
ways in one run, each in its own working directory, at most --max-parallel runs at a time,
one torch thread each:

  naive            the rounds replayed as separate per-round scripts would run them: every
                   round trains its current set again next to its candidates, and every run
                   trains all its stages in a fresh working directory (so each expert's
                   pre-alignment is trained once per run that contains it)
  reuse            `ablate search` without halving: finished runs and stages are reused
  reuse + halving  `ablate search` with the spec's successive halving (rungs on a held-out
                   selection split; the best fraction goes on)
  reuse + evidence `ablate search` with rungs decided by evidence (--evidence-spec: every
                   candidate whose paired interval against the rung's leader does not show it
                   behind by more than min_gain goes on)

Compute is reported two ways: measured training seconds (the steps each stage actually
trained x their step times, from the stage records, so a candidate stopped at a rung counts
only the steps it trained) and estimated training FLOPs (harness.planning.estimate, the plan's
formula, scaled by the fraction of its steps each stage trained). Wall time includes
evaluation (the rungs' selection split too). Last, the learning curves the rungs read: each
candidate's selection scores per skill at every rung it reached (evidence way), which say how
early a rung can decide.

    python benchmarks/search_reuse.py [--spec experiments/tiny/greedy_known_answer_halving.yaml]
        [--evidence-spec experiments/tiny/greedy_known_answer_evidence.yaml]
        [--workdir bench-work] [--max-parallel 2]"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def trained_stages(workdir: Path) -> list[dict]:
    """Each stage trained under workdir, finished or paused at a rung: name, expert, the run
    that trained it, the steps it trained of its total, and their seconds."""
    out = []
    for d in sorted((workdir / "stages").glob("*")):
        if not (d / "stage.json").exists() or not (d / "metrics.jsonl").exists():
            continue
        info = json.loads((d / "stage.json").read_text())
        lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        steps = [m for m in lines if "loss" in m]
        total = next((m["total"] for m in lines if m.get("event") == "start"), len(steps))
        out.append({"dir": d.name, "run": info["run"], "expert": info.get("expert"),
                    "stage": info["stage"]["name"], "steps": len(steps), "total": total,
                    "seconds": sum(m["step_time"] for m in steps)})
    return out


def flops(stages: list[dict], configs: dict) -> float:
    from harness.planning.estimate import stage_flops
    total = 0.0
    for s in stages:
        cfg = configs[s["run"]]
        stage = next(x for x in cfg.stages if x.name == s["stage"])
        total += (stage_flops(cfg, stage, s["expert"]) or 0.0) * s["steps"] / s["total"]
    return total


def _isolated(args) -> tuple[str, list[dict]]:
    cfg, workdir = args
    import torch
    torch.set_num_threads(1)
    from harness.runs.pipeline import run
    run(cfg, Path(workdir), progress=False)
    return cfg.key, trained_stages(Path(workdir))


def _search(spec, workdir: Path, max_parallel: int, log: Path):
    from harness.search import GreedySearch
    t0 = time.time()
    with open(log, "w") as stream:
        rounds = GreedySearch(spec, workdir, max_parallel=max_parallel, stream=stream).run()
    return rounds, time.time() - t0


def _configs(spec, rounds) -> dict:
    out = {}
    for r in rounds:
        for arm in [r.current, *r.candidates]:
            out.update({c.key: c for c in (spec.run(arm.experts, s).config
                                             for s in spec.seeds)})
    return out


def _describe(stages: list[dict]) -> str:
    per: dict[str, float] = {}
    for s in stages:
        per[s["stage"]] = per.get(s["stage"], 0) + s["steps"] / s["total"]
    return ", ".join(f"{k} x{v:.2g}" for k, v in sorted(per.items()))


def learning_curves(workdir: Path) -> list[dict]:
    """Every rung record under workdir: the run's experts, the rung's step of its total and
    the selection split's score per benchmark."""
    searches = list((workdir / "searches").glob("*/runs.json"))
    experts = {r["key"]: "+".join(r["experts"]) for f in searches
               for r in json.loads(f.read_text())}
    out = []
    for rung in sorted((workdir / "runs").glob("*/rungs/*/rung.json")):
        record = json.loads(rung.read_text())
        scores = json.loads((rung.parent / "scores.json").read_text())
        out.append({"experts": experts.get(rung.parents[2].name, "?"),
                    "step": record["step"], "total": record["total"],
                    **{b: h["value"] for b, h in sorted(scores.items())}})
    return sorted(out, key=lambda r: (r["experts"], r["step"]))


def _lineage(spec, rounds) -> str:
    return " -> ".join(["+".join(spec.start)] + [r.chosen for r in rounds if r.chosen])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "experiments/tiny/"
                                              "greedy_known_answer_halving.yaml"))
    parser.add_argument("--evidence-spec", default=str(ROOT / "experiments/tiny/"
                                                       "greedy_known_answer_evidence.yaml"))
    parser.add_argument("--workdir", default="bench-work")
    parser.add_argument("--max-parallel", type=int, default=2)
    args = parser.parse_args()
    from harness.cli import quiet_libraries
    from harness.search import load_search_spec
    quiet_libraries()
    halving_spec = load_search_spec(args.spec)
    if halving_spec.halving is None:
        parser.error(f"{args.spec} has no search.halving section")
    evidence_spec = load_search_spec(args.evidence_spec)
    if evidence_spec.halving is None or not evidence_spec.halving.by_evidence:
        parser.error(f"{args.evidence_spec} has no search.halving section with rule: evidence")
    reuse_spec = dataclasses.replace(halving_spec, halving=None)
    root = Path(args.workdir).resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)

    rows = {}
    rounds, wall = _search(evidence_spec, root / "evidence", args.max_parallel,
                           root / "evidence.log")
    rows["reuse + evidence"] = (trained_stages(root / "evidence"), wall,
                                _lineage(evidence_spec, rounds),
                                _configs(evidence_spec, rounds))
    decisions = [r.decision for r in rounds]
    rounds, wall = _search(halving_spec, root / "halving", args.max_parallel,
                           root / "halving.log")
    rows["reuse + halving"] = (trained_stages(root / "halving"), wall,
                               _lineage(halving_spec, rounds), _configs(halving_spec, rounds))
    rounds, wall = _search(reuse_spec, root / "reuse", args.max_parallel, root / "reuse.log")
    configs = _configs(reuse_spec, rounds)
    rows["reuse"] = (trained_stages(root / "reuse"), wall, _lineage(reuse_spec, rounds),
                     configs)

    # naive: every round retrains its current set; every run in a fresh workdir
    jobs = []
    for n, r in enumerate(rounds, start=1):
        for arm in [r.current, *r.candidates]:
            for sr in arm.runs:
                jobs.append((configs[sr.key], str(root / "naive" / f"round{n}-{sr.key}")))
    t0 = time.time()
    with ProcessPoolExecutor(args.max_parallel) as pool:
        isolated = list(pool.map(_isolated, jobs))
    rows["naive"] = ([s for _, stages in isolated for s in stages], time.time() - t0,
                     rows["reuse"][2] + " (the reuse search's rounds, replayed)", configs)

    naive_s = sum(s["seconds"] for s in rows["naive"][0])
    naive_f = flops(rows["naive"][0], configs)
    h, e = halving_spec.halving, evidence_spec.halving
    print(f"search: {halving_spec.name}, at most {args.max_parallel} runs at a time; "
          f"halving: rungs {h.rungs} keep {h.keep_fraction} min_keep {h.min_keep}; "
          f"evidence: rungs {e.rungs} risk {e.risk}")
    print(f"{'':16s}{'stages trained (full-stage equivalents)':>52s}{'train s':>9s}"
          f"{'x naive':>8s}{'TFLOPs':>8s}{'x naive':>8s}{'wall s':>8s}")
    ways = ("naive", "reuse", "reuse + halving", "reuse + evidence")
    summary = {}
    for name in ways:
        stages, wall, _, cfgs = rows[name]
        secs, fl = sum(s["seconds"] for s in stages), flops(stages, cfgs)
        print(f"{name:16s}{_describe(stages):>52s}{secs:9.0f}{secs / naive_s:8.2f}"
              f"{fl / 1e12:8.2f}{fl / naive_f:8.2f}{wall:8.0f}")
        summary[name] = {"stages": _describe(stages), "train_s": secs, "tflops": fl / 1e12,
                         "x_naive_s": secs / naive_s, "x_naive_flops": fl / naive_f,
                         "wall_s": wall, "lineage": rows[name][2]}
    for name in ways:
        print(f"lineage ({name}): {rows[name][2]}")
    print("evidence decisions:\n  " + "\n  ".join(decisions))
    curves = learning_curves(root / "evidence")
    if curves:
        skills = [k for k in curves[0] if k not in ("experts", "step", "total")]
        print("learning curves on the selection split (evidence way):")
        print(f"  {'experts':28s}{'step':>10s}" + "".join(f"{b:>14s}" for b in skills))
        for c in curves:
            print(f"  {c['experts']:28s}{c['step']:>6d}/{c['total']:<3d}"
                  + "".join(f"{c[b]:14.3f}" for b in skills))
    summary["evidence_decisions"], summary["learning_curves"] = decisions, curves
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
