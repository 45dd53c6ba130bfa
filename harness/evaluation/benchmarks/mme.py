"""MME (Fu et al., 2023) in its release folder MME_Benchmark_release_version/: one folder per
subtask; each image has a .txt of two lines "question<TAB>Yes|No". Four subtasks keep them in
images/ and questions_answers_YN/, the others side by side. Prompt as LLaVA-1.5's llava_mme.jsonl
has it: the question without MME's " Please answer yes or no.", then LLaVA's short-answer
suffix (its convert_answer_to_mme.py undoes exactly that to find the reference; lmms-eval's
mme/utils.py makes the same replacement)."""
from __future__ import annotations

from pathlib import Path

from harness.evaluation.benchmarks.registry import Benchmark, register_benchmark
from harness.evaluation.fixtures import png
from harness.evaluation.prompts import short_answer
from harness.evaluation.questions import BenchmarkFileError, Question, bad_record
from harness.evaluation.scoring.closed_form import MME_COGNITION, MME_PERCEPTION

IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")


MME_INSTRUCTION = "Please answer yes or no."


def mme_question(question: str) -> str:
    """The question without MME's closing instruction (some files put two spaces before it)."""
    text = question.rstrip()
    return text[:-len(MME_INSTRUCTION)].rstrip() if text.endswith(MME_INSTRUCTION) else text


def _pairs(folder: Path) -> tuple[Path, Path]:
    """(question folder, image folder) of one subtask, in either release layout."""
    if (folder / "questions_answers_YN").is_dir():
        return folder / "questions_answers_YN", folder / "images"
    return folder, folder


def load(questions: Path, images: Path | None, cache: Path | None) -> list[Question]:
    """MME_Benchmark_release_version folder: <subtask>/*.txt with lines 'question<TAB>Yes|No'
    beside (or in images/ for) each image."""
    if not questions.is_dir():
        raise BenchmarkFileError(f"{questions}: MME takes the MME_Benchmark_release_version "
                                 "folder")
    present = [t for t in (*MME_PERCEPTION, *MME_COGNITION) if (questions / t).is_dir()]
    if not present:
        raise BenchmarkFileError(f"{questions}: no MME subtask folder found (expected some of "
                                 f"{', '.join((*MME_PERCEPTION, *MME_COGNITION))})")
    out = []
    for task in present:
        qdir, idir = _pairs(questions / task)
        texts = sorted(qdir.glob("*.txt"))
        if not texts:
            raise BenchmarkFileError(f"{qdir}: MME subtask '{task}' has no question .txt files")
        for txt in texts:
            image = next((idir / (txt.stem + s) for s in IMAGE_SUFFIXES
                          if (idir / (txt.stem + s)).is_file()), None)
            if image is None:
                raise bad_record(txt, "image", f"image not found: {idir / txt.stem}"
                                               f"{{{','.join(IMAGE_SUFFIXES)}}}")
            lines = [ln for ln in txt.read_text().splitlines() if ln.strip()]
            for n, line in enumerate(lines, 1):
                question, tab, answer = line.rpartition("\t")
                if not tab or answer.strip() not in ("Yes", "No"):
                    raise bad_record(txt, f"line {n}", "expected 'question<TAB>Yes' or "
                                                       f"'question<TAB>No', got {line!r}")
                out.append(Question(f"{task}/{txt.stem}/{n}", str(image.resolve()),
                                    short_answer(mme_question(question)), [answer.strip()],
                                    ["Yes", "No"],
                                    {"category": task, "image": f"{task}/{txt.stem}"}))
    return out


def write_fixture(root: Path) -> tuple[Path, Path]:
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


MME = register_benchmark(Benchmark(
    "mme", "mme", "MME perception and cognition", "perception_points", format="mme",
    loader=load, fixture=write_fixture,
    protocol="MME eval_tool/calculation.py on LLaVA-1.5's prompt (llava_mme.jsonl): acc + acc+ "
             "per subtask, perception summed"))
