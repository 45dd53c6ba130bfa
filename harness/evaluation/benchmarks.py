"""Benchmarks by id: where the questions come from and which scorer reads the answers.

The real benchmarks load their official local files (harness.evaluation.formats) from the
paths a run gives under `eval.sources`; the synthetic ones select their questions from the
run's generated eval data and stand in for the benchmark families their skills imitate.

Each benchmark names its `protocol` (how its headline is computed, after which official
evaluation) and has a `revision` (harness.evaluation.revision: a hash of its scoring code and
of this record); both go into every run's scores.json beside the number."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from core.registry import Registry
from harness.data.llava import Conversation
from harness.data.synthetic import SKILLS
from harness.evaluation.formats import LOADERS
from harness.evaluation.questions import Question, checked
from harness.evaluation.revision import scoring_revision
from harness.evaluation.scoring import SCORERS
from models.templates import IMAGE_PLACEHOLDER


@dataclass(frozen=True)
class Benchmark:
    name: str
    scorer: str
    family: str
    main_metric: str = "accuracy"      # the headline: the number the benchmark's papers print
    format: str | None = None          # a LOADERS id; None: synthetic, from the eval data
    max_new_tokens: int | None = None  # None: the run's eval.max_new_tokens
    # how the headline is computed, in words a reader can check against the official
    # evaluation ("LLaVA-1.5 eval_gqa: exact match after ..."); empty: the scorer's description
    protocol: str = ""

    @property
    def protocol_name(self) -> str:
        """The protocol as records state it: `protocol`, else the scorer's registry line."""
        return self.protocol or f"{self.scorer}: {SCORERS.summary(self.scorer)}"

    @property
    def revision(self) -> str:
        """A short hash of the code that scores this benchmark and of this record: a change
        to either changes it, and runs scored under another revision are scored again."""
        return _revision(self)

    @property
    def unit(self) -> str:
        """How the headline prints: `points` on the published scale (MME 0-2000, OCRBench
        0-1000), `fraction` as a percentage."""
        return "points" if self.main_metric.endswith("points") else "fraction"

    def headline(self, metrics: dict[str, float]) -> dict:
        """The record of this benchmark's headline in a run (scores.json): which metric,
        its value and its unit, so no reader of the records has to know the benchmark, and
        the protocol and scoring revision that produced it."""
        if self.main_metric not in metrics:
            raise KeyError(f"benchmark '{self.name}': its scorer '{self.scorer}' reported "
                           f"{', '.join(metrics)} but not its headline '{self.main_metric}'")
        return {"metric": self.main_metric, "value": float(metrics[self.main_metric]),
                "unit": self.unit, "protocol": self.protocol_name, "revision": self.revision}

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

    def questions(self, questions: Path, images: Path | None, cache: Path | None
                  ) -> list[Question]:
        """The official files read by this benchmark's loader, every record checked (fields,
        images, ids unique, at least one question). cache None: read and check only, write
        nothing (MMBench's decoded images are not written)."""
        return checked(LOADERS.get(self.format)(questions, images, cache), questions,
                       self.family)

    def check(self, questions: Path, images: Path | None) -> int:
        """How many questions the files hold, read exactly as a run will read them, before
        anything is written; raises BenchmarkFileError naming the file and the record. Once
        per file content in a process: a grid's runs share their benchmark files."""
        # the image folder by its path only: stat-ing COCO's 40K images per run of a grid
        # would cost more than the check
        key = (self.format, _signature(questions), str(images))
        if key not in _CHECKED:
            _CHECKED[key] = len(self.questions(questions, images, None))
        return _CHECKED[key]

    def load(self, questions: Path, images: Path | None, cache: Path) -> list[Conversation]:
        """The official files as conversations whose one open turn is the question's prompt."""
        out = []
        for q in self.questions(questions, images, cache):
            out.append(Conversation(q.id, q.image, [(f"{IMAGE_PLACEHOLDER}\n{q.prompt}", "")],
                                    {"benchmark": self.name, "answers": q.answers,
                                     "choices": q.choices, "meta": q.meta}))
        return out


_CHECKED: dict[tuple, int] = {}   # (format, files' signature) -> question count


def _signature(path: Path) -> tuple:
    """A file's or folder's path, sizes and modification times (every file under a folder,
    MME's and POPE's layouts): a changed file is checked again."""
    path = Path(path)
    if not path.is_dir():
        stat = path.stat() if path.exists() else None
        return (str(path), stat and (stat.st_size, stat.st_mtime_ns))
    return (str(path), tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                                    for p in path.rglob("*") if p.is_file())))


@functools.cache
def _revision(bench: Benchmark) -> str:
    """Once per process: the sources do not change under a running harness, and a report
    asks for every benchmark of every run."""
    return scoring_revision(bench, SCORERS.get(bench.scorer))


# scorers of questions with a closed set of allowed answers
CLOSED_SCORERS = ("pope", "mme", "scienceqa_choice", "seed_choice", "circular_choice")

BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
for _skill in SKILLS.values():
    BENCHMARKS.register(_skill.benchmark, f"synthetic '{_skill.name}' questions, imitating "
                        f"{_skill.family}")(Benchmark(_skill.benchmark, _skill.scorer,
                                                      _skill.family))

_LLAVA = "LLaVA-1.5's evaluation"
for _b in [
    Benchmark("gqa", "gqa_exact_match", "GQA testdev-balanced", format="gqa",
              protocol=f"{_LLAVA} (convert_gqa_for_eval.py + GQA eval.py): the answer with "
                       "final periods stripped, lower-cased, equals the reference"),
    Benchmark("textvqa", "vqa_accuracy", "TextVQA val (10 answers, VQA accuracy), the question "
              "alone", format="textvqa",
              protocol="lmms-eval's default prompt (no OCR tokens); EvalAI answer processor "
                       "and VQA accuracy as LLaVA-1.5's m4c_evaluator.py"),
    Benchmark("textvqa_ocr", "vqa_accuracy", "TextVQA val with the reference OCR tokens in the "
              "prompt (LLaVA-1.5's 58.2)", format="textvqa_ocr",
              protocol=f"{_LLAVA} (llava_textvqa_val_v051_ocr prompt with Rosetta OCR tokens, "
                       "m4c_evaluator.py): EvalAI answer processor, VQA accuracy"),
    Benchmark("pope", "pope", "POPE random/popular/adversarial", "mean_f1", format="pope",
              protocol=f"{_LLAVA} (eval_pope.py): first sentence no/not -> no, else yes; mean "
                       "of the three splits' F1"),
    Benchmark("mme", "mme", "MME perception and cognition", "perception_points", format="mme",
              protocol="MME eval_tool/calculation.py on LLaVA-1.5's prompt (llava_mme.jsonl): "
                       "acc + acc+ per subtask, perception summed"),
    Benchmark("scienceqa_img", "scienceqa_choice", "ScienceQA-IMG test", format="scienceqa",
              protocol=f"{_LLAVA} (eval_science_qa.py): letter, 'X. ' or one 'The answer is "
                       "X.'; accuracy on the questions with an image"),
    Benchmark("mmbench_dev", "circular_choice", "MMBench dev, CircularEval",
              format="mmbench",
              protocol="VLMEvalKit e8e78f0 CircularEval with exact matching (can_infer); "
                       "answers its LLM judge would read count wrong"),
    Benchmark("seed_bench_img", "seed_choice", "SEED-Bench image", format="seed_bench",
              protocol=f"{_LLAVA} (convert_seed_for_submission.py): the answer is the letter; "
                       "accuracy on image questions"),
    Benchmark("chartqa", "relaxed_accuracy", "ChartQA test (relaxed accuracy)",
              "relaxed_accuracy", format="chartqa",
              protocol="pix2struct metrics.py relaxed_correctness: numbers within 5%, else "
                       "equal ignoring case"),
    Benchmark("docvqa", "anls", "DocVQA val (ANLS)", "anls", format="docvqa", max_new_tokens=32,
              protocol="DocVQA/RRC ANLS (as lmms-eval's anls): threshold 0.5 kept, distance "
                       "over the longer raw string"),
    Benchmark("ocrbench", "ocrbench", "OCRBench (points out of 1000)", "points",
              format="ocrbench", max_new_tokens=64,
              protocol="OCRBench scripts/LLaVA1_5.py: a reference contained in the answer"),
]:
    BENCHMARKS.register(_b.name, _b.family)(_b)
