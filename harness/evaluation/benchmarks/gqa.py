"""GQA testdev-balanced (Hudson & Manning, 2019): testdev_balanced_questions.json ({qid:
{imageId, question, answer}}) and images/<imageId>.jpg, asked with LLaVA-1.5's short-answer
suffix and scored by exact match as LLaVA-1.5's convert_gqa_for_eval.py + GQA's eval.py."""
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
    """GQA testdev_balanced_questions.json: {qid: {imageId, question, answer}};
    images/<imageId>.jpg."""
    data = read_json(questions, "GQA")
    if not isinstance(data, dict):
        raise BenchmarkFileError(f"{questions}: expected GQA's object question id -> question, "
                                 f"got a {type(data).__name__}")
    images = image_folder(images, questions, "GQA")
    out = []
    for qid, rec in data.items():
        where = f"question {qid}"
        require(rec, {"imageId": str, "question": str, "answer": str}, questions, where, "GQA")
        out.append(Question(str(qid), image_at(images, f"{rec['imageId']}.jpg", questions, where),
                            short_answer(rec["question"]), [rec["answer"]],
                            meta={"image": rec["imageId"]}))
    return out


def write_fixture(root: Path) -> tuple[Path, Path]:
    data = {"201": {"imageId": "n1", "question": "What color is the car?", "answer": "red",
                    "fullAnswer": "The car is red.", "types": {}},
            "202": {"imageId": "n2", "question": "Is it on the left?", "answer": "no"}}
    for img in ("n1", "n2"):
        png(root / "images" / f"{img}.jpg")
    (root / "testdev_balanced_questions.json").write_text(json.dumps(data))
    return root / "testdev_balanced_questions.json", root / "images"


GQA = register_benchmark(Benchmark(
    "gqa", "gqa_exact_match", "GQA testdev-balanced", format="gqa", loader=load,
    fixture=write_fixture,
    protocol="LLaVA-1.5's evaluation (convert_gqa_for_eval.py + GQA eval.py): the answer with "
             "final periods stripped, lower-cased, equals the reference"))
