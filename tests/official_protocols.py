"""Plain restatements of the evaluation code each benchmark's published numbers came from, kept
apart from the harness so its scorers can be tested against them. Each function follows its
source statement by statement (file, commit and lines named above it) and nothing here is
imported by the harness: a scorer that drifts from the official code fails a test instead
of agreeing with its own idea of the answer.

Sources (read at these commits):
- LLaVA  haotian-liu/LLaVA c121f04 (llava/eval/*.py, scripts/convert_*.py); its MME converter
  playground/data/eval/MME/convert_answer_to_mme.py ships in LLaVA's evaluation zip.
- VLMEvalKit  open-compass/VLMEvalKit e8e78f0 (vlmeval/utils/matching_util.py,
  vlmeval/dataset/utils/multiple_choice.py).
- pix2struct  google-research/pix2struct 945f27e (pix2struct/metrics.py).
- lmms-eval 0.7.3  lmms_eval/api/metrics.py (DocVQA's ANLS).
- MME  eval_tool/calculation.py of the MME release (BradyFU); OCRBench
  Yuliang-Liu/MultimodalOCR 794c36d (OCRBench/scripts/LLaVA1_5.py).
"""
from __future__ import annotations

import re
import string

from harness.evaluation.scoring.answers import _CONTRACTIONS as EVALAI_CONTRACTIONS

# The contraction table is data, identical to m4c_evaluator.py:14-136 (the test compares the
# harness's table with lmms-eval's copy where lmms-eval is installed); the code below is
# restated.
EVALAI_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                  "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
EVALAI_ARTICLES = ["a", "an", "the"]
EVALAI_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
EVALAI_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
EVALAI_PUNCTUATIONS = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
                       ">", "<", "@", "`", ",", "?", "!"]


# LLaVA llava/eval/m4c_evaluator.py:181-218, EvalAIAnswerProcessor
def evalai_word_tokenize(word):
    word = word.lower()
    word = word.replace(",", "").replace("?", "").replace("'s", " 's")
    return word.strip()


def evalai_process_punctuation(in_text):
    out_text = in_text
    for p in EVALAI_PUNCTUATIONS:
        if (p + " " in in_text or " " + p in in_text) or (
                re.search(EVALAI_COMMA_STRIP, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    out_text = EVALAI_PERIOD_STRIP.sub("", out_text, re.UNICODE)
    return out_text


def evalai_process_digit_article(in_text):
    out_text = []
    temp_text = in_text.lower().split()
    for word in temp_text:
        word = EVALAI_NUMBERS.get(word, word)   # setdefault(word, word) in the original
        if word not in EVALAI_ARTICLES:
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in EVALAI_CONTRACTIONS:
            out_text[word_id] = EVALAI_CONTRACTIONS[word]
    return " ".join(out_text)


def evalai_answer(item):
    item = evalai_word_tokenize(item)
    item = item.replace("\n", " ").replace("\t", " ").strip()
    item = evalai_process_punctuation(item)
    return evalai_process_digit_article(item)


# LLaVA llava/eval/m4c_evaluator.py:225-258, TextVQAAccuracyEvaluator
def textvqa_score(pred_answer, raw_answers):
    answers = [evalai_answer(a) for a in raw_answers]
    assert len(answers) == 10
    gt_answers = list(enumerate(answers))
    unique_answer_scores = {}
    for unique_answer in set(answers):
        accs = []
        for gt_answer in gt_answers:
            other_answers = [item for item in gt_answers if item != gt_answer]
            matching_answers = [item for item in other_answers if item[1] == unique_answer]
            accs.append(min(1, float(len(matching_answers)) / 3))
        unique_answer_scores[unique_answer] = sum(accs) / len(accs)
    return unique_answer_scores.get(evalai_answer(pred_answer), 0.0)


# LLaVA scripts/convert_gqa_for_eval.py:14, then GQA's eval.py: `correct = (predicted == gold)`
def gqa_correct(text, gold):
    return text.rstrip('.').lower() == gold


# LLaVA llava/eval/eval_science_qa.py:28-35 and 65-77 (options default ["A".."E"], line 15)
def scienceqa_correct(pred_text, choices, answer, options=("A", "B", "C", "D", "E")):
    options = list(options)
    if pred_text in options:
        parsed = pred_text
    elif len(pred_text) >= 3 and pred_text[0] in options and pred_text[1:3] == ". ":
        parsed = pred_text[0]
    else:
        res = re.compile(r'The answer is ([A-Z]).').findall(pred_text)
        parsed = res[0] if len(res) == 1 else "FAILED"
    pred_idx = options.index(parsed) if parsed in options[:len(choices)] else -1
    return pred_idx == answer


# LLaVA scripts/convert_seed_for_submission.py:34
def seed_correct(text, answer):
    return text == answer


# LLaVA llava/eval/eval_pope.py:5-62, one split: (f1, acc, precision, recall, yes_ratio)
def pope_split(texts, labels):
    preds = []
    for text in texts:
        if text.find('.') != -1:
            text = text.split('.')[0]
        text = text.replace(',', '')
        words = text.split(' ')
        preds.append(0 if ('No' in words or 'not' in words or 'no' in words) else 1)
    labels = [0 if label == 'no' else 1 for label in labels]
    tp = sum(p == 1 and t == 1 for p, t in zip(preds, labels))
    fp = sum(p == 1 and t == 0 for p, t in zip(preds, labels))
    tn = sum(p == 0 and t == 0 for p, t in zip(preds, labels))
    fn = sum(p == 0 and t == 1 for p, t in zip(preds, labels))
    precision = float(tp) / float(tp + fp)
    recall = float(tp) / float(tp + fn)
    f1 = 2 * precision * recall / (precision + recall)
    acc = (tp + tn) / (tp + tn + fp + fn)
    return f1, acc, precision, recall, preds.count(1) / len(preds)


# MME eval_tool/calculation.py: parse_pred_ans and process_result, on the lines LLaVA's
# convert_answer_to_mme.py writes ("img<TAB>question<TAB>gt<TAB>answer", one line per
# question, each image's two questions adjacent; readlines keeps each line's "\n").
def mme_parse(pred_ans):
    if pred_ans in ["yes", "no"]:
        return pred_ans
    prefix_pred_ans = pred_ans[:4]
    if "yes" in prefix_pred_ans:
        return "yes"
    if "no" in prefix_pred_ans:
        return "no"
    return "other"


def mme_task_score(lines):
    """lines: the task's file lines; returns acc*100 + acc_plus*100."""
    chunks = [lines[i:i + 2] for i in range(0, len(lines), 2)]
    gts, preds, plus = [], [], 0
    for img_items in chunks:
        assert len(img_items) == 2
        correct = 0
        for img_item in img_items:
            _, _, gt_ans, pred_ans = img_item.split("\t")
            gt_ans, pred_ans = gt_ans.lower(), mme_parse(pred_ans.lower())
            gts.append(gt_ans)
            preds.append(pred_ans)
            correct += gt_ans == pred_ans
        plus += correct == 2
    acc = sum(g == p for g, p in zip(gts, preds)) / len(gts)   # sklearn accuracy_score
    return acc * 100 + plus / len(chunks) * 100


# OCRBench/scripts/LLaVA1_5.py:145-178 (one question: 1 if any reference is contained)
def ocrbench_correct(predict, answers, dataset_name):
    answers = answers if isinstance(answers, list) else [answers]
    for answer in answers:
        if dataset_name == "HME100k":
            answer = answer.strip().replace("\n", " ").replace(" ", "")
            predict = predict.strip().replace("\n", " ").replace(" ", "")
        else:
            answer = answer.lower().strip().replace("\n", " ")
            predict = predict.lower().strip().replace("\n", " ")
        if answer in predict:
            return 1
    return 0


# lmms-eval 0.7.3 lmms_eval/api/metrics.py:276-321 (from Qwen-VL's infographicsvqa_eval.py,
# the DocVQA/RRC evaluation's rule)
def levenshtein_distance(s1, s2):
    if len(s1) > len(s2):
        s1, s2 = s2, s1
    distances = range(len(s1) + 1)
    for i2, c2 in enumerate(s2):
        distances_ = [i2 + 1]
        for i1, c1 in enumerate(s1):
            if c1 == c2:
                distances_.append(distances[i1])
            else:
                distances_.append(1 + min((distances[i1], distances[i1 + 1], distances_[-1])))
        distances = distances_
    return distances[-1]


def anls(references, prediction, thresh_hold=0.5):
    values = []
    for answer in references:
        gt_answer = " ".join(answer.strip().lower().split())
        det_answer = " ".join(prediction.strip().lower().split())
        dist = levenshtein_distance(gt_answer, det_answer)
        length = max(len(answer.upper()), len(prediction.upper()))
        values.append(0.0 if length == 0 else float(dist) / float(length))
    question_result = 1 - min(values)
    if question_result < thresh_hold:
        question_result = 0
    return question_result


# pix2struct pix2struct/metrics.py:81-119 and aggregate_metrics:25-36 (max over targets)
def relaxed_correctness(target, prediction, max_relative_change=0.05):
    def _to_float(text):
        try:
            if text.endswith("%"):
                return float(text.rstrip("%")) / 100.0
            return float(text)
        except ValueError:
            return None
    prediction_float = _to_float(prediction)
    target_float = _to_float(target)
    if prediction_float is not None and target_float:
        relative_change = abs(prediction_float - target_float) / abs(target_float)
        return relative_change <= max_relative_change
    return prediction.lower() == target.lower()


# VLMEvalKit vlmeval/utils/matching_util.py:15 and 18-127 (can_infer), VERBOSE unset
_VERBOSE_ANSWER_RE = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def can_infer_option(answer, choices):
    if 'Failed to obtain answer via API' in answer:
        return False
    reject_to_answer = [
        "Sorry, I can't help with images of people yet.", "I can't process this file.",
        "I'm sorry, but without the image provided", 'Cannot determine the answer']
    for err in reject_to_answer:
        if err in answer:
            return 'Z'

    def count_choice(splits, choices, prefix='', suffix=''):
        cnt = 0
        for c in choices:
            if prefix + c + suffix in splits:
                cnt += 1
        return cnt

    answer_mod = answer
    for c in '.()[],:;!*#{}':
        answer_mod = answer_mod.replace(c, ' ')
    splits = [x.strip() for x in answer_mod.split()]
    count = count_choice(splits, choices)
    if count == 1:
        for ch in choices:
            if ch in splits and splits.index(ch) > (len(splits) - 5):
                return ch
    elif count == 0 and count_choice(splits, {'Z', ''}) == 1:
        return 'Z'
    match = _VERBOSE_ANSWER_RE.search(answer or "")
    if match and match.group(1).upper() in choices:
        return match.group(1).upper()
    return False


def can_infer_text(answer, choices):
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return False
    choices = {k: str(v).lower() for k, v in choices.items()}
    assert all(k in string.ascii_uppercase for k in choices)
    cands = [k for k in choices if choices[k] in answer]
    if len(cands) == 1:
        return cands[0]
    return False


def can_infer(answer, choices):
    answer = str(answer)
    copt = can_infer_option(answer, choices)
    return copt if copt else can_infer_text(answer, choices)


# VLMEvalKit vlmeval/dataset/utils/multiple_choice.py:409-427 (prefetch_circular_group) and
# 511-560 (mcq_circular_eval) with model=None (exact matching): rows grouped by index % 1e6;
# a group is a hit when every row's prefetched letter is its answer, a miss when one is wrong,
# and a miss ("no GPT-based answer matching") when some are unread.
def mmbench_circular(rows):
    """rows: dicts with index, answer, prediction and the option columns A, B, ...; returns
    {group index: hit}."""
    groups: dict[int, list[dict]] = {}
    for row in rows:
        groups.setdefault(int(row["index"] % 1e6), []).append(row)
    out = {}
    for g, sub in groups.items():
        hit = 1
        for row in sub:
            choices = {ch: row[ch] for ch in string.ascii_uppercase if row.get(ch) is not None}
            pred = can_infer(row["prediction"], choices)
            if not pred or pred != row["answer"]:
                hit = 0
        out[g] = hit
    return out
