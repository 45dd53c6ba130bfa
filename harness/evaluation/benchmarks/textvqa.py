"""TextVQA val (Singh et al., 2019), asked two ways: `textvqa`, the question alone (lmms-eval's
default prompt), and `textvqa_ocr`, each question followed by its image's reference OCR tokens
as LLaVA-1.5 asks it (its published 58.2). Files: TextVQA_0.5.1_val.json ({data: [{question_id,
question, image_id, answers[10]}]}), train_images/<image_id>.jpg, and for the OCR variant
TextVQA_Rosetta_OCR_v0.2_val.json beside the questions. Both score VQA accuracy with the
EvalAI answer processor, as LLaVA-1.5's m4c_evaluator.py."""
from __future__ import annotations

import json
from pathlib import Path

from harness.evaluation.benchmarks.registry import Benchmark, register_benchmark
from harness.evaluation.fixtures import png
from harness.evaluation.prompts import short_answer, with_ocr_tokens
from harness.evaluation.questions import (
    Question,
    bad_record,
    data_list,
    image_at,
    image_folder,
    require,
)

ROSETTA_OCR = "TextVQA_Rosetta_OCR_v0.2_val.json"


def _questions(questions: Path, images: Path | None, ocr: dict[str, list[str]] | None
               ) -> list[Question]:
    images = image_folder(images, questions, "TextVQA")
    out = []
    for i, rec in enumerate(data_list(questions, "TextVQA")):
        where = f"data[{i}]"
        require(rec, {"question_id": (int, str), "question": str, "image_id": str,
                      "answers": list}, questions, where, "TextVQA")
        # LLaVA's llava_textvqa_val_v051_ocr.jsonl holds every question as q.capitalize()
        # (which also lower-cases the rest); lmms-eval's textvqa_doc_to_text does the same
        prompt = rec["question"].capitalize()
        if ocr is not None:
            tokens = rec.get("ocr_tokens", ocr.get(rec["image_id"]))
            if tokens is None:
                raise bad_record(questions, where, f"no OCR tokens for image {rec['image_id']} "
                                                   f"(neither `ocr_tokens` nor {ROSETTA_OCR})")
            prompt = with_ocr_tokens(prompt, [str(t) for t in tokens])
        out.append(Question(str(rec["question_id"]),
                            image_at(images, f"{rec['image_id']}.jpg", questions, where),
                            short_answer(prompt), [str(a) for a in rec["answers"]],
                            meta={"image": rec["image_id"]}))
    return out


def load(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    """TextVQA_0.5.1_val.json: {data: [{question_id, question, image_id, answers[10]}]};
    train_images/<image_id>.jpg; the question alone."""
    return _questions(questions, images, None)


def rosetta_tokens(questions: Path) -> dict[str, list[str]]:
    """image id -> OCR tokens from the Rosetta OCR file beside the questions ({} when absent:
    records may carry their own `ocr_tokens`)."""
    path = questions.parent / ROSETTA_OCR
    if not path.is_file():
        return {}
    out = {}
    for i, rec in enumerate(data_list(path, "TextVQA Rosetta OCR")):
        require(rec, {"image_id": str, "ocr_tokens": list}, path, f"data[{i}]",
                "TextVQA Rosetta OCR")
        out[rec["image_id"]] = rec["ocr_tokens"]
    return out


def load_with_ocr(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    """TextVQA as `load`, each question followed by its image's OCR tokens (a record's
    `ocr_tokens`, else the Rosetta OCR file beside the questions), as LLaVA-1.5 asks it."""
    return _questions(questions, images, rosetta_tokens(questions))


def write_fixture(root: Path) -> tuple[Path, Path]:
    """The questions, their images and the Rosetta OCR file: both variants read it."""
    data = {"dataset_name": "textvqa", "dataset_version": "0.5.1", "data": [
        {"question_id": 1, "image_id": "t1", "question": "What brand is it?",
         "answers": ["the nike", "Nike."] + ["adidas"] * 8},
        {"question_id": 2, "image_id": "t2", "question": "What number?",
         "answers": ["two"] * 10}]}
    for img in ("t1", "t2"):
        png(root / "train_images" / f"{img}.jpg")
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps(data))
    ocr = {"dataset_name": "textvqa", "data": [
        {"image_id": "t1", "ocr_tokens": ["NIKE", "just", "do"], "ocr_info": []},
        {"image_id": "t2", "ocr_tokens": [], "ocr_info": []}]}
    (root / ROSETTA_OCR).write_text(json.dumps(ocr))
    return root / "TextVQA_0.5.1_val.json", root / "train_images"


TEXTVQA = register_benchmark(Benchmark(
    "textvqa", "vqa_accuracy", "TextVQA val (10 answers, VQA accuracy), the question alone",
    format="textvqa", loader=load, fixture=write_fixture,
    protocol="lmms-eval's default prompt (no OCR tokens); EvalAI answer processor and VQA "
             "accuracy as LLaVA-1.5's m4c_evaluator.py"))

TEXTVQA_OCR = register_benchmark(Benchmark(
    "textvqa_ocr", "vqa_accuracy",
    "TextVQA val with the reference OCR tokens in the prompt (LLaVA-1.5's 58.2)",
    format="textvqa_ocr", loader=load_with_ocr,
    fixture=write_fixture,
    protocol="LLaVA-1.5's evaluation (llava_textvqa_val_v051_ocr prompt with Rosetta OCR "
             "tokens, m4c_evaluator.py): EvalAI answer processor, VQA accuracy"))
