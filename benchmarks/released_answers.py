"""Score LLaVA-1.5's released answers with the harness's scorers and print them beside the
numbers LLaVA-1.5 published: the end-to-end check that a protocol gives the paper's number
on the paper's own predictions (tests/test_official_protocols.py checks each rule; this checks
the whole path on thousands of real answers).

Inputs are the files LLaVA-1.5 distributes: its evaluation folder (eval.zip, extracted as
playground/data/eval) with the llava-v1.5-13b answers, and POPE's label files
(AoiDragon/POPE output/coco). Benchmarks whose files are missing are skipped and said so.

    python benchmarks/released_answers.py --llava-eval playground/data/eval \
        --pope POPE/output/coco [--mmbench-xlsx .../llava-v1.5-13b.xlsx]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.evaluation.generate import Prediction, score
from harness.evaluation.prompts import LETTERS

# LLaVA-1.5 (Liu et al., 2023, Table 4), 13B: POPE F1 averaged over the three splits,
# MMBench dev (scored by the MMBench server with its GPT judge).
# ScienceQA-IMG: the test questions with an image.
PAPER_13B = {"pope": 85.9, "mmbench_dev": 67.7, "scienceqa_img": 71.6}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pope(llava_eval: Path, labels: Path) -> dict:
    questions = {q["question_id"]: q for q in _jsonl(llava_eval / "pope/llava_pope_test.jsonl")}
    answers = _jsonl(llava_eval / "pope/answers/llava-v1.5-13b.jsonl")
    label = {}
    for split in ("random", "popular", "adversarial"):
        for rec in _jsonl(labels / f"coco_pope_{split}.json"):
            label[(split, rec["question_id"])] = rec["label"]
    preds = []
    for a in answers:
        split = questions[a["question_id"]]["category"]
        # LLaVA's file numbers random and popular from 10,000,001 and 20,000,001; POPE's
        # label files number each split from 1
        number = a["question_id"] % 10_000_000
        preds.append(Prediction(f"{split}-{number}", "pope", a["prompt"], a["text"],
                                [label[(split, number)]], {"split": split}))
    metrics, _ = score(preds, {"pope": [p.id for p in preds]})
    return {"ours": 100 * metrics["pope"]["mean_f1"], "questions": len(preds)}


def mmbench(xlsx: Path) -> dict:
    import pandas as pd  # reading .xlsx needs openpyxl
    rows = pd.read_excel(xlsx).to_dict("records")
    preds = []
    for r in rows:
        options = []
        for letter in LETTERS:   # columns A, B, ... up to the first empty one
            if letter not in r or pd.isna(r[letter]):
                break
            options.append(str(r[letter]))
        index = int(r["index"])
        preds.append(Prediction(str(index), "mmbench_dev", r["question"], str(r["prediction"]),
                                [r["answer"]], {"group": str(index % 1_000_000),
                                                "copy": index // 1_000_000,
                                                "options": options}))
    metrics, per = score(preds, {"mmbench_dev": [p.id for p in preds]})
    m = metrics["mmbench_dev"]
    return {"ours": 100 * m["accuracy"], "questions": len(per["mmbench_dev"]),
            "rows": len(preds), "judge_needed": 100 * m["judge_needed"]}


def scienceqa(llava_eval: Path) -> dict:
    """References from llava_test_CQM-A.json (each question's answer letter, its options as
    'X. ' lines of the prompt, whether it has an image)."""
    problems = {p["id"]: p for p in
                json.loads((llava_eval / "scienceqa/llava_test_CQM-A.json").read_text())}
    # eval_science_qa.py's --output-file: every test question's answer text ("pred"), in
    # its correct and incorrect lists
    output = json.loads((llava_eval / "scienceqa/answers/llava-v1.5-13b_output.jsonl")
                        .read_text())
    preds = []
    for a in output["correct"] + output["incorrect"]:
        problem = problems[a["question_id"]]
        if "image" not in problem:
            continue
        human, gpt = (turn["value"] for turn in problem["conversations"])
        options = [line[3:] for line in human.split("\n")
                   if len(line) > 2 and line[0] in LETTERS and line[1:3] == ". "]
        preds.append(Prediction(a["question_id"], "scienceqa_img", a["question"], a["pred"],
                                [gpt], {"options": options}))
    metrics, _ = score(preds, {"scienceqa_img": [p.id for p in preds]})
    return {"ours": 100 * metrics["scienceqa_img"]["accuracy"], "questions": len(preds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llava-eval", type=Path, required=True,
                        help="LLaVA-1.5's evaluation folder (playground/data/eval)")
    parser.add_argument("--pope", type=Path, help="POPE's output/coco folder (labels)")
    parser.add_argument("--mmbench-xlsx", type=Path,
                        help="LLaVA's MMBench upload (answers_upload/mmbench_dev_20230712/"
                             "llava-v1.5-13b.xlsx under --llava-eval by default)")
    args = parser.parse_args(argv)
    results = {}
    if args.pope and (args.llava_eval / "pope/answers/llava-v1.5-13b.jsonl").is_file():
        results["pope"] = pope(args.llava_eval, args.pope)
    if (args.llava_eval / "scienceqa/answers/llava-v1.5-13b_output.jsonl").is_file():
        results["scienceqa_img"] = scienceqa(args.llava_eval)
    xlsx = args.mmbench_xlsx or (args.llava_eval / "mmbench/answers_upload/"
                                 "mmbench_dev_20230712/llava-v1.5-13b.xlsx")
    if xlsx.is_file():
        results["mmbench_dev"] = mmbench(xlsx)
    for name in PAPER_13B:
        if name not in results:
            print(f"{name}: skipped (its files were not given)")
            continue
        r = results[name]
        extra = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in r.items() if k != "ours")
        print(f"{name}: ours {r['ours']:.2f}, LLaVA-1.5-13B paper {PAPER_13B[name]} ({extra})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
