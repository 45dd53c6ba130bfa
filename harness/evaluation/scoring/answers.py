"""Scorers of short answers: VQA accuracy, exact match, yes/no. Metrics are fractions in
[0, 1], except those named *_points, which are on the scale the benchmark publishes (MME's
0-2000 perception score, OCRBench's 0-1000).

VQA accuracy follows the VQA challenge: the EvalAI answer processor (punctuation, articles,
number words, contractions; the table below is the official one), then min(1, #matching
humans / 3) averaged over the ten leave-one-out subsets. With a single reference
(synthetic data) that formula would cap a right answer at 1/3, so one reference is scored
as normalized exact match."""
from __future__ import annotations

import re

from harness.evaluation.scoring.registry import SCORERS, yes_precision_recall

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've"}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
          "@", "`", ",", "?", "!"]
# The official pattern as written: its "(?!<=" is a lookahead, not a lookbehind, so a period
# before a digit is kept and one after a digit is not.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
# The official processor passes re.UNICODE (32) where `sub` takes its count: at most 32
# periods are stripped.
_PERIOD_STRIP_COUNT = 32


def normalize_vqa(answer: str) -> str:
    """The EvalAI answer processor that LLaVA-1.5's m4c_evaluator.py (and lmms-eval's
    vqa_eval_metric.py) run, step for step: lower-case, drop every comma and question mark
    and split off "'s"; then each mark of _PUNCT is removed where the text (as it was before
    any mark was removed) has it beside a space, else turned into a space; periods not
    before a digit go; number words become digits, articles go, contractions get their
    apostrophe back. Its comma-between-digits rule never fires: commas are gone by then."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    tested = text
    for p in _PUNCT:
        text = text.replace(p, "" if (p + " " in tested or " " + p in tested) else " ")
    text = _PERIOD_STRIP.sub("", text, count=_PERIOD_STRIP_COUNT)
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


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


def gqa_answer(prediction: str) -> str:
    """LLaVA-1.5's scripts/convert_gqa_for_eval.py: the answer with its final periods
    stripped and lower-cased; GQA's eval.py then compares it with the reference as is."""
    return prediction.rstrip(".").lower()


@SCORERS.register("gqa_exact_match", "GQA: the answer, final periods stripped and lower-cased, "
                                     "equals the reference (LLaVA-1.5 + GQA eval.py)")
def gqa_exact_match(predictions, references, meta=None):
    per = [float(any(gqa_answer(p) == r for r in refs))
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
