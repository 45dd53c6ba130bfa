"""MMBench dev (Liu et al., 2023) with CircularEval: the official TSV (mmbench_dev_*.tsv: index,
question, hint, A-D, answer, category, image as base64 or the index of the row holding it).
The file already holds every CircularEval copy of a question (its options shifted) as a row of
its own: each row is asked once, with LLaVA-1.5's prompt (hint, question, lettered options,
letter instruction), and a question counts only when all of its rows are answered right."""
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
from harness.evaluation.benchmarks.registry import Benchmark, register_benchmark
from harness.evaluation.fixtures import png_base64
from harness.evaluation.prompts import LETTERS, multiple_choice
from harness.evaluation.questions import BenchmarkFileError, Question, bad_record


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


def load(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    """MMBench mmbench_dev_*.tsv: index, question, hint, A-D, answer, category, image
    (base64, or the index of the row holding it); the CircularEval copies are rows
    index + k*1e6."""
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


def write_fixture(root: Path) -> tuple[Path, Path | None]:
    """The official dev TSV's layout: question i and its CircularEval copies i + k*1e6, the
    options of copy k shifted k places and its answer letter moved with them, each copy's
    image the index of the row that holds it. Three questions of 4, 2 and 3 options (9 rows);
    101 has a hint, 102 stops its options at an empty column C."""
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category",
              "image", "source", "l2-category", "comment", "split"]
    questions = [(100, "What is shown?", "nan", ["a cat", "a dog", "a bird", "a fish"], 1,
                  "object_localization", png_base64()),
                 (101, "Which color?", "The sky is clear.", ["red", "blue"], 0, "attribute",
                  png_base64((20, 20, 220))),
                 (102, "How many?", "nan", ["one", "two", "three"], 2, "count", "100")]
    rows = []
    for index, question, hint, options, right, category, image in questions:
        for k in range(len(options)):
            shifted = options[k:] + options[:k]
            cells = (shifted + ["nan"] * 4)[:4]
            rows.append([str(index + k * 1_000_000), question, hint, *cells,
                         "ABCD"[(right - k) % len(options)], category,
                         image if k == 0 or image.isdigit() else str(index), "src", "l2",
                         "nan", "dev"])
    path = root / "mmbench_dev_20230712.tsv"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    return path, None


MMBENCH_DEV = register_benchmark(Benchmark(
    "mmbench_dev", "circular_choice", "MMBench dev, CircularEval", format="mmbench",
    loader=load, fixture=write_fixture,
    protocol="VLMEvalKit e8e78f0 CircularEval with exact matching (can_infer); answers its LLM "
             "judge would read count wrong"))
