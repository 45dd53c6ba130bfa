"""Successive halving within a search round, with synchronous rungs.

Every candidate of the round trains to the first rung (a fraction of its last stage's steps),
where its checkpoint is scored on the selection split, held out from the reported
benchmarks. The best `keep` fraction (at least `min_keep`) continue from that checkpoint to
the next rung; the rest stay paused, their status saying at which rung they were stopped and
by how much they trailed. After the last rung the survivors finish with the round's current
set, in one submission, and the round compares them on the reported benchmarks, as without
halving. Each rung is one submission (one Slurm array).

Who goes on is the halving's rule: the best `keep` fraction, or, by evidence
(harness.search.evidence), every candidate that the paired per-question interval against the
rung's leader does not show trailing by more than min_gain. A rung that cannot stop anybody
is skipped: it would only cost an evaluation (the fraction rule: survivors(n) == n; the
evidence rule: a single candidate left). At the last rung the evidence rule also reads the
round's current set where it has a record there (round 1's start set pauses at the last rung
with the candidates): when no candidate's upper bound against it reaches min_gain, the search ends
there, every candidate stopped. Not earlier: at an early rung the arms may not have learned
anything yet, answer alike, and a zero-width interval at zero is no evidence.

A candidate that had already finished (a run shared with an earlier search) goes on without a
rung score: its full result costs nothing more. Every decision is computed from the run
directories' records (the bootstrap is seeded), so a search killed between rungs and run
again reaches the same decisions."""
from __future__ import annotations

from dataclasses import asdict

from harness.config.selection import Rung
from harness.runs.pipeline import PausedRun
from harness.search import evidence
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
        current = next((e for e, a in arms if a is None), None)
        alive = list(candidates)
        rungs: dict[str | None, list[dict]] = {a: [] for _, a in candidates}
        stopped: dict[str | None, dict] = {}
        decisions, ended = [], None
        for number, fraction in enumerate(h.rungs, start=1):
            keep = h.survivors(len(alive))
            idle = len(alive) <= 1 if h.by_evidence else keep == len(alive)
            if idle:
                decisions.append({"rung": number, "fraction": fraction, "skipped":
                                  f"{len(alive)} candidate{'s' * (len(alive) != 1)}, "
                                  f"{min(keep, len(alive))} go on: nothing to stop"})
                continue
            rung = Rung(number, fraction, h.selection)
            last = number == len(h.rungs)
            reference = (runs_of(current) if h.by_evidence and last and current is not None
                         else [])
            records = self.runner.execute_rung(
                [r for e, _ in alive for r in runs_of(e)] + reference, rung,
                f"{what}: rung {number} ({fraction:g} of the last stage)")
            finished, scored, paused = [], [], {}
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
                paused[added] = at
            # ties keep the pool's order (sorted is stable)
            scored.sort(key=lambda x: -x[0])
            at_step = {a: f"rung {number} (step {rungs[a][-1]['step']} of "
                          f"{rungs[a][-1]['total']})" for _, _, a in scored}
            if h.by_evidence:
                base = [records[r.key] for r in reference]
                verdict = self._by_evidence(number, at_step, scored, paused, keep,
                                            len(finished), base)
            else:
                verdict = self._by_fraction(at_step, scored, keep - len(finished))
            for added, (reason, numbers) in verdict["stops"].items():
                stopped[added] = {**rungs[added][-1], **numbers}
                for r in runs_of(next(e for _, e, a in scored if a == added)):
                    self.runner.mark_stopped(r, reason)
            kept = [a for _, _, a in scored if a not in verdict["stops"]]
            decisions.append({
                "rung": number, "fraction": fraction, "contenders": len(alive), "keep": keep,
                "scores": {added: value for value, _, added in scored},
                "kept": kept + [a for _, a in finished],
                "already_finished": [a for _, a in finished],
                "stopped": [a for _, _, a in scored if a in verdict["stops"]],
                **verdict["record"]})
            ended = ended or verdict["record"].get("ended")
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
        self.record = {"selection": h.selection.describe(), "rule": h.rule, "rungs": decisions,
                       "stopped": sorted(stopped, key=str),
                       **({"ended": ended} if ended else {})}
        return out

    def _by_fraction(self, at_step: dict, scored: list, n_kept: int) -> dict:
        """The best `n_kept` go on; the rest are stopped, with how far behind the cut."""
        kept, dropped = scored[:max(0, n_kept)], scored[max(0, n_kept):]
        cut = kept[-1][0] if kept else None
        stops = {}
        for value, _, added in dropped:
            behind = None if cut is None else cut - value
            trail = (f", {behind:.2f} behind the last candidate kept ({cut:.2f})"
                     if cut is not None else "")
            stops[added] = (f"stopped by successive halving at {at_step[added]}: selection "
                            f"objective {value:.2f}{trail}; submitting it again continues from "
                            "its checkpoint", {"cut": cut, "behind": behind})
        return {"stops": stops, "record": {"cut": cut}}

    def _by_evidence(self, number: int, at_step: dict, scored: list, paused: dict, cap: int,
                     finished: int, reference: list) -> dict:
        """Stop whoever trails the leader beyond min_gain by the paired interval; then hold
        the survivors to the cap (`keep`) and the floor (`min_keep`), by rank; and end the
        search at the last rung when no survivor's upper bound against the current set reaches
        min_gain."""
        h, margin = self.halving, self.spec.stop.min_gain
        level = evidence.comparison_level(h.risk, len(scored) + finished, len(h.rungs))
        scales = {b: evidence.Scale(self.spec.objective[b].max - self.spec.objective[b].min,
                                    self.spec.objective[b].weight)
                  for b in h.selection.benchmarks}
        points = {added: evidence.objective_points([x.per_question for x in paused[added]],
                                                   scales) for _, _, added in scored}
        verdict = evidence.judge(points, margin, level)
        order = [a for _, _, a in scored]
        out = set(verdict.stopped)
        survivors = [a for a in order if a not in out]
        for added in survivors[max(0, cap - finished):]:      # beyond the cap, by rank
            out.add(added)
        for added in order:                                   # the floor, by rank
            if len([a for a in order if a not in out]) + finished >= h.min_keep:
                break
            out.discard(added)
        record: dict = {"leader": verdict.leader, "level": level, "margin": margin,
                        "intervals": {a: asdict(iv) for a, iv in verdict.intervals.items()}}
        stops = {}
        value = dict((a, v) for v, _, a in scored)
        for added in order:
            if added not in out:
                continue
            iv = verdict.intervals.get(added)
            why = (f"{iv.estimate:+.2f} [{iv.low:+.2f}, {iv.high:+.2f}] against the leader "
                   f"{verdict.leader} ({100 * level:.2f}% paired interval), its upper end below "
                   f"-min_gain {-margin:g}" if added in verdict.stopped
                   else f"beyond the cap of {cap} (keep {h.keep})")
            stops[added] = (f"stopped by evidence at {at_step[added]}: selection objective "
                            f"{value[added]:.2f}, {why}; submitting it again continues from "
                            "its checkpoint",
                            {"leader": verdict.leader,
                             **({"interval": asdict(iv)} if iv else {})})
        # `reference` is only given at the last rung: before it, arms that have not learned
        # yet answer alike, and a zero-width interval at zero is no evidence that nothing
        # can be gained
        if reference and all(isinstance(x, PausedRun) for x in reference):
            base = evidence.objective_points([x.per_question for x in reference], scales)
            gains = {a: evidence.versus(points[a], base, level) for a in order if a not in out}
            record["against_current"] = {a: asdict(iv) for a, iv in gains.items()}
            if gains and all(iv.high < margin for iv in gains.values()):
                record["ended"] = (f"at rung {number}, no candidate's upper bound against "
                                   f"the current set reaches min_gain {margin:g} ("
                                   + ", ".join(f"{a} {iv.high:+.2f}" for a, iv in gains.items())
                                   + f"; {100 * level:.2f}% paired intervals)")
                for added in gains:
                    stops[added] = ("stopped by evidence: the search ended "
                                    + record["ended"],
                                    {"against_current": asdict(gains[added])})
        return {"stops": stops, "record": record}
