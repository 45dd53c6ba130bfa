"""Every benchmark's scorer gives what the benchmark's official evaluation gives for the same
answers: each is compared with a plain restatement of the official code
(tests/official_protocols.py, which names each file and line) on a corpus of awkward answers
and on random ones. Where lmms-eval is installed, its own EvalAI processor and ANLS are
compared too (the library itself, not our reading of it)."""
import random

import pytest

from harness.evaluation import fixtures as benchmark_files
from harness.evaluation.benchmarks import BENCHMARKS
from harness.evaluation.benchmarks import FIXTURE_WRITERS as WRITERS
from harness.evaluation.generate import Prediction, score
from harness.evaluation.prompts import LETTERS
from harness.evaluation.scoring.answers import gqa_answer, normalize_vqa, vqa_score
from harness.evaluation.scoring.closed_form import mmbench_option, scienceqa_letter
from harness.evaluation.scoring.text_metrics import anls_one, ocrbench_match, relaxed_match
from tests import official_protocols as official

# answers that exercise every rule of the EvalAI processor: contractions with and without
# apostrophes, "'s", commas and question marks between letters and digits, each punctuation
# mark beside a space or not, periods before and after digits, articles, number words, tabs
AWKWARD = [
    "The Red.", "dont", "Dont", "yes, it is!", "3.5", "nike's", "Nike's shoe", "a-b - c",
    "x/y", "1,000", "1, 000", "what?is", "why ?", "it's (big)", "Ten dogs.", "e.g. this",
    "U.S.A.", "$5.00", "5.", "mr. smith's", "co-op", "left/right", "well...", "say \"hi\"",
    "a  b", "\tTabs\n", "none", "One", "an apple", "the the", "isn't", "isnt", "Im", "im",
    "yall'll", "3:45", "45%", "#1", "hello!!!", "x = y+1", "a_b", "<tag>", "@home", "`code`",
    "(a)", "[b]", "{c}", "a , b", "50 - 60", "50-60", "twelve", "st. louis", "p.m.",
    "10.5.3", "...", "", "   ", "Ölmarkt", "İstanbul", "naïve's", "'s", "x's y's", "i.e.",
    "v2.0", "12,5", "don't", "ma'am", "o'clock", ".5", "a.b.c", "hes", "shes", "wont",
    "won't", "couldnt've", "a;b", "a; b", "a\\b", "2 + 2", "2+2", "-5", "- 5", "5 -",
    "one-two", "The answer is: two.", "yes.", "No.", "ten,", "Ten, eleven", "a.", "a .",
    ". a", "the.", "1.", "1 .", "(1)", "..." * 20, "a?b?c", "what's", "whats", "thats",
]


def _fuzz(seed: int, n: int, alphabet: str, longest: int = 14) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))
            for _ in range(n)]


TRICKY = "ab5 .,;:?!'s-/\"()_@`<>=+\\[]{}\t\nAT0%"


def test_vqa_normalization_is_the_evalai_processor():
    for answer in AWKWARD + _fuzz(0, 3000, TRICKY):
        assert normalize_vqa(answer) == official.evalai_answer(answer), answer


@pytest.mark.lmms   # lmms-eval is in CI's lmms environment only
def test_vqa_normalization_equals_lmms_eval_processor():
    """lmms-eval's copy of the processor (lmms_eval/tasks/_task_utils/vqa_eval_metric.py),
    imported as it is."""
    processor = pytest.importorskip(
        "lmms_eval.tasks._task_utils.vqa_eval_metric").EvalAIAnswerProcessor
    from harness.evaluation.scoring.answers import _CONTRACTIONS
    assert _CONTRACTIONS == processor.CONTRACTIONS
    for answer in AWKWARD + _fuzz(1, 3000, TRICKY):
        assert normalize_vqa(answer) == processor()(answer), answer


def test_textvqa_accuracy_is_m4c_evaluators():
    rng = random.Random(2)
    pool = ["nike", "Nike.", "the nike", "adidas", "two", "2", "Two!", "puma's", "a puma"]
    for _ in range(500):
        refs = [rng.choice(pool) for _ in range(10)]
        pred = rng.choice(pool + ["reebok", ""])
        assert vqa_score(pred, refs) == pytest.approx(official.textvqa_score(pred, refs))


def test_gqa_is_exact_match_after_llavas_conversion():
    golds = ["table", "yes", "no", "left", "the table", "t-shirt"]
    preds = ["table", "Table.", "the table", "Table..", "table ", " table", "Yes", "yes.",
             "No", "LEFT", "t-shirt", "T-Shirt.", "tables", "a table", ""]
    for p in preds:
        for g in golds:
            assert (gqa_answer(p) == g) == official.gqa_correct(p, g), (p, g)
    # the cases VQA normalization would have scored right
    assert not official.gqa_correct("the table", "table") and gqa_answer("the table") != "table"


SCIENCEQA_ANSWERS = ["A", "B", "C", "D", "E", "F", "B.", "B. table", "B.table", "b", "(B)",
                     "B) table", "The answer is B.", "The answer is B", "The answer is b.",
                     "The answer is B. The answer is C.", "table", "Answer: B", " B", "B ",
                     "BB", "", "E. none", "The answer is E."]


@pytest.mark.parametrize("n_choices", [2, 3, 5])
def test_scienceqa_letters_are_eval_science_qas(n_choices):
    choices = [f"c{i}" for i in range(n_choices)]
    meta = [{"options": choices}]
    for answer in SCIENCEQA_ANSWERS:
        for right in range(n_choices):
            expected = official.scienceqa_correct(answer, choices, right)
            m, per = _scored("scienceqa_img", [answer], [[LETTERS[right]]], meta)
            assert per == [float(expected)], (answer, right)
    assert scienceqa_letter("B.") is None    # len < 3 and no "The answer is": FAILED


def test_seed_answers_are_the_letter_exactly():
    for answer in ["A", "B", "C", "D", "A.", "a", " A", "A. cat", "The answer is A", ""]:
        for gold in "ABCD":
            _, per = _scored("seed_bench_img", [answer], [[gold]], [{"options": list("wxyz")}])
            assert per == [float(official.seed_correct(answer, gold))], (answer, gold)


def _scored(name, answers, references, meta):
    ids = [str(i) for i in range(len(answers))]
    preds = [Prediction(i, name, "", a, r, m) for i, a, r, m in
             zip(ids, answers, references, meta)]
    metrics, per = score(preds, {name: ids})
    return metrics[name], list(per[name].values())


def test_pope_is_eval_popes_per_split_f1_and_their_mean():
    rng = random.Random(3)
    texts = ["Yes", "No", "yes", "no", "Yes, there is.", "No, there is not.", "I cannot tell.",
             "Not at all.", "There is no dog.", "no.", "Nope", "yes.No", "Yes. No.", "NO",
             "not sure", "Certainly not"]
    for _ in range(50):
        answers, labels, meta = [], [], []
        for split in ("random", "popular", "adversarial"):
            for _ in range(12):
                answers.append(rng.choice(texts))
                labels.append(rng.choice(["yes", "no"]))
                meta.append({"split": split, "image": "x"})
        try:   # eval_pope.py divides by zero where a split has no 'yes' answer or label
            want = [official.pope_split(answers[k:k + 12], labels[k:k + 12])
                    for k in (0, 12, 24)]
        except ZeroDivisionError:
            continue
        m, _ = _scored("pope", answers, [[x] for x in labels], meta)
        for split, (f1, acc, precision, recall, yes_ratio) in zip(
                ("random", "popular", "adversarial"), want):
            assert m[f"{split}_f1"] == pytest.approx(f1)
            assert m[f"{split}_accuracy"] == pytest.approx(acc)
            assert m[f"{split}_precision"] == pytest.approx(precision)
            assert m[f"{split}_recall"] == pytest.approx(recall)
            assert m[f"{split}_yes_ratio"] == pytest.approx(yes_ratio)
        assert m["mean_f1"] == pytest.approx(sum(w[0] for w in want) / 3)


def test_mme_is_calculation_pys_score(tmp_path):
    rng = random.Random(4)
    texts = ["Yes", "No", "yes.", "no.", "Yes, it is.", "No, it is not.", "I think no",
             "Nope", "maybe", "YES", "n", "y", "Yes\tNo", "nothing", "yesterday", "Not yes"]
    base, _ = WRITERS["mme"](tmp_path)
    questions = BENCHMARKS.get("mme").load(base, None, tmp_path / "cache")
    for _ in range(100):
        answers = [rng.choice(texts).replace("\t", " ") for _ in questions]
        m, _ = _scored("mme", answers, [q.extra["answers"] for q in questions],
                       [q.extra["meta"] for q in questions])
        by_task: dict[str, list[str]] = {}
        for q, a in zip(questions, answers):
            # LLaVA's convert_answer_to_mme.py writes "img\tquestion\tgt\tanswer\n"
            by_task.setdefault(q.extra["meta"]["category"], []).append(
                f"img\tq\t{q.extra['answers'][0]}\t{a}\n")
        for task, lines in by_task.items():
            assert m[f"{task}_points"] == pytest.approx(official.mme_task_score(lines)), task


def test_mme_prompt_is_llavas():
    """llava_mme.jsonl drops MME's " Please answer yes or no." for LLaVA's short-answer line:
    LLaVA's convert_answer_to_mme.py removes the latter and puts the former back to find
    each question's reference."""
    from harness.evaluation.benchmarks.mme import mme_question
    for raw in ("Is there a dog in this image? Please answer yes or no.",
                "Is there a dog in this image?  Please answer yes or no.",
                "Is there a dog in this image?"):
        assert mme_question(raw) == "Is there a dog in this image?"


def test_ocrbench_is_the_official_containment():
    answers = [["HOTEL"], ["x ^ { 2 } + 1"], ["Hello World", "hello"], ["a\nb"], ["5"]]
    preds = ["The word is hotel.", "x^{2}+1", "X^{2}+1", "HELLO world!", "a b", "a\nb",
             "15", "", "hotel", " HOTEL "]
    for refs in answers:
        for pred in preds:
            for dataset in ("IIIT5K", "HME100k"):
                mine = any(ocrbench_match(pred, a, dataset) for a in refs)
                assert mine == bool(official.ocrbench_correct(pred, refs, dataset))


ANLS_CASES = [("1989", ["1998"]), ("Jonh Smith", ["John Smith", "J. Smith"]), ("", ["abc"]),
              ("abc", [""]), ("", [""]), ("  J.  SMITH ", ["J. Smith"]), ("ß", ["ss"]),
              ("straße", ["STRASSE"]), ("ab", ["abcd"]), ("abcd", ["ab"]), ("abc", ["abd"]),
              ("1,000", ["1000"]), ("Dr. X", ["dr x", "Doctor X"])]


def test_anls_is_the_docvqa_script():
    for pred, refs in ANLS_CASES + [(p, [r]) for p, r in zip(_fuzz(5, 500, "abAB .ß", 8),
                                                              _fuzz(6, 500, "abAB .ß", 8))]:
        if not any(refs) and not pred:
            continue   # both empty: the script divides nothing, scores 1
        assert anls_one(pred, refs) == pytest.approx(official.anls(refs, pred)), (pred, refs)
    assert anls_one("1989", ["1998"]) == 0.5   # a distance of exactly 0.5 is kept


@pytest.mark.lmms   # lmms-eval is in CI's lmms environment only
def test_anls_equals_lmms_evals():
    metrics = pytest.importorskip("lmms_eval.api.metrics")
    for pred, refs in ANLS_CASES:
        if not any(refs) and not pred:
            continue
        assert anls_one(pred, refs) == pytest.approx(metrics.anls(refs, [pred])["anls"])


def test_chartqa_is_pix2structs_relaxed_correctness():
    targets = ["12.4", "45%", "45", "0", "Germany", "0.45", "1e3", "nan", "100", "-5", " 12"]
    preds = ["12.9", "47%", "45%", "0.45", "0", "0.0", "germany", "Germany ", "1000", "nan",
             "95", "94.9", "-5.2", "12", " 12", "45%%", "%45", "inf", "1_000", "12.4 "]
    for t in targets:
        for p in preds:
            assert relaxed_match(p, t) == official.relaxed_correctness(t, p), (p, t)


MMBENCH_ANSWERS = [
    "B", "B.", "(B)", "B) a dog", "Answer: B", "Option B", "The answer is B", "answer is b",
    "The correct answer is **C**.", "a dog", "A dog.", "It is a dog", "a dog or a cat",
    "A", "A cat sits on the mat today", "I think the answer is B because", "B C", "Z",
    "Cannot determine the answer", "Failed to obtain answer via API", "", "D. a fish",
    "the fish", "B is the one that is shown here", "Dog", "dog " * 20, "A B C D",
]


def test_mmbench_letters_are_vlmevalkits_can_infer():
    options = {"A": "a cat", "B": "a dog", "C": "a bird", "D": "a fish"}
    for answer in MMBENCH_ANSWERS:
        expected = official.can_infer(answer, dict(options)) or None
        assert mmbench_option(answer, dict(options)) == expected, answer


def test_mmbench_circular_score_is_vlmevalkits(tmp_path):
    """On the official layout (copies as rows): random answers scored by our scorer and by
    VLMEvalKit's exact-matching circular evaluation give the same questions right."""
    questions_path, _ = WRITERS["mmbench_dev"](tmp_path)
    qs = BENCHMARKS.get("mmbench_dev").load(questions_path, None, tmp_path / "cache")
    rng = random.Random(7)
    for _ in range(300):
        answers = [rng.choice(MMBENCH_ANSWERS[:16] + [q.extra["answers"][0]] * 6) for q in qs]
        m, per = _scored("mmbench_dev", answers, [q.extra["answers"] for q in qs],
                         [q.extra["meta"] for q in qs])
        rows = [{"index": int(q.id), "answer": q.extra["answers"][0], "prediction": a,
                 **dict(zip(LETTERS, q.extra["meta"]["options"]))} for q, a in zip(qs, answers)]
        want = official.mmbench_circular(rows)
        assert dict(zip(("100", "101", "102"), per)) == {str(g): float(h)
                                                          for g, h in want.items()}
        assert m["accuracy"] == pytest.approx(sum(want.values()) / len(want))


# --- prompts: LLaVA-1.5's question files, record for record ---------------------------------
# Each expected string is a record's `text` in LLaVA's evaluation files (the eval.zip layout
# read at haotian-liu/LLaVA 32cebc3, playground/data/eval/...), or for ScienceQA and MMBench
# the question its script builds (model_vqa_science.py / model_vqa_mmbench.py:85-99 add
# the letter instruction after llava_test_CQM-A.json's value or the TSV's row).
def _prompt(name, questions, images, tmp_path):
    loaded = BENCHMARKS.get(name).load(questions, images, tmp_path / "cache")
    return [q.turns[0][0] for q in loaded]


def _write_json(path, data):
    import json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_prompts_are_llavas_question_files(tmp_path):
    short = "\nAnswer the question using a single word or phrase."
    letter = "\nAnswer with the option's letter from the given choices directly."
    png = benchmark_files.png

    # textvqa/llava_textvqa_val_v051_ocr.jsonl, ids 003a8ae2ef43b901 and 97b1112b17015396
    root = tmp_path / "textvqa"
    for image in ("003a8ae2ef43b901", "97b1112b17015396"):
        png(root / "train_images" / f"{image}.jpg")
    q = _write_json(root / "TextVQA_0.5.1_val.json", {"data": [
        {"question_id": 1, "question": "what is the brand of this camera?",
         "image_id": "003a8ae2ef43b901", "answers": ["dakota"] * 10},
        {"question_id": 2, "question": "whats the lowest number yard line that you can see?",
         "image_id": "97b1112b17015396", "answers": ["10"] * 10}]})
    _write_json(root / "TextVQA_Rosetta_OCR_v0.2_val.json", {"data": [
        {"image_id": "003a8ae2ef43b901",
         "ocr_tokens": ["DAKOTA", "DIGITAL", "Single-Use", "Camera", "Pire", "digitat"]},
        {"image_id": "97b1112b17015396", "ocr_tokens": []}]})
    assert _prompt("textvqa_ocr", q, root / "train_images", tmp_path) == [
        "<image>\nWhat is the brand of this camera?\nReference OCR token: DAKOTA, DIGITAL, "
        "Single-Use, Camera, Pire, digitat" + short,
        "<image>\nWhats the lowest number yard line that you can see?\nReference OCR token: "
        + short]
    # lmms-eval's default (ocr: false): the capitalized question alone
    assert _prompt("textvqa", q, root / "train_images", tmp_path)[0] == (
        "<image>\nWhat is the brand of this camera?" + short)

    # gqa/llava_gqa_testdev_balanced.jsonl, question 201307251
    png(tmp_path / "gqa" / "images" / "n161313.jpg")
    q = _write_json(tmp_path / "gqa" / "testdev_balanced_questions.json", {"201307251": {
        "imageId": "n161313", "question": "Is it overcast?", "answer": "no"}})
    assert _prompt("gqa", q, tmp_path / "gqa" / "images", tmp_path) == [
        "<image>\nIs it overcast?" + short]

    # pope/llava_pope_test.jsonl, question 1 (adversarial)
    folder, images = WRITERS["pope"](tmp_path / "pope")
    line = '{"question_id": 1, "image": "COCO_val2014_0.jpg", "text": "Is there a snowboard ' \
           'in the image?", "label": "yes"}\n'
    for split in ("random", "popular", "adversarial"):
        (folder / f"coco_pope_{split}.json").write_text(line)
    assert set(_prompt("pope", folder, images, tmp_path)) == {
        "<image>\nIs there a snowboard in the image?" + short}

    # MME/llava_mme.jsonl, code_reasoning/0020.png
    mme = tmp_path / "MME_Benchmark_release_version" / "code_reasoning"
    png(mme / "0020.png")
    (mme / "0020.txt").write_text(
        "Is a python code shown in the picture? Please answer yes or no.\tYes\n"
        "Is a c++ code shown in the picture? Please answer yes or no.\tNo\n")
    assert _prompt("mme", mme.parent, None, tmp_path)[0] == (
        "<image>\nIs a python code shown in the picture?" + short)

    # scienceqa/llava_test_CQM-A.json, problems 11 and 23
    sqa = tmp_path / "sqa"
    for pid in ("11", "23"):
        png(sqa / "test" / pid / "image.png")
    context = ("Below is a food web from a tundra ecosystem in Nunavut, a territory in Northern "
               "Canada.\nA food web models how the matter eaten by organisms moves through an "
               "ecosystem. The arrows in a food web represent how matter moves between "
               "organisms in an ecosystem.")
    q = _write_json(sqa / "problems.json", {
        "11": {"question": "What is the name of the colony shown?", "hint": "",
               "choices": ["Maryland", "New Hampshire", "Rhode Island", "Vermont"],
               "answer": 1, "image": "image.png", "split": "test"},
        "23": {"question": "Which of these organisms contains matter that was once part of "
                           "the lichen?", "hint": context, "choices": ["bilberry", "mushroom"],
               "answer": 1, "image": "image.png", "split": "test"}})
    assert _prompt("scienceqa_img", q, sqa / "test", tmp_path) == [
        "<image>\nWhat is the name of the colony shown?\nA. Maryland\nB. New Hampshire\n"
        "C. Rhode Island\nD. Vermont" + letter,
        "<image>\nContext: " + context + "\nWhich of these organisms contains matter that was "
        "once part of the lichen?\nA. bilberry\nB. mushroom" + letter]

    # mmbench answers file: question 293's prompt, plus the instruction mmbench.sh asks for
    tsv, _ = WRITERS["mmbench_dev"](tmp_path / "mmb")
    header, first, *_ = tsv.read_text().splitlines()
    cells = first.split("\t")
    cells[0:8] = ["293", "Which material is this spatula made of?", "nan", "rubber", "cotton",
                  "nan", "nan", "A"]
    tsv.write_text(f"{header}\n" + "\t".join(cells) + "\n")
    assert _prompt("mmbench_dev", tsv, None, tmp_path) == [
        "<image>\nWhich material is this spatula made of?\nA. rubber\nB. cotton" + letter]

    # seed_bench/llava-seed-bench.jsonl, question 101669 (as quoted; the file is not public
    # in a repository)
    image = tmp_path / "seed" / "img" / "1454426_2591111986"   # SEED's ids have no suffix
    png(image.with_suffix(".png")).rename(image)
    q = _write_json(tmp_path / "seed" / "SEED-Bench.json", {"questions": [
        {"question_id": "101669", "question": "How many towels are in the image?",
         "choice_a": "One", "choice_b": "Two", "choice_c": "Three", "choice_d": "Four",
         "answer": "B", "data_id": "1454426_2591111986", "data_type": "image"}]})
    assert _prompt("seed_bench_img", q, tmp_path / "seed" / "img", tmp_path) == [
        "<image>\nHow many towels are in the image?\nA. One\nB. Two\nC. Three\nD. Four" + letter]
