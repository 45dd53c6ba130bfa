"""LLaVA-1.5 data parity: a LLaVA-format file with the real files' quirks (multi-turn,
text-only, `<image>` at the end of a turn, a leading gpt turn) is tokenized exactly as
LLaVA-1.5's own preprocessing tokenizes it, token ids and training labels compared record by
record with a plain re-implementation of llava/train/train.py's preprocess_multimodal,
preprocess_v1 and preprocess_plain (and mm_utils.tokenizer_image_token), on a Vicuna-style
tokenizer; and `image_aspect_ratio: pad` against plain resize."""
from __future__ import annotations

import copy
import json
import random

import numpy as np
from PIL import Image

from harness.data.batching import ImageTransform, pad_to_square
from harness.data.llava import load_llava_json
from harness.rehearsal.generated_data import write_align, write_sft
from models.llm import train_tokenizer
from models.templates import TEMPLATES, VICUNA_SYSTEM

IMAGE = "<image>"
IMAGE_INDEX, IGNORE = -200, -100


# --- LLaVA-1.5, written out plainly -----------------------------------------------------------
def llava_preprocess_multimodal(source):
    for sentence in source:
        if IMAGE in sentence["value"]:
            sentence["value"] = sentence["value"].replace(IMAGE, "").strip()
            sentence["value"] = IMAGE + "\n" + sentence["value"]
            sentence["value"] = sentence["value"].strip()
    return source


def llava_tokenizer_image_token(prompt, tokenizer):
    chunks = [tokenizer(c).input_ids for c in prompt.split(IMAGE)]
    ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    separated = []
    for k, chunk in enumerate(chunks):
        if k:
            separated.append([IMAGE_INDEX] * (offset + 1))
        separated.append(chunk)
    for x in separated:
        ids.extend(x[offset:])
    return ids


def llava_preprocess_v1(source, tokenizer, has_image):
    roles = {"human": "USER", "gpt": "ASSISTANT"}
    if roles[source[0]["from"]] != "USER":
        source = source[1:]
    prompt = VICUNA_SYSTEM + " "
    for j, sentence in enumerate(source):
        assert roles[sentence["from"]] == ("USER", "ASSISTANT")[j % 2]
        prompt += roles[sentence["from"]] + ": " + sentence["value"] + (" ", "</s>")[j % 2]

    def tok(text):
        return llava_tokenizer_image_token(text, tokenizer) if has_image else \
            tokenizer(text).input_ids
    ids = tok(prompt)
    target = list(ids)
    sep = " ASSISTANT: "
    cur = 1
    target[:cur] = [IGNORE] * cur
    for rou in prompt.split("</s>"):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len, instruction_len = len(tok(rou)), len(tok(parts[0])) - 2
        target[cur:cur + instruction_len] = [IGNORE] * instruction_len
        cur += round_len
    target[cur:] = [IGNORE] * (len(target) - cur)
    assert cur == len(ids), "LLaVA's round lengths do not add up (it would mask everything)"
    return ids, target


def llava_preprocess_plain(source, tokenizer):
    prompt = IMAGE + source[1]["value"] + "\n"
    ids = llava_tokenizer_image_token(prompt, tokenizer)
    head = len(llava_tokenizer_image_token(IMAGE, tokenizer))
    return ids, [IGNORE] * head + ids[head:]


# --- the comparison ----------------------------------------------------------------------------
def _tokenizer(records):
    corpus = [t["value"] for r in records for t in r["conversations"]] * 3
    return train_tokenizer(corpus + [VICUNA_SYSTEM] * 3, 400, "llama")


def test_fine_tuning_records_tokenize_as_llava_15(tmp_path, capsys):
    path, images = write_sft(tmp_path, 40, random.Random(0))
    raw = json.loads(path.read_text())
    kinds = {"multi-turn": 0, "text-only": 0, "image at the end": 0, "leading gpt": 0}
    for r in raw:
        convs = r["conversations"]
        kinds["multi-turn"] += len(convs) > 2 and "image" in r
        kinds["text-only"] += "image" not in r
        kinds["image at the end"] += convs[0]["value"].endswith(IMAGE)
        kinds["leading gpt"] += convs[0]["from"] == "gpt"
    assert all(kinds.values()), kinds   # the file has every quirk of the real mix
    tokenizer = _tokenizer(raw)
    ours = load_llava_json(path, images)
    assert "leading gpt turn dropped" in capsys.readouterr().out
    template = TEMPLATES.get("vicuna_v1")
    for record, conv in zip(raw, ours):
        source = copy.deepcopy(record["conversations"])
        has_image = "image" in record
        if has_image:
            source = llava_preprocess_multimodal(source)
        want_ids, want_labels = llava_preprocess_v1(source, tokenizer, has_image)
        got = template.encode(conv.turns, tokenizer)
        assert got.input_ids == want_ids, record["id"]
        assert got.labels == want_labels, record["id"]


def test_alignment_records_tokenize_as_llava_15(tmp_path):
    path, images = write_align(tmp_path, 12, random.Random(1))
    raw = json.loads(path.read_text())
    assert any(r["conversations"][0]["value"].endswith(IMAGE) for r in raw)
    tokenizer = _tokenizer(raw)
    template = TEMPLATES.get("plain")
    for record, conv in zip(raw, load_llava_json(path, images)):
        want_ids, want_labels = llava_preprocess_plain(record["conversations"], tokenizer)
        got = template.encode(conv.turns, tokenizer)
        assert (got.input_ids, got.labels) == (want_ids, want_labels), record["id"]


def test_pad_keeps_the_aspect_ratio_with_the_mean_colour():
    image = Image.new("RGB", (40, 20), (255, 0, 0))        # wide, all red
    mean, std = (0.5, 0.25, 0.75), (1.0, 1.0, 1.0)
    padded = ImageTransform((20, 20), mean, std, aspect="pad")(image)
    resized = ImageTransform((20, 20), mean, std, aspect="resize")(image)
    pixels = padded + torch_tensor(mean)                    # undo the normalization
    # the top and bottom quarters are the mean colour (as 8-bit), the middle half the image
    # (rows next to the edge between them carry the bicubic filter's ringing)
    mean_8bit = np.array([int(255 * m) / 255 for m in mean])[:, None, None]
    assert np.allclose(pixels[:, :3].numpy(), mean_8bit, atol=1e-6)
    assert np.allclose(pixels[:, -3:].numpy(), mean_8bit, atol=1e-6)
    assert np.allclose(pixels[:, 7:13].numpy(), np.array([1.0, 0.0, 0.0])[:, None, None],
                       atol=0.02)
    # plain resize stretches the red over the whole square
    assert np.allclose((resized + torch_tensor(mean)).numpy(),
                       np.array([1.0, 0.0, 0.0])[:, None, None], atol=0.02)
    square = pad_to_square(image, (1, 2, 3))
    assert square.size == (40, 40) and square.getpixel((0, 0)) == (1, 2, 3)
    assert square.getpixel((20, 20)) == (255, 0, 0)


def torch_tensor(mean):
    import torch
    return torch.tensor(mean).view(3, 1, 1)


def test_a_batch_resizes_each_image_once_per_size(monkeypatch, tmp_path):
    """Experts that see the same input size (Eagle's 1024-px four) share one resize; each
    still normalizes its own way, where the batch lands: the collated pixels are 8-bit, and
    on the device they are torchvision's to_tensor + normalize exactly; a sample without an
    image gets zeros."""
    import torch

    from harness.data.batching import Collator, to_device
    from harness.data.llava import Conversation
    Image.new("RGB", (30, 20), (10, 200, 30)).save(tmp_path / "a.png")
    transforms = {"clip": ImageTransform((16, 16), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2)),
                  "sam": ImageTransform((16, 16), (0.4, 0.4, 0.4), (0.3, 0.3, 0.3)),
                  "small": ImageTransform((8, 8), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))}
    calls = []
    real = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize",
                        lambda self, size, *a, **k: calls.append(size) or real(self, size, *a,
                                                                               **k))
    tok = train_tokenizer(["hello there"] * 3, 300, "llama")
    collate = Collator(tok, TEMPLATES.get("vicuna_v1"), transforms, tmp_path)
    collated = collate([Conversation("x", "a.png", [("<image>\nhi", "yo")]),
                        Conversation("y", None, [("hi", "yo")])])
    assert sorted(calls) == [(8, 8), (16, 16)]
    assert all(p.dtype == torch.uint8 for p in collated["pixels"].values())
    batch = to_device(collated, torch.device("cpu"))
    assert "pixel_norm" not in batch
    for name, t in transforms.items():
        want = t(Image.open(tmp_path / "a.png").convert("RGB"))
        assert torch_equal(batch["pixels"][name][0], want)
        assert not batch["pixels"][name][1].any()


def torch_equal(a, b) -> bool:
    import torch
    return torch.equal(a, b)
