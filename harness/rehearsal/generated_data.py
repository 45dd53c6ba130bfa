"""The files a rehearsal trains and evaluates on, generated in the real formats at the
rehearsal's own location, laid out as LLaVA's playground/data lays out the real ones:

    data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json + images/00000/000000012.jpg   (alignment)
    data/llava_v1_5_mix665k.json + coco/train2017, gqa/images, ocr_vqa/images,
        textvqa/train_images, vg/VG_100K                                          (fine-tuning)
    data/eval/<benchmark>/...   each benchmark's official layout (harness.evaluation.benchmarks)

The fine-tuning file has the real mix's quirks: multi-turn conversations, text-only
(ShareGPT) records, `<image>` at the end of a turn, a conversation that opens with a gpt turn.
Images are non-square, so `image_aspect_ratio: pad` is exercised. A fusion whose options name
files a rehearsal writes (Fusion.rehearsal_files: MoVA's routing labels, for its oracle or LLM
router) gets them for the fine-tuning file's image records (routing labels as `ablate
routing-labels` would write them, here one to three experts drawn per sample)."""
from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

from harness.evaluation.benchmarks import FIXTURE_WRITERS as WRITERS

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220),
          "yellow": (230, 210, 40)}
SHAPES = ("circle", "square")
ALIGN_PROMPTS = ("<image>\nRender a clear and concise summary of the photo.",
                 "Write a terse but informative summary of the picture.\n<image>")
SFT_FOLDERS = ("coco/train2017", "gqa/images", "ocr_vqa/images", "textvqa/train_images",
               "vg/VG_100K")


def _image(path: Path, color: str, shape: str, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = rng.choice([(96, 64), (64, 96), (80, 80)])
    im = Image.new("RGB", (w, h), (250, 250, 250))
    box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    draw = ImageDraw.Draw(im)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLORS[color])
    im.save(path)


def write_align(root: Path, records: int, rng: random.Random) -> tuple[Path, Path]:
    folder = root / "LLaVA-Pretrain"
    out = []
    for i in range(records):
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        rel = f"{i // 100:05d}/{i:09d}.jpg"
        _image(folder / "images" / rel, color, shape, rng)
        out.append({"id": f"{i:09d}", "image": rel, "conversations": [
            {"from": "human", "value": ALIGN_PROMPTS[i % 2]},
            {"from": "gpt", "value": f"a {color} {shape} on a white background"}]})
    path = folder / "blip_laion_cc_sbu_558k.json"
    path.write_text(json.dumps(out))
    return path, folder / "images"


def write_sft(root: Path, records: int, rng: random.Random) -> tuple[Path, Path]:
    out = []
    for i in range(records):
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        kind = i % 5
        if kind == 3:   # ShareGPT: text only, and this one opens with a gpt turn
            convs = ([{"from": "gpt", "value": "Hello! How can I help?"}] if i % 10 == 3
                     else []) + [
                {"from": "human", "value": "What is two plus two?"},
                {"from": "gpt", "value": "Two plus two is four."}]
            out.append({"id": f"sharegpt_{i}", "conversations": convs})
            continue
        rel = f"{SFT_FOLDERS[i % len(SFT_FOLDERS)]}/{i:012d}.jpg"
        _image(root / rel, color, shape, rng)
        question = "What color is the shape?" + (
            "\nAnswer the question using a single word or phrase." if kind != 1 else "")
        first = (f"{question}\n<image>" if kind == 2 else f"<image>\n{question}")
        convs = [{"from": "human", "value": first}, {"from": "gpt", "value": color}]
        if kind in (0, 4):   # multi-turn, as the VQA and GQA parts of the mix are
            convs += [{"from": "human", "value": "What shape is it?"},
                      {"from": "gpt", "value": f"It is a {shape}."}]
        out.append({"id": f"{i:012d}", "image": rel, "conversations": convs})
    path = root / "llava_v1_5_mix665k.json"
    path.write_text(json.dumps(out))
    return path, root


def write_benchmarks(root: Path, benchmarks: list[str]) -> dict[str, tuple[Path, Path | None]]:
    """benchmark -> (questions, images) of its fixture in the official layout."""
    out = {}
    for name in benchmarks:
        folder = root / "eval" / name
        if name not in WRITERS:
            raise ValueError(f"no rehearsal fixture for benchmark '{name}'; fixtures: "
                             + ", ".join(WRITERS))
        marker = folder / ".written.json"
        if marker.exists():
            q, i = json.loads(marker.read_text())
            out[name] = (Path(q), Path(i) if i else None)
            continue
        q, i = WRITERS[name](folder)
        marker.write_text(json.dumps([str(q), str(i) if i else None]))
        out[name] = (q, i)
    return out


def write_training_data(root: Path, records: int, seed: int = 0) -> dict[str, tuple[Path, Path]]:
    """The alignment and fine-tuning files, written once per rehearsal folder."""
    marker = root / ".training.json"
    if marker.exists():
        return {k: (Path(a), Path(b)) for k, (a, b) in json.loads(marker.read_text()).items()}
    rng = random.Random(seed)
    parts = {"align": write_align(root, records, rng), "sft": write_sft(root, records, rng)}
    marker.write_text(json.dumps({k: [str(a), str(b)] for k, (a, b) in parts.items()}))
    return parts


def write_routing_labels(root: Path, sft_json: Path, experts: list[str]) -> Path:
    """{sample id: experts} for every image record of the rehearsal's fine-tuning file: a
    stand-in for the labels `ablate routing-labels` builds from finished runs, written once
    per set of experts."""
    path = root / f"routing-labels-{'-'.join(experts)}.json"
    if path.exists():
        return path
    rng = random.Random("routing:" + ",".join(experts))
    labels = {}
    for record in json.loads(sft_json.read_text()):
        if "image" in record:
            labels[record["id"]] = rng.sample(experts, rng.randint(0, min(3, len(experts))))
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(labels, sort_keys=True))
    staging.replace(path)
    return path


# kind of file a fusion asks for (Fusion.rehearsal_files) -> its writer: (data folder, the
# fine-tuning file, expert names) -> the file written
FUSION_FILE_WRITERS: dict[str, Callable[[Path, Path, list[str]], Path]] = {
    "routing_labels": write_routing_labels}
