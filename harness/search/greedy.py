"""`ablate search`: greedy expert addition, round by round.

Round 0 trains the start set; round r trains the current set plus each remaining candidate,
all at once (one job array on Slurm, parallel local jobs otherwise), ranks them by the mean
objective over seeds, and adds the best if it gains more than `stop.min_gain` over the
current set. Round 0 is submitted together with round 1, whose arms do not depend on it.

Nothing here holds state that the records do not: runs are keyed by content, so a re-run
search finds every finished run in its run directory and never retrains it, waits for runs
still in flight, resubmits interrupted ones (they resume from their checkpoints), and reaches
the same decisions. Each round's decision, with the numbers behind it, is written under
WORKDIR/searches/NAME/ (round-N.json, lineage.csv/.json, candidates.csv/.json); Optuna's
tuning trials live in a journal file there, which works on shared storage."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd

from analysis.lineage import candidate_frame, lineage_frame
from analysis.report_manifest import write_manifest
from core.contained import inside
from core.errors import HarnessError
from core.files import atomic_write_text, file_lock
from core.identity import to_plain
from harness.config.selection import Rung
from harness.runs.pipeline import PausedRun, RunResult, load_paused, load_result
from harness.runs.rundir import RunDir
from harness.scheduler.states import follow, view_spec
from harness.scheduler.submit import preflight, prepare
from harness.search.halving import HalvingRound
from harness.search.round_types import Arm, Round, SeedRun
from harness.search.search_spec import (
    SearchSpec,
    normalized,
    objective_value,
    raw_values,
    search_manifest,
)
from harness.search.tuning import Tuner
from harness.specs import ExperimentSpec, PlannedRun


class SearchFailed(HarnessError):
    pass


class GreedySearch:
    def __init__(self, spec: SearchSpec, workdir: Path, executor: str = "local",
                 max_parallel: int = 1, profile: str | None = None,
                 tracking_uri: str | None = None, stream=None, follow_jobs: bool = True,
                 gpus_per_job: int | None = None):
        self.spec, self.workdir = spec, Path(workdir).resolve()
        self.executor, self.max_parallel = executor, max_parallel
        self.profile, self.tracking_uri = profile, tracking_uri
        self.gpus_per_job = gpus_per_job
        self.stream = stream or sys.stdout
        self.follow_jobs = follow_jobs
        self.dir = inside(self.workdir / "searches", spec.name)
        self._tuner = None
        self._halving: HalvingRound | None = None

    # --- running arms -----------------------------------------------------------------
    def say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _batch(self, runs: list[PlannedRun]) -> ExperimentSpec:
        return ExperimentSpec(self.spec.name, self.spec.file, self.spec.description,
                              sorted({k for r in runs for k in r.labels}), runs)

    def _submit(self, runs: list[PlannedRun], what: str, rung: Rung | None = None,
                scored: int = 0) -> list:
        """Submit the runs not done (one submission), wait for all; their final views."""
        self._remember(runs)
        batch = self._batch(runs)
        submission = prepare(batch, self.workdir, self.executor, self.max_parallel,
                             self.profile, self.tracking_uri, record=False, rung=rung,
                             gpus_per_job=self.gpus_per_job)
        self.say(f"{what}: {len(runs) + scored} runs: submitting {len(submission.submitted)} "
                 f"({submission.executor.describe()}), "
                 f"{len(submission.done) + scored} already done, "
                 f"{len(submission.in_flight)} already in flight")
        submission.execute()
        if submission.executor.follows and (submission.submitted or submission.in_flight):
            return follow(batch, self.workdir, stream=self.stream)
        return view_spec(batch, self.workdir, explain=False)

    def _remember(self, runs: list[PlannedRun]) -> None:
        """The search's runs so far, in order (runs.json), for `ablate status`."""
        path = self.dir / "runs.json"
        known = json.loads(path.read_text()) if path.exists() else []
        keys = {k["key"] for k in known}
        for r in runs:
            if r.key not in keys:
                keys.add(r.key)
                known.append({"key": r.key, "experts": r.labels["experts"].split("+"),
                              "seed": r.config.seed,
                              "extra": r.extra})
        atomic_write_text(path, json.dumps(known, indent=1))

    def execute(self, runs: list[PlannedRun], what: str) -> dict[str, dict]:
        """Submit the runs not done (one submission), wait for all; run key -> its result."""
        unique = list({r.key: r for r in runs}.values())
        views = self._submit(unique, what)
        bad = [v for v in views if v.state != "DONE"]
        if bad:
            lines = [f"  {v.run.name} (run {v.run.key}): {v.state}: {v.reason or ''}"
                     + (f" (log: {v.log})" if v.log else "") for v in bad]
            raise SearchFailed(f"{what}: {len(bad)} of {len(views)} runs did not finish:\n"
                               + "\n".join(lines) + "\nfix the cause and run `ablate search` "
                               "again: finished runs are reused, interrupted ones resume")
        return {v.run.key: load_result(v.run_dir) for v in views}

    def execute_rung(self, runs: list[PlannedRun], rung: Rung, what: str
                     ) -> dict[str, RunResult | PausedRun]:
        unique = list({r.key: r for r in runs}.values())
        out: dict[str, RunResult | PausedRun] = {}
        for r in unique:
            found = _at_rung(RunDir(self.workdir / "runs" / r.key), rung)
            if found is not None:
                out[r.key] = found
        todo = [r for r in unique if r.key not in out]
        if not todo:
            self.say(f"{what}: {len(unique)} runs: all scored at this rung already")
            return out
        for v in self._submit(todo, what, rung, scored=len(out)):
            found = _at_rung(v.run_dir, rung)
            if found is None:
                raise SearchFailed(f"{what}: run {v.run.name} (run {v.run.key}) did not reach "
                                   f"the rung: {v.state}: {v.reason or ''}"
                                   + (f" (log: {v.log})" if v.log else "") +
                                   "\nfix the cause and run `ablate search` again: finished "
                                   "runs are reused, interrupted ones resume")
            out[v.run.key] = found
        return out

    def mark_stopped(self, run: PlannedRun, reason: str) -> None:
        run_dir = RunDir(self.workdir / "runs" / run.key)
        status = run_dir.status()
        if status["state"] == "PAUSED":
            run_dir.set_status("PAUSED", reason=reason,
                               **{k: v for k, v in status.items()
                                  if k not in ("state", "reason", "updated", "host", "pid")})

    def result_of(self, run: PlannedRun) -> RunResult:
        return load_result(RunDir(self.workdir / "runs" / run.key))

    def seed_run(self, run: PlannedRun, result: RunResult, extra: dict | None = None
                 ) -> SeedRun:
        spec = self.spec
        return SeedRun(run.key, run.config.seed, objective_value(spec, result),
                       normalized(spec, result), raw_values(spec, result), dict(extra or {}))

    def evaluate(self, arms: list[tuple[list[str], str | None]], what: str) -> list[Arm]:
        """Train and evaluate arms (expert list, expert added) at every seed."""
        if self.spec.tune is not None:
            self._tuner = self._tuner or Tuner(self.spec, self.dir, self)
            return self._tuner.evaluate(arms, what)
        if self.spec.halving is not None:
            self._halving = self._halving or HalvingRound(self.spec, self)
            return self._halving.evaluate(arms, what)
        planned = {(tuple(e), s): self.spec.run(e, s) for e, _ in arms for s in self.spec.seeds}
        results = self.execute(list(planned.values()), what)
        return [Arm(e, added, [self.seed_run(planned[(tuple(e), s)],
                                             results[planned[(tuple(e), s)].key])
                               for s in self.spec.seeds]) for e, added in arms]

    # --- the search -------------------------------------------------------------------
    def run(self) -> list[Round]:
        spec = self.spec
        # the executor, the tracking store, devices and batches, checked on the first
        # round's runs before the search writes its folder or its manifest
        first_runs = [spec.run(arm, seed) for arm in [spec.start] +
                      [spec.start + [e] for e in spec.pool] for seed in spec.seeds]
        preflight(first_runs, spec.file, self.workdir, self.executor, self.max_parallel,
                  self.profile, self.tracking_uri, self.gpus_per_job)
        self.dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.dir / "search.lock"):
            write_manifest(search_manifest(spec), self.workdir)
            atomic_write_text(self.dir / "search.json", json.dumps(
                {"name": spec.name, "file": spec.file, "identity": spec.identity,
                 "start": spec.start, "pool": spec.pool, "seeds": spec.seeds,
                 "objective": {b: dataclasses.asdict(n) for b, n in spec.objective.items()},
                 "stop": dataclasses.asdict(spec.stop),
                 **({"halving": to_plain(spec.halving)} if spec.halving else {})}, indent=1))
            for old in self.dir.glob("round-*.json"):
                old.unlink()   # rewritten below from the records, as far as the search gets
            rounds: list[Round] = []
            current_set, number = list(spec.start), 1
            first = [(current_set, None)] + [(current_set + [e], e) for e in spec.pool]
            arms = self.evaluate(first, "round 0 (start set) + round 1")
            current, candidates = arms[0], arms[1:]
            while True:
                # ties: the pool's order; a candidate halving stopped is out of the running
                finished = [c for c in candidates if c.finished]
                halving = self._halving.record if self._halving else None
                best = max(finished, key=lambda a: a.mean) if finished else None
                gain = best.mean - current.mean if best else 0.0
                spread = f" (std {best.std:.2f} over {len(best.runs)} seeds)" \
                    if best and len(best.runs) > 1 else ""
                if best is None:   # the evidence rule ended the search at a rung
                    decision, chosen = f"stopped: {halving['ended']}", None
                elif gain > spec.stop.min_gain:
                    decision = (f"added {best.added}: objective {best.mean:.2f}{spread}, "
                                f"{gain:+.2f} over {current.mean:.2f} > min_gain "
                                f"{spec.stop.min_gain}")
                    chosen = best.added
                else:
                    decision = (f"stopped: the best candidate, {best.added}, reaches "
                                f"{best.mean:.2f}{spread}, {gain:+.2f} over {current.mean:.2f}"
                                f", not more than min_gain {spec.stop.min_gain}")
                    chosen = None
                if halving and halving["stopped"] and best is not None:
                    decision += ("; successive halving stopped "
                                 + ", ".join(halving["stopped"]) + " at a rung")
                rounds.append(Round(number, current, candidates, chosen, decision, halving))
                self.save(rounds)
                self.say(f"round {number}: {decision}")
                if chosen is None:
                    break
                current, current_set = best, best.experts
                remaining = [e for e in spec.pool if e not in current_set]
                if len(current_set) >= spec.max_experts or not remaining:
                    why = (f"the size limit of {spec.max_experts} experts" if remaining
                           else "the pool is exhausted")
                    rounds[-1].decision += f"; stopped at {why}"
                    self.save(rounds)
                    self.say(f"search ends: {why}")
                    break
                number += 1
                # validate every arm of the round before anything of it is submitted
                candidates = self.evaluate([(current_set + [e], e) for e in remaining],
                                           f"round {number}")
            return rounds

    # --- outputs ----------------------------------------------------------------------
    def save(self, rounds: list[Round]) -> None:
        for r in rounds:
            atomic_write_text(self.dir / f"round-{r.number}.json",
                              json.dumps(r.to_dict(), indent=1))
        lineage, candidates = lineage_table(rounds), candidate_table(rounds)
        for name, table in (("lineage", lineage), ("candidates", candidates)):
            atomic_write_text(self.dir / f"{name}.csv", table.to_csv(index=False))
            atomic_write_text(self.dir / f"{name}.json",
                              table.to_json(orient="records", indent=1))


def _at_rung(run_dir: RunDir, rung: Rung) -> RunResult | PausedRun | None:
    """The run's record at `rung`, else its result if it finished without passing the rung,
    else None. A run that went through the rung keeps its record there after finishing, so a
    search run again decides from the same numbers."""
    return load_paused(run_dir, rung) or (load_result(run_dir) if run_dir.done else None)


def _scores_rounded(frame: pd.DataFrame, rounds: list[Round]) -> pd.DataFrame:
    """Scores to 2 decimals for printing; a tuned value (a learning rate) keeps its digits."""
    scores = [*(rounds[0].current.benchmark_means() if rounds else {}),
              "objective", "std", "change", "gain"]
    return frame.round({c: 2 for c in scores if c in frame})


def lineage_table(rounds: list[Round]) -> pd.DataFrame:
    """The chosen path (analysis.lineage builds it from the round records)."""
    return _scores_rounded(lineage_frame([r.to_dict() for r in rounds]), rounds)


def candidate_table(rounds: list[Round]) -> pd.DataFrame:
    """Every candidate of every round."""
    return _scores_rounded(candidate_frame([r.to_dict() for r in rounds]), rounds)
