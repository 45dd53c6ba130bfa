"""POPE (Li et al., EMNLP 2023): its three splits as the official JSON-lines files
coco_pope_{random,popular,adversarial}.json ({question_id, image, text, label}) in one folder,
images from COCO val2014. Each split is scored on its own; LLaVA-1.5 reports their mean F1."""
from __future__ import annotations

import json
from pathlib import Path

from harness.evaluation.benchmarks.registry import Benchmark, register_benchmark
from harness.evaluation.fixtures import png
from harness.evaluation.prompts import short_answer
from harness.evaluation.questions import (
    BenchmarkFileError,
    Question,
    bad_record,
    image_at,
    image_folder,
    read_jsonl,
    require,
)
from harness.evaluation.scoring.closed_form import POPE_SPLITS


def load(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    """POPE folder with coco_pope_{random,popular,adversarial}.json (JSON lines: question_id,
    image, text, label yes|no); COCO val2014 images."""
    if not questions.is_dir():
        raise BenchmarkFileError(f"{questions}: POPE takes the folder holding coco_pope_"
                                 f"{{{','.join(POPE_SPLITS)}}}.json")
    images = image_folder(images, questions, "POPE", "the COCO val2014 image folder")
    out = []
    for split in POPE_SPLITS:
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


def write_fixture(root: Path) -> tuple[Path, Path]:
    """Four questions per split, the same images; labels yes, yes, no, no."""
    folder = root / "coco"
    folder.mkdir(parents=True, exist_ok=True)
    for split in POPE_SPLITS:
        lines = [{"question_id": i + 1, "image": f"COCO_val2014_{i}.jpg",
                  "text": f"Is there a {obj} in the image?", "label": label}
                 for i, (obj, label) in enumerate([("dog", "yes"), ("cat", "yes"),
                                                   ("car", "no"), ("tree", "no")])]
        (folder / f"coco_pope_{split}.json").write_text(
            "\n".join(json.dumps(x) for x in lines) + "\n")
    for i in range(4):
        png(root / "val2014" / f"COCO_val2014_{i}.jpg")
    return folder, root / "val2014"


POPE = register_benchmark(Benchmark(
    "pope", "pope", "POPE random/popular/adversarial", "mean_f1", format="pope", loader=load,
    fixture=write_fixture,
    protocol="LLaVA-1.5's evaluation (eval_pope.py): first sentence no/not -> no, else yes; mean "
             "of the three splits' F1"))
