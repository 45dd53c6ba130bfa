"""Small benchmark files in each benchmark's official layout (the file names, folders and
record fields of GQA, TextVQA, POPE, MME, ScienceQA, MMBench, SEED-Bench, ChartQA, DocVQA and
OCRBench), written into a folder: `ablate rehearse` answers and scores them through the real
loaders and scorers, and the tests work their expected scores out by hand, so the records are
hand-picked (articles, punctuation, near misses, a video question SEED-Bench must skip)."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from PIL import Image


def png(path: Path, color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def png_base64(color=(30, 200, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def gqa(root: Path) -> tuple[Path, Path]:
    data = {"201": {"imageId": "n1", "question": "What color is the car?", "answer": "red",
                    "fullAnswer": "The car is red.", "types": {}},
            "202": {"imageId": "n2", "question": "Is it on the left?", "answer": "no"}}
    for img in ("n1", "n2"):
        png(root / "images" / f"{img}.jpg")
    (root / "testdev_balanced_questions.json").write_text(json.dumps(data))
    return root / "testdev_balanced_questions.json", root / "images"


def textvqa(root: Path) -> tuple[Path, Path]:
    data = {"dataset_name": "textvqa", "dataset_version": "0.5.1", "data": [
        {"question_id": 1, "image_id": "t1", "question": "What brand is it?",
         "answers": ["the nike", "Nike."] + ["adidas"] * 8},
        {"question_id": 2, "image_id": "t2", "question": "What number?",
         "answers": ["two"] * 10}]}
    for img in ("t1", "t2"):
        png(root / "train_images" / f"{img}.jpg")
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps(data))
    ocr = {"dataset_name": "textvqa", "data": [
        {"image_id": "t1", "ocr_tokens": ["NIKE", "just", "do"], "ocr_info": []},
        {"image_id": "t2", "ocr_tokens": [], "ocr_info": []}]}
    (root / "TextVQA_Rosetta_OCR_v0.2_val.json").write_text(json.dumps(ocr))
    return root / "TextVQA_0.5.1_val.json", root / "train_images"


def docvqa(root: Path) -> tuple[Path, Path]:
    data = {"dataset_name": "docvqa", "data": [
        {"questionId": 10, "question": "Who signed?", "image": "documents/d1.png",
         "answers": ["John Smith", "J. Smith"]},
        {"questionId": 11, "question": "What year?", "image": "documents/d2.png",
         "answers": ["1998"]}]}
    for img in ("d1", "d2"):
        png(root / "documents" / f"{img}.png")
    (root / "val_v1.0.json").write_text(json.dumps(data))
    return root / "val_v1.0.json", root


def chartqa(root: Path) -> tuple[Path, Path]:
    data = [{"imgname": "c1.png", "query": "What is the peak?", "label": "12.4"},
            {"imgname": "c2.png", "query": "Share of cars?", "label": "45%"},
            {"imgname": "c1.png", "query": "Which is larger?", "label": "Germany"},
            {"imgname": "c2.png", "query": "Minimum?", "label": "0"}]
    for img in ("c1", "c2"):
        png(root / "png" / f"{img}.png")
    (root / "test_human.json").write_text(json.dumps(data))
    return root / "test_human.json", root / "png"


def ocrbench(root: Path) -> tuple[Path, Path]:
    data = [{"id": 0, "dataset_name": "IIIT5K", "type": "Regular Text Recognition",
             "image_path": "IIIT5K/o1.png", "question": "what is written in the image?",
             "answers": ["HOTEL"]},
            {"id": 1, "dataset_name": "HME100k", "type": "Handwritten Mathematical Expression "
             "Recognition", "image_path": "HME100k/o2.png", "question": "Write the formula.",
             "answers": "x ^ { 2 } + 1"}]
    png(root / "IIIT5K" / "o1.png")
    png(root / "HME100k" / "o2.png")
    (root / "OCRBench.json").write_text(json.dumps(data))
    return root / "OCRBench.json", root


def pope(root: Path) -> tuple[Path, Path]:
    """Four questions per split, the same images; labels yes, yes, no, no."""
    folder = root / "coco"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("random", "popular", "adversarial"):
        lines = [{"question_id": i + 1, "image": f"COCO_val2014_{i}.jpg",
                  "text": f"Is there a {obj} in the image?", "label": label}
                 for i, (obj, label) in enumerate([("dog", "yes"), ("cat", "yes"),
                                                   ("car", "no"), ("tree", "no")])]
        (folder / f"coco_pope_{split}.json").write_text(
            "\n".join(json.dumps(x) for x in lines) + "\n")
    for i in range(4):
        png(root / "val2014" / f"COCO_val2014_{i}.jpg")
    return folder, root / "val2014"


def mme(root: Path) -> tuple[Path, Path]:
    """existence (perception, flat layout) with two images, code_reasoning (cognition) and
    artwork (perception) in the images/ + questions_answers_YN/ layout, one image each."""
    base = root / "MME_Benchmark_release_version"
    for stem in ("e1", "e2"):
        png(base / "existence" / f"{stem}.jpg")
        (base / "existence" / f"{stem}.txt").write_text(
            "Is there a dog in this image? Please answer yes or no.\tYes\n"
            "Is there a cat in this image? Please answer yes or no.\tNo\n")
    for task in ("code_reasoning", "artwork"):
        png(base / task / "images" / "k1.png")
        (base / task / "questions_answers_YN").mkdir(parents=True)
        (base / task / "questions_answers_YN" / "k1.txt").write_text(
            "Is the output 3? Please answer yes or no.\tYes\n"
            "Is the output 4? Please answer yes or no.\tNo\n")
    return base, None


def scienceqa(root: Path) -> tuple[Path, Path]:
    problems = {
        "5": {"question": "Which is a mammal?", "choices": ["shark", "whale", "trout"],
              "answer": 1, "hint": "", "image": "image.png", "split": "test",
              "subject": "natural science"},
        "6": {"question": "Which word is a noun?", "choices": ["run", "table"], "answer": 1,
              "hint": "Select the best answer.", "image": "image.png", "split": "test"},
        "7": {"question": "No image here", "choices": ["a", "b"], "answer": 0, "hint": "",
              "image": None, "split": "test"},
        "8": {"question": "Train split", "choices": ["a", "b"], "answer": 0, "hint": "",
              "image": "image.png", "split": "train"}}
    for pid in ("5", "6"):
        png(root / "test" / pid / "image.png")
    (root / "problems.json").write_text(json.dumps(problems))
    return root / "problems.json", root / "test"


def mmbench(root: Path) -> tuple[Path, Path | None]:
    """The official dev TSV's layout: question i and its CircularEval copies i + k*1e6, the
    options of copy k shifted k places and its answer letter moved with them, each copy's
    image the index of the row that holds it. Three questions of 4, 2 and 3 options (9 rows);
    101 has a hint, 102 stops its options at an empty column C."""
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category",
              "image", "source", "l2-category", "comment", "split"]
    questions = [(100, "What is shown?", "nan", ["a cat", "a dog", "a bird", "a fish"], 1,
                  "object_localization", png_base64()),
                 (101, "Which color?", "The sky is clear.", ["red", "blue"], 0, "attribute",
                  png_base64((20, 20, 220))),
                 (102, "How many?", "nan", ["one", "two", "three"], 2, "count", "100")]
    rows = []
    for index, question, hint, options, right, category, image in questions:
        for k in range(len(options)):
            shifted = options[k:] + options[:k]
            cells = (shifted + ["nan"] * 4)[:4]
            rows.append([str(index + k * 1_000_000), question, hint, *cells,
                         "ABCD"[(right - k) % len(options)], category,
                         image if k == 0 or image.isdigit() else str(index), "src", "l2",
                         "nan", "dev"])
    path = root / "mmbench_dev_20230712.tsv"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    return path, None


def seed(root: Path) -> tuple[Path, Path]:
    data = {"questions": [
        {"question_id": "s1", "question": "How many cars?", "choice_a": "1", "choice_b": "2",
         "choice_c": "3", "choice_d": "4", "answer": "C", "data_id": "1454.jpg",
         "data_type": "image", "question_type_id": 5},
        {"question_id": "s2", "question": "A video question", "choice_a": "x", "choice_b": "y",
         "choice_c": "z", "choice_d": "w", "answer": "A", "data_id": "v.mp4",
         "data_type": "video", "question_type_id": 10}],
        "question_type": {"Instances Counting": 5}}
    png(root / "SEED-Bench-image" / "1454.jpg")
    (root / "SEED-Bench.json").write_text(json.dumps(data))
    return root / "SEED-Bench.json", root / "SEED-Bench-image"


# benchmark id -> writer(root) -> (questions path, images folder or None), the two values of
# its eval.sources entry
WRITERS = {"gqa": gqa, "textvqa": textvqa, "textvqa_ocr": textvqa, "docvqa": docvqa,
           "chartqa": chartqa, "ocrbench": ocrbench, "pope": pope, "mme": mme,
           "scienceqa_img": scienceqa, "mmbench_dev": mmbench, "seed_bench_img": seed}
