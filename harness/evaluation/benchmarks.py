"""Benchmarks by id: which questions (from the run's eval data) and which scorer. The
synthetic ones stand in for the benchmark families their skills imitate; loaders for the real
benchmark files plug into the same registry."""
from __future__ import annotations

from dataclasses import dataclass

from harness.data.llava import Conversation
from harness.data.synthetic import SKILLS
from models.registry import Registry


@dataclass(frozen=True)
class Benchmark:
    name: str
    scorer: str
    family: str
    main_metric: str = "accuracy"

    def select(self, records: list[Conversation]) -> list[Conversation]:
        return [r for r in records if r.extra.get("benchmark") == self.name]


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
for _skill in SKILLS.values():
    BENCHMARKS.register(_skill.benchmark, f"synthetic '{_skill.name}' questions, imitating "
                        f"{_skill.family}")(Benchmark(_skill.benchmark, _skill.scorer,
                                                      _skill.family))
