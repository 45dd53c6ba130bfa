"""Scorers for open answers that are not VQA-style: ANLS (DocVQA), relaxed accuracy (ChartQA)
and OCRBench's substring match, each as its benchmark's official evaluation defines it."""
from __future__ import annotations

from harness.evaluation.scoring.registry import SCORERS

ANLS_THRESHOLD = 0.5
RELAXED_TOLERANCE = 0.05


def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls_one(prediction: str, answers: list[str], threshold: float = ANLS_THRESHOLD) -> float:
    """DocVQA's ANLS as its official evaluation (and lmms-eval's `anls`) computes it: the edit
    distance between the lower-cased, space-collapsed strings, divided by the longer of the
    two raw strings (upper-cased, as the script measures them); 1 minus the smallest such
    distance over the references, and 0 when that falls below the threshold (a similarity of
    exactly 0.5 is kept)."""
    def norm(s: str) -> str:
        return " ".join(s.strip().lower().split())
    distances = []
    for answer in answers:
        longest = max(len(answer.upper()), len(prediction.upper()))
        distances.append(levenshtein(norm(answer), norm(prediction)) / longest if longest
                         else 0.0)
    similarity = 1.0 - min(distances)
    return similarity if similarity >= threshold else 0.0


@SCORERS.register("anls", "average normalized Levenshtein similarity, threshold 0.5 (DocVQA)")
def anls(predictions, references, meta=None):
    per = [anls_one(p, r) for p, r in zip(predictions, references)]
    return {"anls": sum(per) / len(per)}, per


def _number(text: str) -> float | None:
    try:
        return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_match(prediction: str, target: str, tolerance: float = RELAXED_TOLERANCE) -> bool:
    """ChartQA's relaxed correctness as pix2struct's reference (`metrics.py`,
    `relaxed_correctness`) defines it: when both read as numbers ("12.4%" as 0.124, Python's
    float otherwise) and the target is not zero, within 5% of the target; else the strings
    equal ignoring case. Nothing is stripped: the answer is as the model's decoding left it."""
    pred, gold = _number(prediction), _number(target)
    if pred is not None and gold:
        return abs(pred - gold) / abs(gold) <= tolerance
    return prediction.lower() == target.lower()


@SCORERS.register("relaxed_accuracy", "ChartQA relaxed accuracy: numbers within 5%, else "
                                      "exact match")
def relaxed_accuracy(predictions, references, meta=None):
    per = [float(any(relaxed_match(p, t) for t in refs))
           for p, refs in zip(predictions, references)]
    return {"relaxed_accuracy": sum(per) / len(per)}, per


def ocrbench_match(prediction: str, answer: str, dataset: str) -> bool:
    """OCRBench (Liu et al., 2023): the reference occurs in the answer; case-insensitive, and
    for handwritten formulas (HME100k) with every space removed."""
    if dataset == "HME100k":
        return answer.strip().replace("\n", " ").replace(" ", "") in \
            prediction.strip().replace("\n", " ").replace(" ", "")
    return answer.lower().strip().replace("\n", " ") in prediction.lower().strip().replace("\n",
                                                                                          " ")


@SCORERS.register("ocrbench", "OCRBench: reference contained in the answer; points = number "
                              "right (out of 1000 on the full set)")
def ocrbench(predictions, references, meta=None):
    meta = meta or [{}] * len(predictions)
    per = [float(any(ocrbench_match(p, a, m.get("dataset", "")) for a in refs))
           for p, refs, m in zip(predictions, references, meta)]
    return {"points": sum(per), "accuracy": sum(per) / len(per)}, per
