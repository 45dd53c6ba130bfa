"""The synthetic benchmarks, one per skill of the generated data (harness.data.synthetic): each
selects its questions from the run's generated eval data by its id and stands in for the
benchmark family its skill imitates; no files, no loader, no fixture."""
from __future__ import annotations

from harness.data.synthetic import SKILLS
from harness.evaluation.benchmarks.registry import BENCHMARKS, Benchmark

SYNTHETIC = tuple(
    BENCHMARKS.register(skill.benchmark, f"synthetic '{skill.name}' questions, imitating "
                        f"{skill.family}")(Benchmark(skill.benchmark, skill.scorer, skill.family))
    for skill in SKILLS.values())
