"""LLaVA-format conversation data (the format of LLaVA-558K and llava_v1_5_mix665k).

A file is a JSON list of records: {"id", "image" (optional, relative to the image folder),
"conversations": [{"from": "human"|"gpt", "value": ...}, ...]}. Turns alternate human/gpt;
the `<image>` placeholder may sit anywhere in the first human turn (LLaVA prepends it when a
record has an image but no placeholder); text-only records have no `image`. Every record is
checked before training starts, and errors name the file and the record."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import DataError
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


def parse_record(record: Any, index: int, path: Path) -> Conversation:
    if not isinstance(record, dict):
        raise _fail(path, index, record, "expected an object")
    convs = record.get("conversations")
    if not isinstance(convs, list) or len(convs) < 2 or len(convs) % 2:
        raise _fail(path, index, record, "`conversations` must be a list of human/gpt pairs")
    turns = []
    for k in range(0, len(convs), 2):
        human, gpt = convs[k], convs[k + 1]
        for turn, role in ((human, "human"), (gpt, "gpt")):
            if not isinstance(turn, dict) or turn.get("from") != role or not isinstance(
                    turn.get("value"), str):
                raise _fail(path, index, record, f"turn {convs.index(turn)} must be "
                                                 f"{{'from': '{role}', 'value': str}}")
        turns.append((human["value"], gpt["value"]))
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
        if IMAGE_PLACEHOLDER not in turns[0][0]:
            turns[0] = (IMAGE_PLACEHOLDER + "\n" + turns[0][0], turns[0][1])
    extra = {k: v for k, v in record.items() if k not in ("id", "image", "conversations")}
    return Conversation(str(record.get("id", index)), image, turns, extra)


def load_llava_json(json_path: str | Path, image_root: str | Path,
                    check_images: bool = True) -> list[Conversation]:
    path, root = Path(json_path), Path(image_root)
    try:
        records = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records")
    if not records:
        raise DataError(f"{path}: no records")
    out = [parse_record(r, i, path) for i, r in enumerate(records)]
    if check_images:
        for i, conv in enumerate(out):
            if conv.image is not None and not (root / conv.image).is_file():
                raise _fail(path, i, records[i], f"image not found: {root / conv.image}")
    return out
