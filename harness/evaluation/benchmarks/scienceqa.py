"""ScienceQA-IMG test (Lu et al., 2022): problems.json (test split, the questions with an
image) and the test image folder <pid>/image.png. Prompt as LLaVA-1.5's llava_test_CQM-A.json:
the hint as context first, the lettered options, then the letter instruction; scored as its
eval_science_qa.py reads the letter."""
from __future__ import annotations

import json
from pathlib import Path

from harness.evaluation.benchmarks.registry import Benchmark, register_benchmark
from harness.evaluation.fixtures import png
from harness.evaluation.prompts import LETTERS, multiple_choice
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
    """ScienceQA problems.json: {pid: {question, choices, answer, hint, image, split}};
    the test image folder <pid>/image.png."""
    data = read_json(questions, "ScienceQA")
    if not isinstance(data, dict):
        raise BenchmarkFileError(f"{questions}: expected ScienceQA's object pid -> problem")
    images = image_folder(images, questions, "ScienceQA-IMG",
                          "the test image folder (<pid>/image.png)")
    out = []
    for pid, rec in data.items():
        where = f"problem {pid}"
        require(rec, {"question": str, "choices": list, "answer": int, "split": str}, questions,
                where, "ScienceQA")
        if rec["split"] != "test" or not rec.get("image"):
            continue
        choices = [str(c) for c in rec["choices"]]
        if not 0 <= rec["answer"] < len(choices):
            raise bad_record(questions, where, f"answer index {rec['answer']} is outside its "
                                               f"{len(choices)} choices")
        hint = rec.get("hint") or ""   # "Context: " only for a hint, as in CQM-A
        prompt = multiple_choice(rec["question"], choices, f"Context: {hint}" if hint else None)
        out.append(Question(str(pid), image_at(images, f"{pid}/{rec['image']}", questions, where),
                            prompt, [LETTERS[rec["answer"]]], list(LETTERS[:len(choices)]),
                            {"options": choices, "subject": rec.get("subject", "")}))
    if not out:
        raise BenchmarkFileError(f"{questions}: no test-split question with an image")
    return out


def write_fixture(root: Path) -> tuple[Path, Path]:
    problems = {
        "5": {"question": "Which is a mammal?", "choices": ["shark", "whale", "trout"],
              "answer": 1, "hint": "", "image": "image.png", "split": "test",
              "subject": "natural science"},
        "6": {"question": "Which word is a noun?", "choices": ["run", "table"], "answer": 1,
              "hint": "Select the best answer.", "image": "image.png", "split": "test"},
        "7": {"question": "No image here", "choices": ["a", "b"], "answer": 0, "hint": "",
              "image": None, "split": "test"},
        "8": {"question": "Train split", "choices": ["a", "b"], "answer": 0, "hint": "",
              "image": "image.png", "split": "train"}}
    for pid in ("5", "6"):
        png(root / "test" / pid / "image.png")
    (root / "problems.json").write_text(json.dumps(problems))
    return root / "problems.json", root / "test"


SCIENCEQA_IMG = register_benchmark(Benchmark(
    "scienceqa_img", "scienceqa_choice", "ScienceQA-IMG test", format="scienceqa", loader=load,
    fixture=write_fixture,
    protocol="LLaVA-1.5's evaluation (eval_science_qa.py): letter, 'X. ' or one 'The answer is "
             "X.'; accuracy on the questions with an image"))
