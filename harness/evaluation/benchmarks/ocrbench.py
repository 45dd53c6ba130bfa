"""OCRBench (Liu et al., 2023): OCRBench.json ([{id, dataset_name, type, image_path, question,
answers}]) with image paths relative to the image folder, asked with LLaVA-1.5's short-answer
suffix (OCRBench/scripts/LLaVA1_5.py:69 adds the same) and scored as that script scores: a
reference contained in the answer, one point each."""
from __future__ import annotations

import json
from pathlib import Path

from harness.evaluation.benchmarks.registry import Benchmark, register_benchmark
from harness.evaluation.fixtures import png
from harness.evaluation.prompts import short_answer
from harness.evaluation.questions import (
    BenchmarkFileError,
    Question,
    bad_record,
    image_at,
    image_folder,
    read_json,
    require,
)


def load(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    """OCRBench.json: [{id, dataset_name, type, image_path, question, answers}]; image_path
    relative to the image folder."""
    data = read_json(questions, "OCRBench")
    if not isinstance(data, list):
        raise BenchmarkFileError(f"{questions}: expected OCRBench's list of questions")
    images = image_folder(images, questions, "OCRBench")
    out = []
    for i, rec in enumerate(data):
        where = f"record {i}"
        require(rec, {"image_path": str, "question": str, "answers": (str, list), "type": str,
                      "dataset_name": str}, questions, where, "OCRBench")
        answers = rec["answers"] if isinstance(rec["answers"], list) else [rec["answers"]]
        if not answers:
            raise bad_record(questions, where, "empty `answers`")
        out.append(Question(str(rec.get("id", i)),
                            image_at(images, rec["image_path"], questions, where),
                            short_answer(rec["question"]), [str(a) for a in answers],
                            meta={"type": rec["type"], "dataset": rec["dataset_name"]}))
    return out


def write_fixture(root: Path) -> tuple[Path, Path]:
    data = [{"id": 0, "dataset_name": "IIIT5K", "type": "Regular Text Recognition",
             "image_path": "IIIT5K/o1.png", "question": "what is written in the image?",
             "answers": ["HOTEL"]},
            {"id": 1, "dataset_name": "HME100k", "type": "Handwritten Mathematical Expression "
             "Recognition", "image_path": "HME100k/o2.png", "question": "Write the formula.",
             "answers": "x ^ { 2 } + 1"}]
    png(root / "IIIT5K" / "o1.png")
    png(root / "HME100k" / "o2.png")
    (root / "OCRBench.json").write_text(json.dumps(data))
    return root / "OCRBench.json", root


OCRBENCH = register_benchmark(Benchmark(
    "ocrbench", "ocrbench", "OCRBench (points out of 1000)", "points", format="ocrbench",
    max_new_tokens=64, loader=load, fixture=write_fixture,
    protocol="OCRBench scripts/LLaVA1_5.py: a reference contained in the answer"))
