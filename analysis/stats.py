"""The statistics behind a table's numbers: mean and spread over seeds, and a paired bootstrap
confidence interval of an arm's difference to the baseline over the same evaluation questions.

Pairing: both arms answered the same questions, so the difference is taken question by
question (each arm's score on a question averaged over its seeds first), and the questions are
resampled with replacement, separately within each benchmark so each benchmark keeps its
size. The statistic is the mean over benchmarks of the mean difference, i.e. the change of
the table's average column; with one benchmark it is that benchmark's change. The interval is
the percentile interval of that statistic over the resamples."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95
SEED = 0
_CHUNK = 500          # resamples drawn at once: bounds memory on benchmarks of 10k+ questions


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); one value has no spread (NaN)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    questions: int


def paired_bootstrap(differences: dict[str, np.ndarray], resamples: int = RESAMPLES,
                     level: float = LEVEL, seed: int = SEED) -> Interval:
    """`differences`: benchmark -> per-question (arm - baseline). The same seed gives the same
    interval, so a report re-rendered from the same records prints the same numbers."""
    diffs = {b: np.asarray(d, dtype=float) for b, d in differences.items() if len(d)}
    if not diffs:
        raise ValueError("no paired questions to bootstrap")
    rng = np.random.default_rng(seed)
    stats = np.zeros(resamples)
    for d in diffs.values():
        for start in range(0, resamples, _CHUNK):
            n = min(_CHUNK, resamples - start)
            picks = rng.integers(0, d.size, size=(n, d.size))
            stats[start:start + n] += d[picks].mean(axis=1)
    stats /= len(diffs)
    estimate = float(np.mean([d.mean() for d in diffs.values()]))
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), sum(d.size for d in diffs.values()))
