"""ChartQA test (Masry et al., 2022): test_human.json or test_augmented.json ([{imgname, query,
label}]) and png/<imgname>, asked with LLaVA-1.5's short-answer suffix (as LLaVA-NeXT asks
it) and scored by pix2struct's relaxed accuracy."""
from __future__ import annotations

import json
from pathlib import Path

from harness.evaluation.benchmarks.registry import Benchmark, register_benchmark
from harness.evaluation.fixtures import png
from harness.evaluation.prompts import short_answer
from harness.evaluation.questions import (
    BenchmarkFileError,
    Question,
    image_at,
    image_folder,
    read_json,
    require,
)


def load(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    """ChartQA test_human.json / test_augmented.json: [{imgname, query, label}];
    png/<imgname>."""
    data = read_json(questions, "ChartQA")
    if not isinstance(data, list):
        raise BenchmarkFileError(f"{questions}: expected ChartQA's list of questions")
    images = image_folder(images, questions, "ChartQA")
    split = questions.stem
    out = []
    for i, rec in enumerate(data):
        where = f"record {i}"
        require(rec, {"imgname": str, "query": str, "label": (str, int, float)}, questions,
                where, "ChartQA")
        out.append(Question(f"{split}-{i}", image_at(images, rec["imgname"], questions, where),
                            short_answer(rec["query"]), [str(rec["label"])],
                            meta={"split": split}))
    return out


def write_fixture(root: Path) -> tuple[Path, Path]:
    data = [{"imgname": "c1.png", "query": "What is the peak?", "label": "12.4"},
            {"imgname": "c2.png", "query": "Share of cars?", "label": "45%"},
            {"imgname": "c1.png", "query": "Which is larger?", "label": "Germany"},
            {"imgname": "c2.png", "query": "Minimum?", "label": "0"}]
    for img in ("c1", "c2"):
        png(root / "png" / f"{img}.png")
    (root / "test_human.json").write_text(json.dumps(data))
    return root / "test_human.json", root / "png"


CHARTQA = register_benchmark(Benchmark(
    "chartqa", "relaxed_accuracy", "ChartQA test (relaxed accuracy)", "relaxed_accuracy",
    format="chartqa", loader=load, fixture=write_fixture,
    protocol="pix2struct metrics.py relaxed_correctness: numbers within 5%, else equal "
             "ignoring case"))
