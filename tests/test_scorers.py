"""Scorers against hand-computed values, including the awkward VQA normalization cases."""
import pytest

from harness.evaluation.scoring.answers import exact_match, normalize_vqa, vqa_score, yes_no


@pytest.mark.parametrize("raw,norm", [
    ("The Red.", "red"), ("a circle", "circle"), ("Two", "2"), ("dont", "don't"),
    ("yes, it is!", "yes it is"), ("3.5", "3.5"), ("  Left  ", "left"),
])
def test_vqa_normalization(raw, norm):
    assert normalize_vqa(raw) == norm


def test_vqa_accuracy_ten_annotators():
    answers = ["red"] * 2 + ["dark red"] * 8
    # "red" matches 2 humans: each leave-one-out subset has 1 or 2 matches -> 1/3 or 2/3
    expected = (2 * (1 / 3) + 8 * (2 / 3)) / 10
    assert vqa_score("Red", answers) == pytest.approx(expected)
    assert vqa_score("dark red", answers) == 1.0
    assert vqa_score("red", ["red"]) == 1.0 and vqa_score("blue", ["red"]) == 0.0


def test_yes_no_accuracy_f1_and_unanswered():
    preds = ["Yes", "no.", "yes", "maybe"]
    refs = [["yes"], ["yes"], ["no"], ["yes"]]
    metrics, per = yes_no(preds, refs)
    assert per == [1.0, 0.0, 0.0, 0.0]
    # tp=1, fp=1, fn=2 -> precision 1/2, recall 1/3, F1 0.4
    assert metrics["f1"] == pytest.approx(0.4)
    assert metrics["yes_ratio"] == 0.5 and metrics["unanswered"] == 0.25


def test_exact_match():
    metrics, _ = exact_match(["Circle.", "square"], [["circle"], ["cross"]])
    assert metrics["accuracy"] == 0.5
