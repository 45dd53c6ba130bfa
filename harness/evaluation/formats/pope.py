"""POPE (Li et al., EMNLP 2023): its three splits as the official JSON-lines files
coco_pope_{random,popular,adversarial}.json ({question_id, image, text, label}) in one folder,
images from COCO val2014. Each split is scored on its own; LLaVA-1.5 reports their mean F1."""
from __future__ import annotations

from pathlib import Path

from harness.evaluation.formats.registry import LOADERS
from harness.evaluation.prompts import short_answer
from harness.evaluation.questions import (
    BenchmarkFileError,
    Question,
    bad_record,
    image_at,
    read_jsonl,
    require,
)

SPLITS = ("random", "popular", "adversarial")


@LOADERS.register("pope", "POPE folder with coco_pope_{random,popular,adversarial}.json (JSON "
                          "lines: question_id, image, text, label yes|no); COCO val2014 images")
def load_pope(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    if not questions.is_dir():
        raise BenchmarkFileError(f"{questions}: POPE takes the folder holding coco_pope_"
                                 f"{{{','.join(SPLITS)}}}.json")
    if images is None or not images.is_dir():
        raise BenchmarkFileError(f"{questions}: POPE needs the COCO val2014 image folder; not a "
                                 f"folder: {images}")
    out = []
    for split in SPLITS:
        path = questions / f"coco_pope_{split}.json"
        records = read_jsonl(path, "POPE")
        if not records:   # each split is scored on its own
            raise BenchmarkFileError(f"{path}: no POPE questions in the file (an empty split)")
        for n, rec in records:
            where = f"line {n}"
            require(rec, {"question_id": (int, str), "image": str, "text": str, "label": str},
                    path, where, "POPE")
            if rec["label"] not in ("yes", "no"):
                raise bad_record(path, where, f"label must be yes or no, got {rec['label']!r}")
            out.append(Question(f"{split}-{rec['question_id']}",
                                image_at(images, rec["image"], path, where),
                                short_answer(rec["text"]), [rec["label"]], ["Yes", "No"],
                                {"split": split, "image": rec["image"]}))
    return out
