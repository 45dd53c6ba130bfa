"""The benchmark registry and its record, apart from the modules that register into it (one per
benchmark, in this package; importing harness.evaluation.benchmarks registers them all).

A benchmark names its scorer and headline; a real one also carries the loader of its official
local files (the paths a run gives under `eval.sources`) and the writer of a small copy of
them; a synthetic one selects its questions from the run's generated eval data and stands in
for the benchmark family its skill imitates.

Each benchmark names its `protocol` (how its headline is computed, after which official
evaluation) and has a `revision` (harness.evaluation.revision: a hash of its scoring code and
of its scoring record); both go into every run's scores.json beside the number."""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.registry import Registry
from harness.data.llava import Conversation
from harness.evaluation.questions import Question, checked
from harness.evaluation.revision import scoring_revision
from harness.evaluation.scoring import SCORERS, is_closed_form
from models.templates import IMAGE_PLACEHOLDER

# (questions: file or folder, images: folder or None, cache: folder for extracted images, or
# None to read and check without writing anything: validation before a run exists)
Loader = Callable[[Path, Path | None, Path | None], list[Question]]
# (root folder) -> (questions path, images folder or None): the two values of a run's
# eval.sources entry, small files in the benchmark's official layout
FixtureWriter = Callable[[Path], tuple[Path, Path | None]]

# marks the fields that are code, not scoring: reading or writing files changes no score, so
# they stay out of the record the scoring revision hashes
_CODE = {"code": True}


@dataclass(frozen=True)
class Benchmark:
    name: str
    scorer: str
    family: str
    main_metric: str = "accuracy"      # the headline: the number the benchmark's papers print
    format: str | None = None          # its official file layout by name; None: synthetic
    max_new_tokens: int | None = None  # None: the run's eval.max_new_tokens
    # how the headline is computed, in words a reader can check against the official
    # evaluation ("LLaVA-1.5 eval_gqa: exact match after ..."); empty: the scorer's description
    protocol: str = ""
    loader: Loader | None = field(default=None, compare=False, repr=False, metadata=_CODE)
    fixture: FixtureWriter | None = field(default=None, compare=False, repr=False,
                                          metadata=_CODE)

    def __post_init__(self):
        if (self.format is None) != (self.loader is None):
            raise ValueError(f"benchmark '{self.name}': an official layout (`format`) and its "
                             "`loader` go together; synthetic benchmarks have neither")

    @property
    def protocol_name(self) -> str:
        """The protocol as records state it: `protocol`, else the scorer's registry line."""
        return self.protocol or f"{self.scorer}: {SCORERS.summary(self.scorer)}"

    @property
    def scoring_record(self) -> dict:
        """The record the revision hashes: every field but the code that reads and writes
        files."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not f.metadata.get("code")}

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
        return self.loader is not None

    @property
    def closed(self) -> bool:
        """Its questions carry the allowed answers (yes/no, option letters), so likelihood can
        rank them: its scorer is closed-form; synthetic questions carry none."""
        return self.needs_source and is_closed_form(SCORERS.get(self.scorer))

    def select(self, records: list[Conversation]) -> list[Conversation]:
        return [r for r in records if r.extra.get("benchmark") == self.name]

    def questions(self, questions: Path, images: Path | None, cache: Path | None
                  ) -> list[Question]:
        """The official files read by this benchmark's loader, every record checked (fields,
        images, ids unique, at least one question). cache None: read and check only, write
        nothing (MMBench's decoded images are not written)."""
        if self.loader is None:
            raise TypeError(f"benchmark '{self.name}' is synthetic: it has no files to load")
        return checked(self.loader(questions, images, cache), questions, self.family)

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
    return scoring_revision(bench.scoring_record, SCORERS.get(bench.scorer))


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def register_benchmark(bench: Benchmark) -> Benchmark:
    """Registers `bench` under its name, its family as the line `ablate list` prints."""
    return BENCHMARKS.register(bench.name, bench.family)(bench)
