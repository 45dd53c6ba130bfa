"""What a search round is made of, as data: a seed's run (SeedRun), an arm (an expert set at
every seed, with its tuning), a decided round (Round), and the one thing an arm's evaluation
needs from the search that runs it (ArmRunner), so the tuner and the greedy loop share these
types without importing each other."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from analysis.stats import mean_std
from harness.config.selection import Rung
from harness.runs.pipeline import PausedRun, RunResult
from harness.specs import PlannedRun


class ArmRunner(Protocol):
    def execute(self, runs: list[PlannedRun], what: str) -> dict[str, RunResult]:
        """Submit the runs not done as one submission, wait for all; run key -> result."""

    def execute_rung(self, runs: list[PlannedRun], rung: Rung, what: str
                     ) -> dict[str, RunResult | PausedRun]:
        """Submit the runs neither done nor scored at `rung`, each to pause there, as one
        submission; wait for all; run key -> its rung record (or its result, if it had
        finished before)."""

    def mark_stopped(self, run: PlannedRun, reason: str) -> None:
        """Say in the run's status why successive halving left it paused."""

    def seed_run(self, run: PlannedRun, result: RunResult, extra: dict | None = None
                 ) -> SeedRun:
        """One finished run, scored by the search's objective."""

    def result_of(self, run: PlannedRun) -> RunResult:
        """A finished run's result, read from its run directory."""


@dataclass
class SeedRun:
    key: str
    seed: int
    objective: float
    scores: dict[str, float]         # benchmark -> normalized 0-100
    raw: dict[str, float]            # benchmark -> the metric as the benchmark reports it
    extra: dict[str, Any] = field(default_factory=dict)   # a tuned value


@dataclass
class Arm:
    experts: list[str]
    added: str | None
    runs: list[SeedRun]              # empty for a candidate successive halving stopped
    tuning: dict | None = None       # {"path", "value", "trials": [{"value", "objective"}]}
    rungs: list[dict] = field(default_factory=list)   # its scores at each rung it reached
    stopped: dict | None = None      # the rung that stopped it, with the numbers behind it

    @property
    def finished(self) -> bool:
        return self.stopped is None

    @property
    def mean(self) -> float:
        return mean_std([r.objective for r in self.runs])[0]

    @property
    def std(self) -> float:
        """The seeds' sample standard deviation; one seed measures no spread, recorded as 0."""
        sd = mean_std([r.objective for r in self.runs])[1]
        return sd if math.isfinite(sd) else 0.0

    def benchmark_means(self) -> dict[str, float]:
        return {b: sum(r.scores[b] for r in self.runs) / len(self.runs)
                for b in (self.runs[0].scores if self.runs else {})}

    def raw_means(self) -> dict[str, float]:
        return {b: sum(r.raw[b] for r in self.runs) / len(self.runs)
                for b in (self.runs[0].raw if self.runs else {})}

    def to_dict(self) -> dict:
        return {"experts": self.experts, "added": self.added, "mean": self.mean,
                "std": self.std, "benchmarks": self.benchmark_means(),
                "raw": self.raw_means(), "runs": [dataclasses.asdict(r) for r in self.runs],
                "tuning": self.tuning,
                **({"rungs": self.rungs, "stopped": self.stopped} if self.rungs else {})}


@dataclass
class Round:
    number: int
    current: Arm                      # the set before this round's addition
    candidates: list[Arm]
    chosen: str | None
    decision: str
    halving: dict | None = None       # the rungs' decisions (harness.search.halving)

    def to_dict(self) -> dict:
        return {"round": self.number, "current": self.current.to_dict(),
                "candidates": [c.to_dict() for c in self.candidates],
                "chosen": self.chosen, "decision": self.decision,
                **({"halving": self.halving} if self.halving else {})}
