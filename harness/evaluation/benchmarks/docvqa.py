"""DocVQA val (Mathew et al., 2021): val_v1.0.json ({data: [{questionId, question, image,
answers}]}) with image paths relative to the image folder, asked with LLaVA-1.5's short-answer
suffix (as LLaVA-NeXT asks it) and scored by ANLS."""
from __future__ import annotations

import json
from pathlib import Path

from harness.evaluation.benchmarks.registry import Benchmark, register_benchmark
from harness.evaluation.fixtures import png
from harness.evaluation.prompts import short_answer
from harness.evaluation.questions import Question, data_list, image_at, image_folder, require


def load(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    """DocVQA val_v1.0.json: {data: [{questionId, question, image, answers}]}; image paths
    relative to the image folder."""
    images = image_folder(images, questions, "DocVQA")
    out = []
    for i, rec in enumerate(data_list(questions, "DocVQA")):
        where = f"data[{i}]"
        require(rec, {"questionId": (int, str), "question": str, "image": str, "answers": list},
                questions, where, "DocVQA")
        out.append(Question(str(rec["questionId"]), image_at(images, rec["image"], questions,
                                                             where),
                            short_answer(rec["question"]), [str(a) for a in rec["answers"]]))
    return out


def write_fixture(root: Path) -> tuple[Path, Path]:
    data = {"dataset_name": "docvqa", "data": [
        {"questionId": 10, "question": "Who signed?", "image": "documents/d1.png",
         "answers": ["John Smith", "J. Smith"]},
        {"questionId": 11, "question": "What year?", "image": "documents/d2.png",
         "answers": ["1998"]}]}
    for img in ("d1", "d2"):
        png(root / "documents" / f"{img}.png")
    (root / "val_v1.0.json").write_text(json.dumps(data))
    return root / "val_v1.0.json", root


DOCVQA = register_benchmark(Benchmark(
    "docvqa", "anls", "DocVQA val (ANLS)", "anls", format="docvqa", max_new_tokens=32,
    loader=load, fixture=write_fixture,
    protocol="DocVQA/RRC ANLS (as lmms-eval's anls): threshold 0.5 kept, distance over the "
             "longer raw string"))
