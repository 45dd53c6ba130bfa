"""Multiple-choice benchmarks in their official files: ScienceQA-IMG (problems.json, test split,
questions with an image), MMBench dev (the TSV with base64 images) and SEED-Bench image
(SEED-Bench.json, data_type image). Prompts follow LLaVA-1.5: context first, lettered options,
then the letter instruction. MMBench's official file already holds every CircularEval copy of
a question (its options shifted) as a row of its own: each row is asked once, and a question
counts only when all of its rows are answered right."""
from __future__ import annotations

import base64
import binascii
import csv
import io
import os
import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from core.contained import inside
from harness.evaluation.formats.registry import LOADERS
from harness.evaluation.prompts import LETTERS, multiple_choice
from harness.evaluation.questions import (
    BenchmarkFileError,
    Question,
    bad_record,
    image_at,
    read_json,
    require,
)


@LOADERS.register("scienceqa", "ScienceQA problems.json: {pid: {question, choices, answer, "
                               "hint, image, split}}; the test image folder <pid>/image.png")
def load_scienceqa(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    data = read_json(questions, "ScienceQA")
    if not isinstance(data, dict):
        raise BenchmarkFileError(f"{questions}: expected ScienceQA's object pid -> problem")
    if images is None or not images.is_dir():
        raise BenchmarkFileError(f"{questions}: ScienceQA-IMG needs the test image folder "
                                 f"(<pid>/image.png); not a folder: {images}")
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


def _decode_image(text: str, target: Path | None, path: Path, where: str) -> str:
    """The decoded image written to `target` (once), its path returned; target None (a check
    before anything is written) decodes and verifies only, and returns ''."""
    try:
        raw = base64.b64decode(text, validate=True)
        Image.open(io.BytesIO(raw)).verify()
    except (binascii.Error, ValueError, UnidentifiedImageError) as exc:
        raise bad_record(path, where, f"`image` is not a base64-encoded image ({exc})") from None
    if target is None:
        return ""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")   # ranks and jobs decode at once
        tmp.write_bytes(raw)
        tmp.replace(target)
    return str(target.resolve())


MMBENCH_COLUMNS = ("index", "question", "answer", "image", "category")
# The official TSV holds each CircularEval copy of question i as its own row, index i + k*1e6,
# its options shifted; VLMEvalKit and lmms-eval group rows by index % 1e6 (open-compass/MMBench
# issues #8 and #31), so every row is asked once and a question is its group.
CIRCULAR_COPY = 1_000_000
# an `index` names the file its decoded image is written to: ASCII digits only (str.isdigit
# also takes '²' and other scripts' digits), so no index is a path
MMBENCH_INDEX = re.compile(r"[0-9]{1,18}")


def missing(value: str | None) -> bool:
    """An empty cell as LLaVA's model_vqa_mmbench.py `is_none` reads it (pandas turns an empty
    cell into NaN): None, '', 'nan' or 'none' in any case."""
    return value is None or value.strip().lower() in ("", "nan", "none")


def mmbench_options(row: dict) -> list[str]:
    """Columns A, B, ... up to the first empty one, as LLaVA's `get_options` stops there."""
    options = []
    for letter in LETTERS:
        if missing(row.get(letter)):
            break
        options.append(row[letter])
    return options


@LOADERS.register("mmbench", "MMBench mmbench_dev_*.tsv: index, question, hint, A-D, answer, "
                             "category, image (base64, or the index of the row holding it); "
                             "the CircularEval copies are rows index + k*1e6")
def load_mmbench(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    if not questions.is_file():
        raise BenchmarkFileError(f"{questions}: MMBench TSV not found")
    csv.field_size_limit(1 << 30)
    with open(questions, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or any(c not in rows[0] for c in MMBENCH_COLUMNS):
        have = ", ".join(rows[0]) if rows else "no rows"
        raise BenchmarkFileError(f"{questions}: expected MMBench's TSV columns "
                                 f"{', '.join(MMBENCH_COLUMNS)}, A, B, ... (has: {have})")
    by_index = {r["index"]: r for r in rows}
    folder = cache / "mmbench" / questions.stem if cache is not None else None
    out = []
    for n, row in enumerate(rows, 2):  # line 1 is the header
        where = f"line {n} (index {row['index']})"
        if not MMBENCH_INDEX.fullmatch(row["index"] or ""):
            raise bad_record(questions, where, "`index` must be a whole number in ASCII digits "
                                               f"(pattern {MMBENCH_INDEX.pattern}): it names "
                                               "the file the row's image is decoded to")
        options = mmbench_options(row)
        if len(options) < 2:
            raise bad_record(questions, where, "fewer than two options in columns A, B, ...")
        if row["answer"] not in LETTERS[:len(options)]:
            raise bad_record(questions, where, f"answer {row['answer']!r} is not one of "
                                               f"{', '.join(LETTERS[:len(options)])}")
        owner = row["index"]
        if MMBENCH_INDEX.fullmatch(row["image"] or "") and row["image"] in by_index:
            owner = row["image"]    # a repeated image names the row that holds it
        target = inside(folder, f"{owner}.img") if folder is not None else None
        image = _decode_image(by_index[owner]["image"], target, questions, where)
        hint = None if missing(row.get("hint")) else row["hint"]
        index = int(row["index"])
        out.append(Question(str(index), image, multiple_choice(row["question"], options, hint),
                            [row["answer"]], list(LETTERS[:len(options)]),
                            {"group": str(index % CIRCULAR_COPY), "copy": index // CIRCULAR_COPY,
                             "options": options, "category": row["category"]}))
    return out


@LOADERS.register("seed_bench", "SEED-Bench.json: {questions: [{question_id, question, "
                                "choice_a-d, answer, data_id, data_type}]}; image questions only")
def load_seed(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    data = read_json(questions, "SEED-Bench")
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise BenchmarkFileError(f"{questions}: expected SEED-Bench's object with a "
                                 "`questions` list")
    if images is None or not images.is_dir():
        raise BenchmarkFileError(f"{questions}: SEED-Bench needs its image folder "
                                 f"(SEED-Bench-image); not a folder: {images}")
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
