"""Synthetic LLaVA-format data written to disk, so every test and the demo run the same code
path as real data: PIL-rendered scenes, questions by skill, each skill standing in for the
benchmark family it imitates. Deterministic by seed.

Skills are sized for a tiny model on a CPU. Measured with experiments/tiny/two_experts.yaml
(about 90 s of training on 2 cores): color and chart reading reach ~100%, rendered letters
~80%, count ~70%, position ~64% (chance 25-33%), shape ~48% (chance 25%); existence (POPE
style, which needs colour and shape bound together across several objects) stays at chance
within that budget and is the hard skill that separates stronger vision sides."""
from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from core.files import build_folder_once
from core.identity import content_hash

COLORS = {"red": (215, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
          "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle", "cross")
POSITIONS = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25),
             "bottom": (0.5, 0.75)}
LETTERS = ("A", "E", "H", "O")


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    question: str
    answer: str
    caption: str
    extra_qa: tuple[tuple[str, str], ...] = ()   # more questions about the same image


@dataclass(frozen=True)
class Skill:
    name: str
    benchmark: str        # the benchmark id it feeds
    family: str           # the real benchmark family it imitates
    scorer: str
    render: Callable[[random.Random, int], Scene]


def _canvas(rng: random.Random, size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    shade = rng.randint(225, 250)
    img = Image.new("RGB", (size, size), (shade, shade, shade))
    return img, ImageDraw.Draw(img)


def _draw(draw: ImageDraw.ImageDraw, shape: str, color, cx: float, cy: float, r: float):
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    else:
        w = r / 2.5
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=color)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=color)


def _single(rng: random.Random, size: int, centered: bool):
    img, draw = _canvas(rng, size)
    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    where = rng.choice(list(POSITIONS))
    fx, fy = (0.5, 0.5) if centered else POSITIONS[where]
    jitter = size * 0.05
    cx, cy = fx * size + rng.uniform(-jitter, jitter), fy * size + rng.uniform(-jitter, jitter)
    _draw(draw, shape, COLORS[color], cx, cy, size * rng.uniform(0.14, 0.2))
    return img, color, shape, where


def _color(rng, size):
    img, color, shape, where = _single(rng, size, centered=False)
    return Scene(img, "What color is the shape?", color, f"a {color} {shape} on the {where}.",
                 (("What shape is it?", shape), ("Where is the shape?", where)))


def _shape(rng, size):
    img, color, shape, where = _single(rng, size, centered=False)
    return Scene(img, "What shape is in the image?", shape, f"a {color} {shape} on the {where}.",
                 (("What color is the shape?", color),))


def _position(rng, size):
    img, color, shape, where = _single(rng, size, centered=False)
    return Scene(img, "Where is the shape?", where, f"a {color} {shape} on the {where}.",
                 (("What color is the shape?", color),))


def _scatter(rng, size, n):
    img, draw = _canvas(rng, size)
    cells = rng.sample(range(9), n)
    objects = []
    for c in cells:
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        cx, cy = (c % 3 + 0.5) * size / 3, (c // 3 + 0.5) * size / 3
        _draw(draw, shape, COLORS[color], cx, cy, size * 0.12)
        objects.append((color, shape))
    return img, objects


def _count(rng, size):
    n = rng.randint(1, 3)
    img, objects = _scatter(rng, size, n)
    return Scene(img, "How many shapes are there?", str(n),
                 f"{n} shape{'s' if n > 1 else ''}: " + ", ".join(f"a {c} {s}" for c, s in objects)
                 + ".")


def _existence(rng, size):
    img, objects = _scatter(rng, size, rng.randint(1, 3))
    if rng.random() < 0.5:
        color, shape = rng.choice(objects)
        answer = "yes"
    else:
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in objects]
        color, shape = rng.choice(absent)
        answer = "no"
    caption = ", ".join(f"a {c} {s}" for c, s in objects) + "."
    return Scene(img, f"Is there a {color} {shape} in the image?", answer, caption)


def _chart(rng, size):
    img, draw = _canvas(rng, size)
    colors = rng.sample(list(COLORS), 3)
    heights = rng.sample([0.3, 0.5, 0.7, 0.85], 3)
    width = size / 5
    for i, (c, h) in enumerate(zip(colors, heights)):
        x0 = size * 0.1 + i * (width + size * 0.08)
        draw.rectangle([x0, size * (0.92 - h), x0 + width, size * 0.92], fill=COLORS[c])
    tallest = colors[heights.index(max(heights))]
    return Scene(img, "Which bar is the tallest?", tallest,
                 "a bar chart with " + ", ".join(colors) + " bars.")


def _text(rng, size):
    img, draw = _canvas(rng, size)
    letter = rng.choice(LETTERS)
    font = ImageFont.load_default(size=int(size * 0.6))
    draw.text((size / 2 + rng.uniform(-2, 2), size / 2 + rng.uniform(-2, 2)), letter,
              fill=(20, 20, 20), font=font, anchor="mm")
    return Scene(img, "What letter is written in the image?", letter,
                 f"the letter {letter}.")


SKILLS: dict[str, Skill] = {s.name: s for s in [
    Skill("color", "synth-color", "GQA (attributes)", "vqa_accuracy", _color),
    Skill("shape", "synth-shape", "GQA (objects)", "vqa_accuracy", _shape),
    Skill("position", "synth-position", "GQA (spatial relations)", "vqa_accuracy", _position),
    Skill("count", "synth-count", "VQAv2 (counting)", "vqa_accuracy", _count),
    Skill("existence", "synth-pope", "POPE (object existence, yes/no)", "yes_no", _existence),
    Skill("chart", "synth-chart", "ChartQA (chart reading)", "vqa_accuracy", _chart),
    Skill("text", "synth-text", "TextVQA / OCRBench (reading rendered text)", "vqa_accuracy",
          _text),
]}


def _human(rng: random.Random, question: str) -> str:
    # The placeholder may sit anywhere in the first turn, as in LLaVA's own data.
    return f"<image>\n{question}" if rng.random() < 0.7 else f"{question}\n<image>"


def _question(rid: str, image: str, skill, scene: Scene) -> dict:
    """An evaluation record: the question with its image, benchmark and accepted answer."""
    return {"id": rid, "image": image, "benchmark": skill.benchmark,
            "answers": [scene.answer], "conversations": [
                {"from": "human", "value": f"<image>\n{scene.question}"},
                {"from": "gpt", "value": scene.answer}]}


def generate(config, out_dir: Path) -> None:
    """Write align.json, sft.json, eval.json and images/ for a SyntheticData config."""
    rng = random.Random(config.seed)
    images = out_dir / "images"
    images.mkdir(parents=True)
    align, sft, evaluation = [], [], []

    def save(scene: Scene, name: str) -> str:
        scene.image.save(images / f"{name}.png")
        return f"{name}.png"

    skills = [SKILLS[s] for s in config.skills]
    for i in range(config.captions):
        scene = rng.choice(skills).render(rng, config.image_size)
        align.append({"id": f"cap{i}", "image": save(scene, f"cap{i}"), "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image briefly."},
            {"from": "gpt", "value": scene.caption}]})
    for skill in skills:
        for i in range(config.train_per_skill):
            scene = skill.render(rng, config.image_size)
            qa = [(scene.question, scene.answer)]
            if scene.extra_qa and rng.random() < 0.5:
                qa.append(rng.choice(scene.extra_qa))
            convs = []
            for k, (q, a) in enumerate(qa):
                convs += [{"from": "human", "value": _human(rng, q) if k == 0 else q},
                          {"from": "gpt", "value": a}]
            rid = f"{skill.name}{i}"
            sft.append({"id": rid, "image": save(scene, rid), "conversations": convs})
        for i in range(config.eval_per_skill):
            scene = skill.render(rng, config.image_size)
            rid = f"eval-{skill.name}{i}"
            evaluation.append(_question(rid, save(scene, rid), skill, scene))
    for i in range(config.text_only):
        n = rng.randint(1, 8)
        sft.append({"id": f"text{i}", "conversations": [
            {"from": "human", "value": f"What number comes after {n}?"},
            {"from": "gpt", "value": str(n + 1)}]})
    rng.shuffle(sft)
    for name, records in (("align", align), ("sft", sft), ("eval", evaluation)):
        (out_dir / f"{name}.json").write_text(json.dumps(records, indent=0))


def ensure_synthetic(config, data_root: Path) -> Path:
    """The dataset for `config`, generated once under data_root (atomically: concurrent jobs
    either see the finished folder or generate their own copy and discard it)."""
    target = data_root / f"synthetic-{content_hash(asdict(config))}"
    return build_folder_once(target, lambda staging: generate(config, staging),
                             done=lambda folder: (folder / "eval.json").exists())


def generate_validation(config, per_skill: int, out_dir: Path) -> None:
    """Write validation.json and images/: `per_skill` questions per skill in the eval split's
    format, drawn from their own random stream, so they are held out from (and independent
    of) the eval split a run reports, while the training data stays as it is."""
    rng = random.Random(f"validation:{config.seed}")
    images = out_dir / "images"
    images.mkdir(parents=True)
    records = []
    for skill in (SKILLS[s] for s in config.skills):
        for i in range(per_skill):
            scene = skill.render(rng, config.image_size)
            rid = f"val-{skill.name}{i}"
            scene.image.save(images / f"{rid}.png")
            records.append(_question(rid, f"{rid}.png", skill, scene))
    (out_dir / "validation.json").write_text(json.dumps(records, indent=0))


def ensure_validation(config, per_skill: int, data_root: Path) -> Path:
    """The held-out validation split of `config`'s skills, generated once under data_root."""
    target = data_root / f"synthetic-validation-{content_hash([asdict(config), per_skill])}"
    return build_folder_once(target, lambda staging: generate_validation(config, per_skill,
                                                                         staging),
                             done=lambda folder: (folder / "validation.json").exists())


def corpus(config) -> list[str]:
    """Texts a locally trained tokenizer should cover for this data."""
    rng = random.Random(0)
    texts = ["Describe the image briefly.", "What number comes after 1?"]
    for skill in (SKILLS[s] for s in config.skills):
        for _ in range(30):
            sc = skill.render(rng, 32)
            texts += [sc.question, sc.answer, sc.caption, *(q + " " + a for q, a in sc.extra_qa)]
    texts += [str(i) for i in range(20)]
    return texts
