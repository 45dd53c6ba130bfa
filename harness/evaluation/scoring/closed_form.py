"""Scorers for closed answers, parsed the way each benchmark's own evaluation parses them:
POPE (yes unless the answer says no/not, per split), MME (perception and cognition scores),
and multiple choice by option letter (ScienceQA, SEED-Bench; MMBench over its rotations)."""
from __future__ import annotations

import re
from collections import defaultdict

from harness.evaluation.prompts import LETTERS
from harness.evaluation.scoring.properties import closed_form
from harness.evaluation.scoring.registry import SCORERS, yes_precision_recall

# what the scores are grouped by, which the benchmarks' loaders read from their files too
POPE_SPLITS = ("random", "popular", "adversarial")
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
                  "landmark", "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation",
                 "code_reasoning")


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


@closed_form
@SCORERS.register("pope", "POPE accuracy, precision, recall, F1 and yes-ratio per split; "
                          "mean_f1 over the splits is what LLaVA-1.5 reports")
def pope(predictions, references, meta=None):
    meta = meta or [{"split": "all"}] * len(predictions)
    preds = [pope_label(p) for p in predictions]
    golds = [r[0].strip().lower() for r in references]
    per = [float(p == g) for p, g in zip(preds, golds)]
    splits = [s for s in (*POPE_SPLITS, "all") if any(m["split"] == s for m in meta)]
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
    """MME's eval_tool/calculation.py (`parse_pred_ans`, on the lower-cased answer): 'yes' or
    'no' when it is that, else whichever of them appears in its first four characters, else
    'other' (always wrong)."""
    text = answer.lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


@closed_form
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
    metrics = {"perception_points": sum(v for t, v in scores.items() if t in MME_PERCEPTION),
               "cognition_points": sum(v for t, v in scores.items() if t in MME_COGNITION),
               "accuracy": sum(right) / len(right),
               "accuracy_plus": sum(plus_all) / len(plus_all)}
    metrics.update({f"{t}_points": v for t, v in scores.items()})
    return metrics, right


SCIENCEQA_OPTIONS = "ABCDE"   # eval_science_qa.py's --options default
_SCIENCEQA_STATED = re.compile(r"The answer is ([A-Z]).")


def scienceqa_letter(answer: str) -> str | None:
    """LLaVA-1.5's llava/eval/eval_science_qa.py: the answer is an option letter, or starts
    with 'X. ', or says 'The answer is X.' exactly once; else it failed (None)."""
    if answer in SCIENCEQA_OPTIONS:
        return answer
    if len(answer) >= 3 and answer[0] in SCIENCEQA_OPTIONS and answer[1:3] == ". ":
        return answer[0]
    stated = _SCIENCEQA_STATED.findall(answer)
    return stated[0] if len(stated) == 1 else None


def _choice_metrics(letters: list[str | None], references) -> tuple[dict, list[float]]:
    per = [float(letter is not None and letter == r[0]) for letter, r in zip(letters, references)]
    return {"accuracy": sum(per) / len(per),
            "unparsed": sum(letter is None for letter in letters) / len(per)}, per


@closed_form
@SCORERS.register("scienceqa_choice", "ScienceQA: the option letter as LLaVA-1.5's "
                                      "eval_science_qa.py reads it; anything else is wrong")
def scienceqa_choice(predictions, references, meta=None):
    """A letter past the question's options counts as failed, as get_pred_idx returns -1."""
    meta = meta or [{}] * len(predictions)
    letters = []
    for p, m in zip(predictions, meta):
        letter = scienceqa_letter(p)
        allowed = SCIENCEQA_OPTIONS[:len(m["options"])] if m.get("options") else SCIENCEQA_OPTIONS
        letters.append(letter if letter is not None and letter in allowed else None)
    return _choice_metrics(letters, references)


@closed_form
@SCORERS.register("seed_choice", "SEED-Bench: the answer is exactly the option letter "
                                 "(LLaVA-1.5's scripts/convert_seed_for_submission.py)")
def seed_choice(predictions, references, meta=None):
    return _choice_metrics([p if p in "ABCD" and len(p) == 1 else None for p in predictions],
                           references)


# VLMEvalKit's exact-matching step (vlmeval/utils/matching_util.py at e8e78f0, can_infer),
# which its MMBench evaluation runs on every answer before any judge.
_REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
             "I'm sorry, but without the image provided", "Cannot determine the answer")
_SEPARATORS = ".()[],:;!*#{}"
_STATED_LETTER = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def mmbench_option(answer: str, options: dict[str, str]) -> str | None:
    """The letter VLMEvalKit reads from `answer` ('Z' for a refusal, which is wrong), or None
    where it would hand the answer to its LLM judge. First a letter: once .()[],:;!*#{} are
    spaces, exactly one option letter stands as a word, among the last four words; or 'Z'
    stands alone; or "(correct) answer is X". Else the text: the answer (at most twice as long
    as all options together) contains exactly one option's text, ignoring case."""
    if "Failed to obtain answer via API" not in answer:
        if any(refusal in answer for refusal in _REFUSALS):
            return "Z"
        spaced = answer
        for c in _SEPARATORS:
            spaced = spaced.replace(c, " ")
        words = spaced.split()
        named = [letter for letter in options if letter in words]
        if len(named) == 1 and words.index(named[0]) > len(words) - 5:
            return named[0]
        if not named and "Z" in words:
            return "Z"
        stated = _STATED_LETTER.search(answer)
        if stated and stated.group(1).upper() in options:
            return stated.group(1).upper()
    lowered = answer.lower()
    if len(lowered) > 2 * sum(len(str(text)) for text in options.values()):
        return None
    hits = [letter for letter, text in options.items() if str(text).lower() in lowered]
    return hits[0] if len(hits) == 1 else None


@closed_form
@SCORERS.register("circular_choice", "MMBench CircularEval: a question is right when every "
                                     "copy of it is; letters read by VLMEvalKit's exact "
                                     "matching, an answer its judge would read counts wrong")
def circular_choice(predictions, references, meta=None):
    """Per question (its group of copies): 1 when every copy's letter is right. As in
    VLMEvalKit's mcq_circular_eval under exact matching, one wrong copy fails the question, and
    a question none of whose copies is wrong but some unread goes to the judge there and
    fails here: `judge_needed` is the share of such questions."""
    letters = [mmbench_option(p, dict(zip(LETTERS, m["options"])))
               for p, m in zip(predictions, meta)]
    right = [letter == r[0] for letter, r in zip(letters, references)]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, m in enumerate(meta):
        groups[m["group"]].append(i)
    per_question = {g: float(all(right[i] for i in idx)) for g, idx in groups.items()}
    to_judge = [g for g, idx in groups.items()
                if any(letters[i] is None for i in idx)
                and all(right[i] or letters[i] is None for i in idx)]
    first = [i for i, m in enumerate(meta) if m.get("copy", 0) == 0]
    return {"accuracy": sum(per_question.values()) / len(per_question),
            "single_pass_accuracy": sum(right[i] for i in first) / max(len(first), 1),
            "judge_needed": len(to_judge) / len(groups)}, per_question
