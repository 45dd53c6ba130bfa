"""Benchmarks by id: where the questions come from and which scorer reads the answers.

The real benchmarks load their official local files (harness.evaluation.formats) from the
paths a run gives under `eval.sources`; the synthetic ones select their questions from the
run's generated eval data and stand in for the benchmark families their skills imitate."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.registry import Registry
from harness.data.llava import Conversation
from harness.data.synthetic import SKILLS
from harness.evaluation.formats import LOADERS
from models.templates import IMAGE_PLACEHOLDER


@dataclass(frozen=True)
class Benchmark:
    name: str
    scorer: str
    family: str
    main_metric: str = "accuracy"      # the headline: the number the benchmark's papers print
    format: str | None = None          # a LOADERS id; None: synthetic, from the eval data
    max_new_tokens: int | None = None  # None: the run's eval.max_new_tokens

    @property
    def unit(self) -> str:
        """How the headline prints: `points` on the published scale (MME 0-2000, OCRBench
        0-1000), `fraction` as a percentage."""
        return "points" if self.main_metric.endswith("points") else "fraction"

    def headline(self, metrics: dict[str, float]) -> dict:
        """The record of this benchmark's headline in a run (scores.json): which metric,
        its value and its unit, so no reader of the records has to know the benchmark."""
        if self.main_metric not in metrics:
            raise KeyError(f"benchmark '{self.name}': its scorer '{self.scorer}' reported "
                           f"{', '.join(metrics)} but not its headline '{self.main_metric}'")
        return {"metric": self.main_metric, "value": float(metrics[self.main_metric]),
                "unit": self.unit}

    @property
    def needs_source(self) -> bool:
        return self.format is not None

    @property
    def closed(self) -> bool:
        """Its questions carry the allowed answers (yes/no, option letters), so likelihood can
        rank them; synthetic questions carry none."""
        return self.needs_source and self.scorer in CLOSED_SCORERS

    def select(self, records: list[Conversation]) -> list[Conversation]:
        return [r for r in records if r.extra.get("benchmark") == self.name]

    def load(self, questions: Path, images: Path | None, cache: Path) -> list[Conversation]:
        """The official files as conversations whose one open turn is the question's prompt."""
        out = []
        for q in LOADERS.get(self.format)(questions, images, cache):
            out.append(Conversation(q.id, q.image, [(f"{IMAGE_PLACEHOLDER}\n{q.prompt}", "")],
                                    {"benchmark": self.name, "answers": q.answers,
                                     "choices": q.choices, "meta": q.meta}))
        return out


# scorers of questions with a closed set of allowed answers
CLOSED_SCORERS = ("pope", "mme", "scienceqa_choice", "seed_choice", "circular_choice")

BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
for _skill in SKILLS.values():
    BENCHMARKS.register(_skill.benchmark, f"synthetic '{_skill.name}' questions, imitating "
                        f"{_skill.family}")(Benchmark(_skill.benchmark, _skill.scorer,
                                                      _skill.family))

for _b in [
    Benchmark("gqa", "gqa_exact_match", "GQA testdev-balanced", format="gqa"),
    Benchmark("textvqa", "vqa_accuracy", "TextVQA val (10 answers, VQA accuracy), the question "
              "alone", format="textvqa"),
    Benchmark("textvqa_ocr", "vqa_accuracy", "TextVQA val with the reference OCR tokens in the "
              "prompt (LLaVA-1.5's 58.2)", format="textvqa_ocr"),
    Benchmark("pope", "pope", "POPE random/popular/adversarial", "mean_f1", format="pope"),
    Benchmark("mme", "mme", "MME perception and cognition", "perception_points", format="mme"),
    Benchmark("scienceqa_img", "scienceqa_choice", "ScienceQA-IMG test", format="scienceqa"),
    Benchmark("mmbench_dev", "circular_choice", "MMBench dev, CircularEval",
              format="mmbench"),
    Benchmark("seed_bench_img", "seed_choice", "SEED-Bench image", format="seed_bench"),
    Benchmark("chartqa", "relaxed_accuracy", "ChartQA test (relaxed accuracy)",
              "relaxed_accuracy", format="chartqa"),
    Benchmark("docvqa", "anls", "DocVQA val (ANLS)", "anls", format="docvqa", max_new_tokens=32),
    Benchmark("ocrbench", "ocrbench", "OCRBench (points out of 1000)", "points",
              format="ocrbench", max_new_tokens=64),
]:
    BENCHMARKS.register(_b.name, _b.family)(_b)
