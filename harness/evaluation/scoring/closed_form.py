"""Scorers for closed answers, parsed the way each benchmark's own evaluation parses them:
POPE (yes unless the answer says no/not, per split), MME (perception and cognition scores),
and multiple choice by option letter (ScienceQA, SEED-Bench; MMBench over its rotations)."""
from __future__ import annotations

import re
from collections import defaultdict

from harness.evaluation.formats.mme import COGNITION, PERCEPTION
from harness.evaluation.formats.pope import SPLITS
from harness.evaluation.prompts import LETTERS
from harness.evaluation.scoring.registry import SCORERS, yes_precision_recall


def pope_label(answer: str) -> str:
    """POPE's evaluate.py: the first sentence, commas dropped, is 'no' when one of its words is
    'No', 'no' or 'not', and 'yes' otherwise, so an answer that says neither counts as yes."""
    text = answer.split(".")[0].replace(",", "")
    words = text.split(" ")
    return "no" if any(w in words for w in ("No", "no", "not")) else "yes"


def _binary(preds: list[str], golds: list[str]) -> dict[str, float]:
    """Both sides are 'yes' or 'no' here (pope_label), so not-'yes' is 'no'."""
    return {"accuracy": sum(p == g for p, g in zip(preds, golds)) / len(golds),
            **yes_precision_recall(preds, golds)}


@SCORERS.register("pope", "POPE accuracy, precision, recall, F1 and yes-ratio per split; "
                          "mean_f1 over the splits is what LLaVA-1.5 reports")
def pope(predictions, references, meta=None):
    meta = meta or [{"split": "all"}] * len(predictions)
    preds = [pope_label(p) for p in predictions]
    golds = [r[0].strip().lower() for r in references]
    per = [float(p == g) for p, g in zip(preds, golds)]
    splits = [s for s in (*SPLITS, "all") if any(m["split"] == s for m in meta)]
    metrics: dict[str, float] = {}
    for split in splits:
        idx = [i for i, m in enumerate(meta) if m["split"] == split]
        for name, value in _binary([preds[i] for i in idx], [golds[i] for i in idx]).items():
            metrics[f"{split}_{name}"] = value
    head = {"mean_f1": sum(metrics[f"{s}_f1"] for s in splits) / len(splits),
            "accuracy": sum(per) / len(per),
            "yes_ratio": sum(p == "yes" for p in preds) / len(preds),
            # said neither yes nor no up front: POPE counts these as yes; shown so it is seen
            "unanswered": sum(not re.match(r"\s*(yes|no)\b", p, re.I) for p in predictions)
            / len(predictions)}
    return {**head, **metrics}, per


def mme_label(answer: str) -> str:
    """MME's calculation.py: 'yes'/'no' after lower-casing and dropping periods, else whichever
    of them appears in the first four characters, else 'other' (always wrong)."""
    text = answer.lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


@SCORERS.register("mme", "MME: per subtask accuracy + accuracy+ (both questions of an image "
                         "right), summed into perception (max 2000) and cognition (max 800)")
def mme(predictions, references, meta=None):
    right = [float(mme_label(p) == r[0].strip().lower()) for p, r in zip(predictions, references)]
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, m in enumerate(meta):
        by_task[m["category"]].append(i)
    scores: dict[str, float] = {}
    plus_all = []
    for task, idx in by_task.items():
        images: dict[str, list[float]] = defaultdict(list)
        for i in idx:
            images[meta[i]["image"]].append(right[i])
        acc = 100 * sum(right[i] for i in idx) / len(idx)
        plus = [float(all(v)) for v in images.values()]
        plus_all += plus
        scores[task] = acc + 100 * sum(plus) / len(plus)
    metrics = {"perception_points": sum(v for t, v in scores.items() if t in PERCEPTION),
               "cognition_points": sum(v for t, v in scores.items() if t in COGNITION),
               "accuracy": sum(right) / len(right),
               "accuracy_plus": sum(plus_all) / len(plus_all)}
    metrics.update({f"{t}_points": v for t, v in scores.items()})
    return metrics, right


_LEADING = re.compile(r"^\(?([A-J])\)?(?:[.:)]|\s|$)")
_STATED = re.compile(r"answer is:?\s*\(?([A-J])\)?\b", re.I)


def option_letter(answer: str, letters: list[str], options: list[str] | None = None
                  ) -> str | None:
    """The chosen letter: the bare letter, a leading 'B.', '(B)' or 'B)', 'The answer is B',
    or the full text of exactly one option; None when none of these is found."""
    text = answer.strip()
    if options:  # first: "A dog." is option B's text, not the letter A
        norm = " ".join(text.lower().rstrip(".").split())
        hits = [letters[i] for i, o in enumerate(options)
                if " ".join(str(o).lower().rstrip(".").split()) == norm]
        if len(hits) == 1:
            return hits[0]
    for pattern in (_LEADING, _STATED):
        m = pattern.search(text)
        if m and m.group(1) in letters:
            return m.group(1)
    return None


def _letters(meta: dict) -> list[str]:
    options = meta.get("options")
    return list(LETTERS[:len(options)]) if options else list(LETTERS)


def _letters_right(predictions, references, meta) -> list[float]:
    meta = meta or [{}] * len(predictions)
    return [float(option_letter(p, _letters(m), m.get("options")) == r[0])
            for p, r, m in zip(predictions, references, meta)]


@SCORERS.register("choice", "multiple choice: the option letter extracted from the answer")
def choice(predictions, references, meta=None):
    meta = meta or [{}] * len(predictions)
    per = _letters_right(predictions, references, meta)
    unparsed = sum(option_letter(p, _letters(m), m.get("options")) is None
                   for p, m in zip(predictions, meta))
    return {"accuracy": sum(per) / len(per), "unparsed": unparsed / len(per)}, per


@SCORERS.register("circular_choice", "multiple choice asked in every option rotation "
                                     "(MMBench CircularEval): right only if every rotation is")
def circular_choice(predictions, references, meta=None):
    per = _letters_right(predictions, references, meta)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, m in enumerate(meta):
        groups[m["group"]].append(i)
    circular = {g: float(all(per[i] for i in idx)) for g, idx in groups.items()}
    # each rotation carries its question's circular result, so paired comparisons see it
    per_rotation = [circular[m["group"]] for m in meta]
    return {"accuracy": sum(circular.values()) / len(circular),
            "single_pass_accuracy": sum(per) / len(per)}, per_rotation
