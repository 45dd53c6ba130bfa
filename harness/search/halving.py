"""Successive halving within a search round, with synchronous rungs.

Every candidate of the round trains to the first rung (a fraction of its last stage's steps),
where its checkpoint is scored on the selection split, held out from the reported
benchmarks. The best `keep` fraction (at least `min_keep`) continue from that checkpoint to
the next rung; the rest stay paused, their status saying at which rung they were stopped and
by how much they trailed. After the last rung the survivors finish with the round's current
set, in one submission, and the round compares them on the reported benchmarks, as without
halving. Each rung is one submission (one Slurm array).

A rung that would stop nobody (survivors(n) == n) is skipped: it would only cost an
evaluation. A candidate that had already finished (a run shared with an earlier search)
goes on without a rung score: its full result costs nothing more. Every decision is computed
from the run directories' records, so a search killed between rungs and run again reaches the
same decisions."""
from __future__ import annotations

from harness.config.selection import Rung
from harness.runs.pipeline import PausedRun
from harness.search.round_types import Arm, ArmRunner
from harness.search.search_spec import SearchSpec, selection_objective
from harness.specs import PlannedRun


class HalvingRound:
    def __init__(self, spec: SearchSpec, runner: ArmRunner):
        assert spec.halving is not None
        self.spec, self.halving, self.runner = spec, spec.halving, runner
        self.record: dict | None = None   # the last round's rung decisions

    def evaluate(self, arms: list[tuple[list[str], str | None]], what: str) -> list[Arm]:
        spec, h = self.spec, self.halving
        planned = {(tuple(e), s): spec.run(e, s) for e, _ in arms for s in spec.seeds}

        def runs_of(experts) -> list[PlannedRun]:
            return [planned[(tuple(experts), s)] for s in spec.seeds]

        candidates = [(e, a) for e, a in arms if a is not None]
        alive = list(candidates)
        rungs: dict[str | None, list[dict]] = {a: [] for _, a in candidates}
        stopped: dict[str | None, dict] = {}
        decisions = []
        for number, fraction in enumerate(h.rungs, start=1):
            keep = h.survivors(len(alive))
            if keep == len(alive):
                decisions.append({"rung": number, "fraction": fraction, "skipped":
                                  f"{len(alive)} candidates, {keep} go on: nothing to stop"})
                continue
            rung = Rung(number, fraction, h.selection)
            records = self.runner.execute_rung([r for e, _ in alive for r in runs_of(e)], rung,
                                               f"{what}: rung {number} ({fraction:g} of the "
                                               "last stage)")
            finished, scored = [], []
            for experts, added in alive:
                at = [records[r.key] for r in runs_of(experts)]
                if not all(isinstance(x, PausedRun) for x in at):
                    finished.append((experts, added))
                    continue
                value = sum(selection_objective(spec, x) for x in at) / len(at)
                entry = {"rung": number, "fraction": fraction, "step": at[0].rung["step"],
                         "total": at[0].rung["total"], "objective": value,
                         "selection": {b: sum(x.scores[b] for x in at) / len(at)
                                       for b in at[0].scores}}
                rungs[added].append(entry)
                scored.append((value, experts, added))
            # ties keep the pool's order (sorted is stable)
            scored.sort(key=lambda x: -x[0])
            n_scored = max(0, keep - len(finished))
            kept, dropped = scored[:n_scored], scored[n_scored:]
            cut = kept[-1][0] if kept else None
            for value, experts, added in dropped:
                entry = rungs[added][-1]
                behind = None if cut is None else cut - value
                stopped[added] = {**entry, "cut": cut, "behind": behind}
                trail = (f", {behind:.2f} behind the last candidate kept ({cut:.2f})"
                         if cut is not None else "")
                reason = (f"stopped by successive halving at rung {number} (step "
                          f"{entry['step']} of {entry['total']}): selection objective "
                          f"{value:.2f}{trail}; submitting it again continues from its "
                          "checkpoint")
                for r in runs_of(experts):
                    self.runner.mark_stopped(r, reason)
            decisions.append({
                "rung": number, "fraction": fraction, "contenders": len(alive), "keep": keep,
                "scores": {added: value for value, _, added in scored},
                "kept": [a for _, _, a in kept] + [a for _, a in finished],
                "already_finished": [a for _, a in finished],
                "stopped": [a for _, _, a in dropped], "cut": cut})
            alive = [(e, a) for e, a in alive if a not in stopped]
        full = [(e, a) for e, a in arms if a is None or a not in stopped]
        results = self.runner.execute([r for e, _ in full for r in runs_of(e)], what)
        out = []
        for experts, added in arms:
            if added in stopped:
                out.append(Arm(experts, added, [], rungs=rungs[added], stopped=stopped[added]))
                continue
            runs = [self.runner.seed_run(r, results[r.key]) for r in runs_of(experts)]
            out.append(Arm(experts, added, runs, rungs=rungs.get(added, [])))
        self.record = {"selection": h.selection.describe(), "rungs": decisions,
                       "stopped": sorted(stopped, key=str)}
        return out
