"""Scorers of short answers: VQA accuracy, exact match, yes/no. Metrics are fractions in
[0, 1], except those named *_points, which are on the scale the benchmark publishes (MME's
0-2000 perception score, OCRBench's 0-1000).

VQA accuracy follows the VQA challenge: the official answer normalization (punctuation,
articles, number words, contractions), then min(1, #matching humans / 3) averaged over the
ten leave-one-out subsets. With a single reference (synthetic data) that formula would cap a
right answer at 1/3, so one reference is scored as normalized exact match."""
from __future__ import annotations

import re

from harness.evaluation.scoring.registry import SCORERS, yes_precision_recall

_CONTRACTIONS = {"dont": "don't", "doesnt": "doesn't", "isnt": "isn't", "arent": "aren't",
                 "cant": "can't", "wont": "won't", "wasnt": "wasn't", "werent": "weren't",
                 "hasnt": "hasn't", "havent": "haven't", "didnt": "didn't", "couldnt": "couldn't",
                 "shouldnt": "shouldn't", "wouldnt": "wouldn't", "im": "i'm", "ive": "i've",
                 "youre": "you're", "theyre": "they're", "whats": "what's", "thats": "that's",
                 "lets": "let's", "its": "it's"}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
          "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def normalize_vqa(answer: str) -> str:
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or re.search(_COMMA_STRIP, text):
            text = text.replace(p, "")
        else:
            text = text.replace(p, " ")
    text = _PERIOD_STRIP.sub("", text)
    words = []
    for word in text.split():
        word = _NUMBERS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def vqa_score(prediction: str, answers: list[str]) -> float:
    pred = normalize_vqa(prediction)
    refs = [normalize_vqa(a) for a in answers]
    if len(refs) == 1:
        return float(pred == refs[0])
    accs = []
    for i in range(len(refs)):
        others = refs[:i] + refs[i + 1:]
        accs.append(min(1.0, sum(r == pred for r in others) / 3.0))
    return sum(accs) / len(accs)


@SCORERS.register("vqa_accuracy", "VQA accuracy with the official answer normalization")
def vqa_accuracy(predictions, references, meta=None):
    per = [vqa_score(p, r) for p, r in zip(predictions, references)]
    return {"accuracy": sum(per) / len(per)}, per


@SCORERS.register("exact_match", "normalized exact match (case, spaces, final period)")
def exact_match(predictions, references, meta=None):
    def norm(s: str) -> str:
        return " ".join(s.strip().lower().rstrip(".").split())
    per = [float(any(norm(p) == norm(r) for r in refs))
           for p, refs in zip(predictions, references)]
    return {"accuracy": sum(per) / len(per)}, per


def yes_no_of(text: str) -> str | None:
    words = normalize_vqa(text).split()
    return words[0] if words and words[0] in ("yes", "no") else None


@SCORERS.register("yes_no", "yes/no accuracy, F1 of 'yes', yes-ratio (POPE style)")
def yes_no(predictions, references, meta=None):
    """An answer that starts with neither yes nor no is wrong and counts as not-'yes'."""
    preds = [yes_no_of(p) for p in predictions]
    golds = [yes_no_of(r[0]) for r in references]
    per = [float(p == g) for p, g in zip(preds, golds)]
    rates = yes_precision_recall(preds, golds)
    return {"accuracy": sum(per) / len(per), "f1": rates["f1"], "yes_ratio": rates["yes_ratio"],
            "unanswered": sum(p is None for p in preds) / len(preds)}, per
