"""Every real benchmark: its official file layout loads into the LLaVA-1.5 prompts, and its
scorer gives the score worked out by hand on a small fixture with the awkward cases (articles
and punctuation, numbers within 5%, near-miss strings, answers that say neither yes nor no,
option letters in many forms, MMBench's CircularEval copies). Bad files fail naming file and
record. tests/test_official_protocols.py holds each scorer to the official code itself."""
import json
from pathlib import Path

import pytest

from core.errors import DataError
from harness.evaluation import fixtures as benchmark_files
from harness.evaluation.benchmarks import BENCHMARKS
from harness.evaluation.benchmarks import FIXTURE_WRITERS as WRITERS
from harness.evaluation.generate import Prediction, score
from harness.evaluation.prompts import OPTION_LETTER, SHORT_ANSWER
from harness.evaluation.questions import BenchmarkFileError
from harness.evaluation.scoring import SCORERS
from harness.evaluation.scoring.closed_form import pope_label
from harness.evaluation.scoring.text_metrics import anls_one, relaxed_match


def load(name, tmp_path):
    questions, images = WRITERS[name](tmp_path / name)
    return BENCHMARKS.get(name).load(questions, images, tmp_path / "cache")


def scored(name, questions, answers):
    bench = BENCHMARKS.get(name)
    assert len(questions) == len(answers)
    preds = [Prediction(q.id, name, q.turns[0][0], a, q.extra["answers"], q.extra["meta"])
             for q, a in zip(questions, answers)]
    metrics, per = score(preds, {name: [q.id for q in questions]})
    assert SCORERS.get(bench.scorer)  # the registered scorer did the work
    return metrics[name], list(per[name].values())


def test_gqa_prompt_and_exact_match(tmp_path):
    qs = load("gqa", tmp_path)
    assert qs[0].turns[0][0] == f"<image>\nWhat color is the car?\n{SHORT_ANSWER}"
    assert qs[0].image.endswith("images/n1.jpg")
    m, per = scored("gqa", qs, ["Red.", "yes"])
    assert per == [1.0, 0.0] and m["accuracy"] == 0.5
    # LLaVA-1.5 + GQA's eval.py: no article or number-word normalization
    _, per = scored("gqa", qs, ["The red", "No."])
    assert per == [0.0, 1.0]


def test_textvqa_accuracy_with_articles_and_punctuation(tmp_path):
    qs = load("textvqa", tmp_path)
    # refs normalize to nike x2 ("the nike", "Nike."), adidas x8; "A Nike!" -> "nike".
    # Leave-one-out: the 2 nike subsets see 1 match (1/3), the 8 others see 2 (2/3) -> 0.6
    m, per = scored("textvqa", qs, ["A Nike!", "Two"])
    assert per == pytest.approx([0.6, 1.0])
    assert m["accuracy"] == pytest.approx(0.8)


def test_docvqa_anls_near_misses(tmp_path):
    qs = load("docvqa", tmp_path)
    # "jonh smith" vs "john smith": 2 edits over the longer raw string ("  Jonh   Smith", 14
    # characters; the DocVQA script divides by the raw lengths) -> 1 - 2/14; "1989" vs "1998":
    # 2/4 = 0.5, which the script keeps (it zeroes only below the threshold)
    m, per = scored("docvqa", qs, ["  Jonh   Smith", "1989"])
    assert per == pytest.approx([1 - 2 / 14, 0.5]) and m["anls"] == pytest.approx((1 - 1 / 7
                                                                                   + 0.5) / 2)
    assert anls_one("J. SMITH", ["John Smith", "J. Smith"]) == 1.0
    assert anls_one("", ["abc"]) == 0.0


def test_chartqa_relaxed_accuracy(tmp_path):
    qs = load("chartqa", tmp_path)
    # 12.9 vs 12.4: 4.0% off -> right; 47% vs 45%: 0.47 vs 0.45, 4.4% -> right; case ignored;
    # a zero target is compared as text, so "0.0" is wrong
    m, per = scored("chartqa", qs, ["12.9", "47%", "germany", "0.0"])
    assert per == [1.0, 1.0, 1.0, 0.0] and m["relaxed_accuracy"] == 0.75
    assert not relaxed_match("13.1", "12.4")        # 5.6% off
    assert relaxed_match("95", "100") and not relaxed_match("94.9", "100")
    assert not relaxed_match("48%", "45%")           # 6.7% off
    assert relaxed_match("0", "0") and not relaxed_match("zero", "0")


def test_ocrbench_substring_and_formula_spacing(tmp_path):
    qs = load("ocrbench", tmp_path)
    # OCRBench/scripts/LLaVA1_5.py:69 adds LLaVA's short-answer line
    assert qs[0].turns[0][0] == f"<image>\nwhat is written in the image?\n{SHORT_ANSWER}"
    m, per = scored("ocrbench", qs, ["The word is hotel.", "x^{2}+1"])
    assert per == [1.0, 1.0] and m["points"] == 2
    m, per = scored("ocrbench", qs, ["HOTE", "x^2+1"])
    assert per == [0.0, 0.0] and m["points"] == 0


def test_pope_three_splits_with_unanswerable_outputs(tmp_path):
    qs = load("pope", tmp_path)
    assert [q.extra["meta"]["split"] for q in qs] == ["random"] * 4 + ["popular"] * 4 + [
        "adversarial"] * 4
    assert qs[0].extra["choices"] == ["Yes", "No"]
    answers = ["Yes", "No", "No, there is not.", "I cannot tell.",       # random
               "Yes, there is a dog.", "Yes", "There is no car.", "no",  # popular
               "yes", "yes", "Yes.", "Not at all."]                      # adversarial
    # POPE's rule: 'no' only when a word of the first sentence is No/no/not, so "I cannot
    # tell." and "Not at all." count as yes. Gold per split: yes, yes, no, no.
    # random: yes no no yes -> tp 1 fp 1 fn 1: F1 .5, acc .5; popular: all right, F1 1;
    # adversarial: yes x4 -> tp 2 fp 2: P .5 R 1 F1 2/3, acc .5, yes-ratio 1
    m, per = scored("pope", qs, answers)
    assert m["random_f1"] == pytest.approx(0.5) and m["random_accuracy"] == 0.5
    assert m["popular_f1"] == 1.0 and m["popular_yes_ratio"] == 0.5
    assert m["adversarial_f1"] == pytest.approx(2 / 3)
    assert m["adversarial_yes_ratio"] == 1.0 and m["adversarial_precision"] == 0.5
    assert m["mean_f1"] == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    assert m["accuracy"] == pytest.approx(8 / 12) and m["unanswered"] == pytest.approx(3 / 12)
    assert pope_label("Not at all.") == "yes" and pope_label("There is not.") == "no"


def test_mme_perception_and_cognition_scores(tmp_path):
    qs = load("mme", tmp_path)
    assert [q.id for q in qs][:2] == ["existence/e1/1", "existence/e1/2"]
    assert qs[0].turns[0][0] == f"<image>\nIs there a dog in this image?\n{SHORT_ANSWER}"
    answers = ["Yes", "No", "yes.", "Yes",      # existence: 3/4 right, 1 of 2 images both
               "No", "no",                      # artwork: 1/2, no image both
               "Yes, it is 3", "I think no"]    # code: "yes," -> yes; "i th" -> other
    m, per = scored("mme", qs, answers)
    # existence 75 + 50 = 125, artwork 50 + 0, code_reasoning 50 + 0
    assert m["existence_points"] == 125 and m["artwork_points"] == 50
    assert m["perception_points"] == 175 and m["cognition_points"] == 50
    assert m["accuracy"] == 5 / 8 and m["accuracy_plus"] == 1 / 4
    assert per == [1, 1, 1, 0, 0, 1, 1, 0]


def test_scienceqa_img_test_split_with_images_only(tmp_path):
    qs = load("scienceqa_img", tmp_path)
    assert [q.id for q in qs] == ["5", "6"]
    assert qs[1].turns[0][0] == ("<image>\nContext: Select the best answer.\nWhich word is a "
                                 f"noun?\nA. run\nB. table\n{OPTION_LETTER}")
    m, per = scored("scienceqa_img", qs, ["The answer is B.", "B. table"])
    assert per == [1.0, 1.0]
    # eval_science_qa.py reads no option text, and "B." (shorter than "B. x") fails
    m, per = scored("scienceqa_img", qs, ["whale", "B."])
    assert per == [0.0, 0.0] and m["unparsed"] == 1.0
    m, per = scored("scienceqa_img", qs, ["A", "C"])   # C is past question 6's two options
    assert per == [0.0, 0.0] and m["unparsed"] == 0.5


def test_mmbench_official_layout_asks_each_row_once_and_scores_questions(tmp_path):
    """The dev TSV holds each CircularEval copy as a row (index + k*1e6): 3 questions of 4, 2
    and 3 options are 9 rows, asked once each, and the headline counts questions: a model that
    fails only the 4-option question scores 2/3 (rotating every row again asked 4*4 + 2*2 +
    3*3 = 29 prompts and weighted questions by their option count)."""
    qs = load("mmbench_dev", tmp_path)
    assert [q.id for q in qs] == ["100", "1000100", "2000100", "3000100", "101", "1000101",
                                  "102", "1000102", "2000102"]
    assert [q.extra["meta"]["group"] for q in qs] == ["100"] * 4 + ["101"] * 2 + ["102"] * 3
    assert [q.extra["answers"][0] for q in qs] == ["B", "A", "D", "C", "A", "B", "C", "B", "A"]
    assert qs[5].turns[0][0] == ("<image>\nThe sky is clear.\nWhich color?\nA. blue\nB. red\n"
                                 + OPTION_LETTER)
    assert qs[6].turns[0][0].count("\n") == 5      # 102 stops at its empty column D
    assert qs[1].image == qs[0].image == qs[6].image  # copies name the row holding the image
    right = [q.extra["answers"][0] for q in qs]
    m, per = scored("mmbench_dev", qs, ["B", "A", "D", "A"] + right[4:])
    assert m["accuracy"] == pytest.approx(2 / 3) and per == [0.0, 1.0, 1.0]
    assert m["single_pass_accuracy"] == 1.0 and m["judge_needed"] == 0.0
    # an unread answer ("maybe") in an otherwise right question goes to VLMEvalKit's judge
    m, per = scored("mmbench_dev", qs, right[:4] + ["maybe"] + right[5:])
    assert per == [1.0, 0.0, 1.0] and m["judge_needed"] == pytest.approx(1 / 3)


def test_seed_bench_image_questions_only(tmp_path):
    qs = load("seed_bench_img", tmp_path)
    assert [q.id for q in qs] == ["s1"] and qs[0].extra["choices"] == list("ABCD")
    m, _ = scored("seed_bench_img", qs, ["C"])
    assert m["accuracy"] == 1.0
    m, _ = scored("seed_bench_img", qs, ["C."])   # LLaVA's script: the text is the letter
    assert m["accuracy"] == 0.0


def test_scoring_refuses_unanswered_questions(tmp_path):
    qs = load("gqa", tmp_path)
    one = [Prediction(qs[0].id, "gqa", "", "red", ["red"])]
    with pytest.raises(RuntimeError, match="1 unanswered \\(first: 202\\)"):
        score(one, {"gqa": [q.id for q in qs]})
    twice = one + one
    with pytest.raises(RuntimeError, match="answered twice"):
        score(twice, {"gqa": [q.id for q in qs]})


# --- bad files ---------------------------------------------------------------------------------
def _error(name, questions, images, tmp_path):
    with pytest.raises(BenchmarkFileError) as info:
        BENCHMARKS.get(name).load(questions, images, tmp_path / "cache")
    assert isinstance(info.value, DataError)
    return str(info.value)


def test_wrong_format_names_file_and_first_record(tmp_path):
    tq, timages = WRITERS["textvqa"](tmp_path / "t")
    msg = _error("gqa", tq, timages, tmp_path)   # a TextVQA file given as GQA
    assert str(tq) in msg and "question dataset_name" in msg and "not GQA's format" in msg
    data = json.loads(tq.read_text())
    del data["data"][1]["answers"]
    tq.write_text(json.dumps(data))
    msg = _error("textvqa", tq, timages, tmp_path)
    assert f"{tq}: data[1]: missing field 'answers'" in msg
    gq, gimages = WRITERS["gqa"](tmp_path / "g")
    msg = _error("chartqa", gq, gimages, tmp_path)
    assert str(gq) in msg and "ChartQA's list" in msg


def test_missing_image_names_file_and_record(tmp_path):
    folder, images = WRITERS["pope"](tmp_path / "p")
    (images / "COCO_val2014_2.jpg").unlink()
    msg = _error("pope", folder, images, tmp_path)
    assert f"{folder / 'coco_pope_random.json'}: line 3: image not found" in msg
    base, _ = WRITERS["mme"](tmp_path / "m")
    (base / "existence" / "e2.jpg").unlink()
    assert f"{base / 'existence' / 'e2.txt'}: image: image not found" in _error(
        "mme", base, None, tmp_path)


def test_malformed_records_in_line_formats(tmp_path):
    folder, images = WRITERS["pope"](tmp_path / "p")
    path = folder / "coco_pope_popular.json"
    lines = path.read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "label": "maybe"})
    path.write_text("\n".join(lines))
    assert f"{path}: line 2: label must be yes or no" in _error("pope", folder, images, tmp_path)
    base, _ = WRITERS["mme"](tmp_path / "m")
    (base / "existence" / "e1.txt").write_text("Is there a dog? Yes\n")
    assert f"{base / 'existence' / 'e1.txt'}: line 1: expected 'question<TAB>Yes'" in _error(
        "mme", base, None, tmp_path)
    tsv, _ = WRITERS["mmbench_dev"](tmp_path / "b")
    tsv.write_text(tsv.read_text().replace(benchmark_files.png_base64(), "not-base64!"))
    assert f"{tsv}: line 2 (index 100): `image` is not a base64-encoded image" in _error(
        "mmbench_dev", tsv, None, tmp_path)


# --- in a run ----------------------------------------------------------------------------------
EVAL_LINE = ("eval: {benchmarks: [synth-color, synth-pope], batch_size: 8, max_new_tokens: 3,\n"
             "       before_training: false}\n")


def _run_yaml(tmp_path, eval_yaml: str) -> Path:
    from tests.tiny import tiny_run_yaml
    text = tiny_run_yaml(sft_steps=2)
    assert EVAL_LINE in text
    path = tmp_path / "run.yaml"
    path.write_text(text.replace(EVAL_LINE, eval_yaml))
    return path


def test_run_answers_real_files_by_generation_and_likelihood(tmp_path):
    """A tiny run evaluated on GQA and POPE files in their official layouts: GQA generated,
    POPE answered by likelihood over Yes/No; both scored by their benchmark's scorer."""
    from harness.runs.pipeline import run
    from harness.specs.run_file import load_run_config
    WRITERS["gqa"](tmp_path / "gqa")
    WRITERS["pope"](tmp_path / "pope")
    path = _run_yaml(tmp_path, """\
eval:
  benchmarks: [synth-color, gqa, pope]
  max_new_tokens: 3
  likelihood: [pope]
  sources:
    gqa: {questions: gqa/testdev_balanced_questions.json, images: gqa/images}
    pope: {questions: pope/coco, images: pope/val2014}
""")
    cfg = load_run_config(path)
    gqa_file = tmp_path / "gqa" / "testdev_balanced_questions.json"
    assert cfg.eval.sources["gqa"].questions == str(gqa_file)
    result = run(cfg, tmp_path / "work", progress=False)
    assert set(result.metrics) == {"synth-color", "gqa", "pope"}
    assert 0 <= result.metrics["pope"]["mean_f1"] <= 1
    preds = [json.loads(line) for line in
             (tmp_path / "work" / "runs" / cfg.key / "predictions.jsonl").read_text().split("\n")
             if line]
    pope_preds = [p for p in preds if p["benchmark"] == "pope"]
    assert len(pope_preds) == 12 and {p["method"] for p in pope_preds} == {"likelihood"}
    assert {p["prediction"] for p in pope_preds} <= {"Yes", "No"}
    assert {p["method"] for p in preds if p["benchmark"] == "gqa"} == {"generate"}
    per_question = json.loads((tmp_path / "work" / "runs" / cfg.key /
                               "per_question.json").read_text())
    assert len(per_question["pope"]) == 12 and len(per_question["gqa"]) == 2


@pytest.mark.parametrize("eval_yaml,field,message", [
    ("eval: {benchmarks: [gqa]}\n", "eval.benchmarks[0]", "give eval.sources.gqa.questions"),
    ("eval: {benchmarks: [synth-color, gqa], likelihood: [gqa], sources: {gqa: {questions: "
     "q.json, images: .}}}\n", "eval.likelihood[0]", "'gqa' has open answers"),
    ("eval: {benchmarks: [synth-color], sources: {pope: {questions: p}}}\n",
     "eval.sources.pope", "not one of eval.benchmarks"),
    ("eval: {benchmarks: [pope], sources: {pope: {questions: nowhere, images: .}}}\n",
     "eval.sources.pope.questions", "not found"),
])
def test_bad_eval_sections_are_config_errors(tmp_path, eval_yaml, field, message):
    from core.errors import ConfigError
    from harness.specs.run_file import load_run_config
    (tmp_path / "q.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        load_run_config(_run_yaml(tmp_path, eval_yaml))
    assert err.value.field == field and message in err.value.message
