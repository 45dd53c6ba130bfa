"""SEED-Bench image (Li et al., 2023): SEED-Bench.json ({questions: [{question_id, question,
choice_a-d, answer, data_id, data_type}]}, its video questions skipped) and SEED-Bench-image/.
Prompt as LLaVA-1.5's: the question, the lettered options, the letter instruction; scored as
its convert_seed_for_submission.py: the answer is the letter."""
from __future__ import annotations

import json
from pathlib import Path

from harness.evaluation.benchmarks.registry import Benchmark, register_benchmark
from harness.evaluation.fixtures import png
from harness.evaluation.prompts import multiple_choice
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
    """SEED-Bench.json: {questions: [{question_id, question, choice_a-d, answer, data_id,
    data_type}]}; image questions only."""
    data = read_json(questions, "SEED-Bench")
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise BenchmarkFileError(f"{questions}: expected SEED-Bench's object with a "
                                 "`questions` list")
    images = image_folder(images, questions, "SEED-Bench", "its image folder (SEED-Bench-image)")
    out = []
    keys = {"question_id": (str, int), "question": str, "answer": str, "data_id": str,
            "data_type": str, **{f"choice_{c}": str for c in "abcd"}}
    for i, rec in enumerate(data["questions"]):
        where = f"questions[{i}]"
        if isinstance(rec, dict) and rec.get("data_type") not in (None, "image"):
            continue
        require(rec, keys, questions, where, "SEED-Bench")
        options = [rec[f"choice_{c}"] for c in "abcd"]
        if rec["answer"] not in "ABCD":
            raise bad_record(questions, where, f"answer {rec['answer']!r} is not A, B, C or D")
        out.append(Question(str(rec["question_id"]),
                            image_at(images, rec["data_id"], questions, where),
                            multiple_choice(rec["question"], options), [rec["answer"]],
                            list("ABCD"), {"options": options,
                                           "category": str(rec.get("question_type_id", ""))}))
    if not out:
        raise BenchmarkFileError(f"{questions}: no image question (data_type 'image')")
    return out


def write_fixture(root: Path) -> tuple[Path, Path]:
    data = {"questions": [
        {"question_id": "s1", "question": "How many cars?", "choice_a": "1", "choice_b": "2",
         "choice_c": "3", "choice_d": "4", "answer": "C", "data_id": "1454.jpg",
         "data_type": "image", "question_type_id": 5},
        {"question_id": "s2", "question": "A video question", "choice_a": "x", "choice_b": "y",
         "choice_c": "z", "choice_d": "w", "answer": "A", "data_id": "v.mp4",
         "data_type": "video", "question_type_id": 10}],
        "question_type": {"Instances Counting": 5}}
    png(root / "SEED-Bench-image" / "1454.jpg")
    (root / "SEED-Bench.json").write_text(json.dumps(data))
    return root / "SEED-Bench.json", root / "SEED-Bench-image"


SEED_BENCH_IMG = register_benchmark(Benchmark(
    "seed_bench_img", "seed_choice", "SEED-Bench image", format="seed_bench", loader=load,
    fixture=write_fixture,
    protocol="LLaVA-1.5's evaluation (convert_seed_for_submission.py): the answer is the "
             "letter; accuracy on image questions"))
