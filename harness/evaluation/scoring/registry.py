"""The scorer registry, apart from the modules that register into it (answers, closed_form,
text_metrics); importing harness.evaluation.scoring registers them all."""
from __future__ import annotations

from collections.abc import Callable

from core.registry import Registry

# (preds, refs, meta=None) -> (metrics, per-question scores): a list aligned with the
# predictions, or {question: score} when the headline averages over groups of predictions
Scorer = Callable[..., tuple[dict[str, float], list[float] | dict[str, float]]]
SCORERS: Registry[Scorer] = Registry("scorer")


def yes_precision_recall(preds: list[str | None], golds: list[str | None]
                         ) -> dict[str, float]:
    """Precision, recall and F1 of the answer 'yes' (anything else counts as not-'yes'), and
    the share of 'yes' answers, as POPE reports them."""
    tp = sum(p == "yes" and g == "yes" for p, g in zip(preds, golds))
    fp = sum(p == "yes" and g != "yes" for p, g in zip(preds, golds))
    fn = sum(p != "yes" and g == "yes" for p, g in zip(preds, golds))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": sum(p == "yes" for p in preds) / len(preds)}
