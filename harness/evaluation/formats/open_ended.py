"""Open-answer benchmarks in their official files: GQA testdev-balanced, TextVQA val, DocVQA
val, ChartQA test and OCRBench. Prompts: LLaVA-1.5's short-answer suffix after the question
(GQA, TextVQA; OCRBench's own script for LLaVA-1.5, OCRBench/scripts/LLaVA1_5.py:69, adds the
same; LLaVA-NeXT uses it for ChartQA and DocVQA)."""
from __future__ import annotations

from pathlib import Path

from harness.evaluation.formats.registry import LOADERS
from harness.evaluation.prompts import short_answer, with_ocr_tokens
from harness.evaluation.questions import (
    BenchmarkFileError,
    Question,
    bad_record,
    image_at,
    read_json,
    require,
)


def _images(images: Path | None, questions: Path, benchmark: str) -> Path:
    if images is None or not images.is_dir():
        raise BenchmarkFileError(f"{questions}: {benchmark} needs its image folder; "
                                 f"not a folder: {images}")
    return images


@LOADERS.register("gqa", "GQA testdev_balanced_questions.json: {qid: {imageId, question, "
                         "answer}}; images/<imageId>.jpg")
def load_gqa(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    data = read_json(questions, "GQA")
    if not isinstance(data, dict):
        raise BenchmarkFileError(f"{questions}: expected GQA's object question id -> question, "
                                 f"got a {type(data).__name__}")
    images = _images(images, questions, "GQA")
    out = []
    for qid, rec in data.items():
        where = f"question {qid}"
        require(rec, {"imageId": str, "question": str, "answer": str}, questions, where, "GQA")
        out.append(Question(str(qid), image_at(images, f"{rec['imageId']}.jpg", questions, where),
                            short_answer(rec["question"]), [rec["answer"]],
                            meta={"image": rec["imageId"]}))
    return out


def _data_list(path: Path, benchmark: str) -> list:
    data = read_json(path, benchmark)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise BenchmarkFileError(f"{path}: expected {benchmark}'s object with a `data` list of "
                                 "questions")
    return data["data"]


def _textvqa(questions: Path, images: Path | None, ocr: dict[str, list[str]] | None
             ) -> list[Question]:
    images = _images(images, questions, "TextVQA")
    out = []
    for i, rec in enumerate(_data_list(questions, "TextVQA")):
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


@LOADERS.register("textvqa", "TextVQA_0.5.1_val.json: {data: [{question_id, question, image_id, "
                             "answers[10]}]}; train_images/<image_id>.jpg; the question alone")
def load_textvqa(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    return _textvqa(questions, images, None)


ROSETTA_OCR = "TextVQA_Rosetta_OCR_v0.2_val.json"


def rosetta_tokens(questions: Path) -> dict[str, list[str]]:
    """image id -> OCR tokens from the Rosetta OCR file beside the questions ({} when absent:
    records may carry their own `ocr_tokens`)."""
    path = questions.parent / ROSETTA_OCR
    if not path.is_file():
        return {}
    out = {}
    for i, rec in enumerate(_data_list(path, "TextVQA Rosetta OCR")):
        require(rec, {"image_id": str, "ocr_tokens": list}, path, f"data[{i}]",
                "TextVQA Rosetta OCR")
        out[rec["image_id"]] = rec["ocr_tokens"]
    return out


@LOADERS.register("textvqa_ocr", "TextVQA as textvqa, each question followed by its image's "
                                 "OCR tokens (a record's `ocr_tokens`, else "
                                 f"{ROSETTA_OCR} beside the questions), as LLaVA-1.5 asks it")
def load_textvqa_ocr(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    return _textvqa(questions, images, rosetta_tokens(questions))


@LOADERS.register("docvqa", "DocVQA val_v1.0.json: {data: [{questionId, question, image, "
                            "answers}]}; image paths relative to the image folder")
def load_docvqa(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    images = _images(images, questions, "DocVQA")
    out = []
    for i, rec in enumerate(_data_list(questions, "DocVQA")):
        where = f"data[{i}]"
        require(rec, {"questionId": (int, str), "question": str, "image": str, "answers": list},
                questions, where, "DocVQA")
        out.append(Question(str(rec["questionId"]), image_at(images, rec["image"], questions,
                                                             where),
                            short_answer(rec["question"]), [str(a) for a in rec["answers"]]))
    return out


@LOADERS.register("chartqa", "ChartQA test_human.json / test_augmented.json: [{imgname, query, "
                             "label}]; png/<imgname>")
def load_chartqa(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    data = read_json(questions, "ChartQA")
    if not isinstance(data, list):
        raise BenchmarkFileError(f"{questions}: expected ChartQA's list of questions")
    images = _images(images, questions, "ChartQA")
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


@LOADERS.register("ocrbench", "OCRBench.json: [{id, dataset_name, type, image_path, question, "
                              "answers}]; image_path relative to the image folder")
def load_ocrbench(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    data = read_json(questions, "OCRBench")
    if not isinstance(data, list):
        raise BenchmarkFileError(f"{questions}: expected OCRBench's list of questions")
    images = _images(images, questions, "OCRBench")
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
