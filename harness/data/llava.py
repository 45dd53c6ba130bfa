"""LLaVA-format conversation data (the format of LLaVA-558K and llava_v1_5_mix665k).

A file is a JSON list of records: {"id", "image" (optional, relative to the image folder),
"conversations": [{"from": "human"|"gpt", "value": ...}, ...]}. Turns alternate human/gpt;
the `<image>` placeholder may sit anywhere in the first human turn (LLaVA prepends it when a
record has an image but no placeholder); text-only records have no `image`. Every record is
checked before training starts, and errors name the file, the record and the turn.

Records are normalized as LLaVA-1.5's own code normalizes them (llava/train/train.py): a
conversation opening with a gpt turn loses it (preprocess_v1), and `<image>` is taken out of
its turn and put once at the front followed by a newline (preprocess_multimodal), so the
real LLaVA-558K and llava_v1_5_mix665k train as LLaVA trains them."""
from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DataError
from models.templates import IMAGE_PLACEHOLDER


@dataclass
class Conversation:
    id: str
    image: str | None   # relative to the image folder; a PIL image when handed over in memory
    turns: list[tuple[str, str]]
    extra: dict[str, Any] = field(default_factory=dict)


def _fail(path: Path, index: int, record: Any, message: str) -> DataError:
    rid = record.get("id") if isinstance(record, dict) else None
    return DataError(f"{path}: record {index}" + (f" (id {rid!r})" if rid is not None else "")
                     + f": {message}")


# What LLaVA-1.5's own preprocessing does to a record before tokenizing it, which this loader
# does too, counting each so a file's oddities are reported once when it loads.
LEADING_GPT = "leading gpt turn dropped"
IMAGE_MOVED = "<image> moved to the front of its turn"
IMAGE_ADDED = "<image> added to the first human turn (the record has an image)"


def _front_image(value: str) -> str:
    """LLaVA's preprocess_multimodal: the placeholder out of the sentence and once at its
    front, followed by a newline."""
    return (IMAGE_PLACEHOLDER + "\n" + value.replace(IMAGE_PLACEHOLDER, "").strip()).strip()


def parse_record(record: Any, index: int, path: Path,
                 notes: Counter | None = None) -> Conversation:
    """One record as LLaVA-1.5 trains it (preprocess_multimodal, then preprocess_v1's turn
    handling). `notes` counts the normalizations applied."""
    notes = notes if notes is not None else Counter()
    if not isinstance(record, dict):
        raise _fail(path, index, record, "expected an object")
    convs = record.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise _fail(path, index, record, "`conversations` must be a non-empty list of turns")
    for k, turn in enumerate(convs):
        if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt") or \
                not isinstance(turn.get("value"), str):
            raise _fail(path, index, record, f"turn {k} must be {{'from': 'human' | 'gpt', "
                                             f"'value': str}}")
    first = 0
    if convs[0]["from"] == "gpt":   # LLaVA's preprocess_v1 skips a conversation's gpt opener
        first = 1
        notes[LEADING_GPT] += 1
    turns = []
    for k in range(first, len(convs), 2):
        if convs[k]["from"] != "human":
            raise _fail(path, index, record, f"turn {k} is from '{convs[k]['from']}'; turns "
                                             "must alternate human, gpt")
        if k + 1 >= len(convs):
            raise _fail(path, index, record, f"turn {k} (human) has no gpt reply: the "
                                             f"conversation has an odd number of turns "
                                             f"({len(convs) - first} after any leading gpt "
                                             "turn)")
        if convs[k + 1]["from"] != "gpt":
            raise _fail(path, index, record, f"turn {k + 1} is from 'human'; turns must "
                                             "alternate human, gpt")
        turns.append((convs[k]["value"], convs[k + 1]["value"]))
    if not turns:
        raise _fail(path, index, record, "no human/gpt pair")
    image = record.get("image")
    text = " ".join(h + g for h, g in turns)
    if image is None and IMAGE_PLACEHOLDER in text:
        raise _fail(path, index, record, "has an <image> placeholder but no `image`")
    if image is not None:
        if not isinstance(image, str):
            raise _fail(path, index, record, "`image` must be a path string")
        later = " ".join(h for h, _ in turns[1:]) + " ".join(g for _, g in turns)
        if IMAGE_PLACEHOLDER in later or turns[0][0].count(IMAGE_PLACEHOLDER) > 1:
            raise _fail(path, index, record, "<image> may appear once, in the first human turn")
        human = turns[0][0]
        if IMAGE_PLACEHOLDER not in human:
            notes[IMAGE_ADDED] += 1
        elif not human.startswith(IMAGE_PLACEHOLDER + "\n"):
            notes[IMAGE_MOVED] += 1
        turns[0] = (_front_image(human), turns[0][1])
    extra = {k: v for k, v in record.items() if k not in ("id", "image", "conversations")}
    return Conversation(str(record.get("id", index)), image, turns, extra)


def read_llava_records(path: Path) -> list:
    """The file's raw records: a JSON list, or a clear error naming the file."""
    try:
        records = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records, got a "
                        f"{type(records).__name__}")
    if not records:
        raise DataError(f"{path}: no records")
    return records


@functools.lru_cache(maxsize=16)
def _checked(path: str, mtime_ns: int, size: int) -> int:
    records = read_llava_records(Path(path))
    for i, r in enumerate(records):
        parse_record(r, i, Path(path))
    return len(records)


def check_llava_file(json_path: str | Path) -> int:
    """Every record of the file parsed as training will parse it (images are checked when the
    run loads it): the record count, or the DataError a run would have ended with. Once per
    file version in a process, so a grid of runs over one file reads it once."""
    path = Path(json_path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    return _checked(str(path), stat.st_mtime_ns, stat.st_size)


def load_llava_json(json_path: str | Path, image_root: str | Path,
                    check_images: bool = True,
                    report: Callable[[str], None] | None = print) -> list[Conversation]:
    """Every record parsed and checked; each normalization LLaVA's preprocessing applies is
    counted and reported once through `report` ("12 records: leading gpt turn dropped")."""
    path, root = Path(json_path), Path(image_root)
    records = read_llava_records(path)
    notes: Counter = Counter()
    out = [parse_record(r, i, path, notes) for i, r in enumerate(records)]
    if check_images:
        for i, conv in enumerate(out):
            if conv.image is not None and not (root / conv.image).is_file():
                raise _fail(path, i, records[i], f"image not found: {root / conv.image}")
    if report is not None:
        for what, n in sorted(notes.items()):
            report(f"{path}: {n} record{'s' if n > 1 else ''}: {what}")
    return out
