"""The evidence rule of a halving rung: which candidates the rung's paired per-question scores
show to be behind, at a stated risk of stopping the round's best.

At a rung every contender has answered the same selection questions. A contender's score on
a question (averaged over its seeds) is put on the objective's scale: 100 / (max - min) times
the benchmark's weight share, so the mean over a benchmark's questions, averaged over the
benchmarks, is the objective's weighted mean (analysis.stats.paired_bootstrap averages the
benchmarks). The leader is the contender with the highest objective; each other contender c
gets the paired bootstrap interval of (c - leader), the report's bootstrap, questions
resampled within each benchmark. c is stopped when the interval's upper end is below
-margin (the search's min_gain): even at its best it trails the leader by more than the
smallest gain the search acts on.

The risk. Assumption: at every rung, the round's true best (by its finished objective) does
not trail any contender's expected rung score by more than the margin; learning curves may
cross, but not by more than that. Then the best is stopped only when one of its intervals
misses on the high side. Each interval is one-sided at risk / (comparisons), the comparisons
being (contenders - 1) x rungs (Bonferroni), so the chance of stopping the best in a round
is at most `risk`, to the bootstrap's accuracy. tests/test_evidence_rule.py measures it on
simulated learning curves, near ties included; docs/search.md gives the numbers."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.stats import Interval, paired_bootstrap

# the headline metrics every scorer computes as the mean of its per-question scores, so that
# per-question differences add up to the headline's difference (tests/test_benchmark_contract)
PER_QUESTION_MEANS = ("accuracy", "anls")

QuestionScores = dict[str, dict[str, float]]    # benchmark -> question id -> score


@dataclass(frozen=True)
class Scale:
    """How one benchmark's per-question scores count in the objective."""
    span: float        # its normalization's max - min
    weight: float


def comparison_level(risk: float, contenders: int, rungs: int) -> float:
    """The two-sided level of each rung interval whose upper tail is risk / comparisons."""
    comparisons = max(1, (contenders - 1) * rungs)
    return 1.0 - 2.0 * risk / comparisons


def objective_points(scores: list[QuestionScores], scales: dict[str, Scale]
                     ) -> dict[str, dict[str, float]]:
    """One contender's per-question scores, averaged over its seeds' runs and put on the
    objective's scale (see the module's docstring); only questions every seed answered."""
    total = sum(s.weight for s in scales.values())
    out = {}
    for bench, scale in scales.items():
        factor = 100.0 / scale.span * scale.weight * len(scales) / total
        ids = set.intersection(*(set(s[bench]) for s in scores))
        out[bench] = {q: factor * sum(s[bench][q] for s in scores) / len(scores)
                      for q in ids}
    return out


def versus(ours: dict[str, dict[str, float]], theirs: dict[str, dict[str, float]],
           level: float, resamples: int | None = None) -> Interval:
    """The paired bootstrap interval of (ours - theirs) over the questions both answered."""
    diffs = {}
    for bench in ours:
        both = sorted(set(ours[bench]) & set(theirs.get(bench, {})))
        diffs[bench] = np.array([ours[bench][q] - theirs[bench][q] for q in both])
    kwargs = {"resamples": resamples} if resamples else {}
    return paired_bootstrap(diffs, level=level, **kwargs)


def mean_points(points: dict[str, dict[str, float]]) -> float:
    return float(np.mean([np.mean(list(p.values())) for p in points.values()]))


@dataclass(frozen=True)
class RungVerdict:
    leader: str
    intervals: dict[str, Interval]    # contender -> (contender - leader), the leader left out
    stopped: list[str]                # in the contenders' order


def judge(points: dict[str, dict[str, dict[str, float]]], margin: float, level: float,
          resamples: int | None = None) -> RungVerdict:
    """`points`: contender -> its objective points per question (objective_points); of two
    contenders with the same mean the earlier in `points` leads (the caller's pool order).
    Stops whoever trails the leader beyond `margin` with the interval's upper end."""
    names = list(points)
    means = {n: mean_points(points[n]) for n in names}
    leader = max(names, key=lambda n: (means[n], -names.index(n)))
    intervals = {n: versus(points[n], points[leader], level, resamples)
                 for n in names if n != leader}
    stopped = [n for n in names if n in intervals and intervals[n].high < -margin]
    return RungVerdict(leader, intervals, stopped)
