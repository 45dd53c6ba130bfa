"""One benchmark question as every loader returns it, and the errors a malformed benchmark file
raises: each names the file and the first bad record, so a wrong path or a file in another
benchmark's format fails before any model is built."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DataError


@dataclass(frozen=True)
class Question:
    """id: unique within the benchmark; image: absolute path; prompt: the text the model sees
    (question, options and the benchmark's answer instruction, LLaVA-1.5 style); answers: the
    references the scorer compares with; choices: the allowed answers when the question is
    closed (yes/no or option letters), which likelihood scoring ranks; meta: what a scorer
    groups by (split, category, image, ...)."""
    id: str
    image: str
    prompt: str
    answers: list[str]
    choices: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class BenchmarkFileError(DataError):
    """A benchmark file that is not in its benchmark's official format, or names an image
    that is not there."""


def bad_record(path: Path, where: str, message: str) -> BenchmarkFileError:
    return BenchmarkFileError(f"{path}: {where}: {message}")


class _RepeatedKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice: `json` would keep the last silently, and in
    an object of questions by id (GQA, ScienceQA) that drops a question."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def read_json(path: Path, benchmark: str) -> Any:
    if not path.is_file():
        raise BenchmarkFileError(f"{path}: {benchmark} question file not found")
    text = path.read_text()
    if not text.strip():
        raise BenchmarkFileError(f"{path}: the file is empty; expected {benchmark}'s "
                                 "official file")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _RepeatedKey as exc:
        raise bad_record(path, f"key {exc.key!r}", "given twice in one object (JSON would keep "
                                                   "only the last: a question lost)") from None
    except json.JSONDecodeError as exc:
        raise BenchmarkFileError(f"{path}: not valid JSON ({exc}); expected {benchmark}'s "
                                 "official file") from None


def read_jsonl(path: Path, benchmark: str) -> list[tuple[int, Any]]:
    """(line number, record) for every non-empty line."""
    if not path.is_file():
        raise BenchmarkFileError(f"{path}: {benchmark} question file not found")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise bad_record(path, f"line {n}", f"not a JSON object ({exc}); expected "
                                                f"{benchmark}'s JSON-lines file") from None
    return out


def checked(questions: list[Question], path: Path, benchmark: str) -> list[Question]:
    """`questions` as a loader read them from `path`, refused when there are none (an empty
    list, `data: []`, a split filtered to nothing: a score over no question is no score) or
    when an id repeats (predictions and scores are keyed by it, so one answer would stand
    for two questions)."""
    if not questions:
        raise BenchmarkFileError(f"{path}: no {benchmark} questions in the file")
    seen: dict[str, int] = {}
    for n, q in enumerate(questions, 1):
        if q.id in seen:
            raise bad_record(path, f"question id {q.id!r}", f"given twice (question {seen[q.id]} "
                                                            f"and question {n} as read); "
                                                            "ids must be unique")
        seen[q.id] = n
    return questions


def require(record: Any, keys: dict[str, type | tuple[type, ...]], path: Path, where: str,
            benchmark: str) -> dict:
    """The record is an object with each key of the expected type, else a BenchmarkFileError
    naming the first missing or mistyped key."""
    if not isinstance(record, dict):
        raise bad_record(path, where, f"expected an object with {', '.join(keys)}; this is not "
                                      f"{benchmark}'s format")
    for key, kind in keys.items():
        if key not in record:
            raise bad_record(path, where, f"missing field '{key}' (has: "
                                          f"{', '.join(map(str, record)) or 'nothing'}); "
                                          f"this is not {benchmark}'s format")
        if not isinstance(record[key], kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise bad_record(path, where, f"field '{key}' should be {names}, got "
                                          f"{type(record[key]).__name__}")
    return record


def image_at(images: Path, name: str, path: Path, where: str) -> str:
    """The absolute image path, or an error naming the question file and record."""
    image = images / name
    if not image.is_file():
        raise bad_record(path, where, f"image not found: {image}")
    return str(image.resolve())


def image_folder(images: Path | None, questions: Path, benchmark: str,
                 folder: str = "its image folder") -> Path:
    """The benchmark's image folder, or an error naming its question file and, in `folder`,
    which folder the benchmark takes."""
    if images is None or not images.is_dir():
        raise BenchmarkFileError(f"{questions}: {benchmark} needs {folder}; "
                                 f"not a folder: {images}")
    return images


def data_list(path: Path, benchmark: str) -> list:
    """The `data` list of questions of the VQA-style files (TextVQA, DocVQA)."""
    data = read_json(path, benchmark)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise BenchmarkFileError(f"{path}: expected {benchmark}'s object with a `data` list of "
                                 "questions")
    return data["data"]
