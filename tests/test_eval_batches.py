"""Evaluation's batches (harness.evaluation.generate, batches): likelihood scoring encodes a
question's image once for all its allowed answers, with exactly the likelihoods of the old
path that encoded it once per answer; worker processes prepare batches without changing an
answer."""
import dataclasses

import pytest
import torch

from harness.data.batching import Collator, expert_transforms, to_device
from harness.data.llava import Conversation, load_llava_json
from harness.evaluation.generate import choice_likelihoods, generate
from harness.runs.inputs import evaluation_template, resolve_data
from harness.specs.run_file import load_run_config
from harness.training.kernels import seed_kernels
from models.builder import build_model
from models.fusion.base import TextContext
from tests.tiny import tiny_run_yaml

FUSIONS = {"concat": "{id: channel_concat, grid: 2}",
           # MoVA's gates read the prompt: a shared encode must see the same prompt
           "mova": "{id: mova, depth: 1, heads: 2, router: dynamic, k: 2}"}


def _setup(tmp_path, fusion: str):
    path = tmp_path / "run.yaml"
    path.write_text(tiny_run_yaml(fusion=fusion))
    cfg = load_run_config(path)
    seed_kernels(cfg.seed)
    data = resolve_data(cfg, tmp_path)
    model, llm = build_model(cfg.model, cfg.seed, tmp_path / "llm", data.corpus)
    model.eval()
    transforms = expert_transforms(model.experts, cfg.data.image_aspect_ratio)
    collate = Collator(llm.tokenizer, evaluation_template(cfg), transforms, data.eval[1])
    records = load_llava_json(*data.eval)[:7]
    choices = ["red", "blue", "a green one", "yes"]
    questions = [dataclasses.replace(r, extra={**r.extra, "choices": choices[:2 + i % 3]})
                 for i, r in enumerate(records)]
    # a question without an image among them
    text_only = Conversation("text-only", None, [("What is two and two?", "four")],
                             {"choices": ["four", "five"]})
    return model, llm, collate, questions[:3] + [text_only] + questions[3:]


def reference_likelihoods(model, collate, records, batch_size):
    """The old path: one row per (question, answer), each row with its own copy of the
    image, encoded once per row."""
    pairs = [(i, rec, c) for i, rec in enumerate(records) for c in rec.extra["choices"]]
    scores = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        convs = [Conversation(r.id, r.image, [(r.turns[0][0], c)], r.extra)
                 for _, r, c in chunk]
        batch = to_device(collate(convs), torch.device("cpu"))
        nll = model.per_sample_loss(batch["input_ids"], batch["attention_mask"],
                                    batch["labels"], batch["pixels"], batch["has_image"],
                                    batch["sample_ids"], total=True)
        scores += (-nll).tolist()
    out, at = [], 0
    for rec in records:
        out.append(scores[at:at + len(rec.extra["choices"])])
        at += len(rec.extra["choices"])
    return out


def _encoded_images(model, one_by_one: bool = False):
    """The number of images each encode call takes; one_by_one: each image encoded alone, so
    an image's tokens do not depend on how many others share its batch."""
    seen = []
    original = model.encode_images

    def counting(pixels, text=None):
        n = next(iter(pixels.values())).shape[0]
        seen.append(n)
        if not one_by_one:
            return original(pixels, text)
        return torch.cat([original({k: v[i:i + 1] for k, v in pixels.items()},
                                   _row(text, i)) for i in range(n)])
    model.encode_images = counting
    return seen


def _row(text, i):
    if text is None:
        return None
    return TextContext(text.embeddings[i:i + 1], text.mask[i:i + 1],
                       text.sample_ids[i:i + 1] if text.sample_ids else None,
                       text.given[i:i + 1] if text.given is not None else None)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_likelihoods_with_each_image_encoded_once_equal_the_old_path(tmp_path, fusion):
    """Exactly, where an image's tokens are computed alike in both paths (each encoded
    alone); with the batched encode, the same answers and likelihoods within the old path's
    own variation with the batch size (it moved them by up to 1.9e-6 between batches of 5
    and 64: float sums in another order)."""
    model, _, collate, records = _setup(tmp_path, FUSIONS[fusion])
    cpu = torch.device("cpu")
    for batch_size in (5, 64):   # a question's answers split over two batches, and not
        _encoded_images(model, one_by_one=True)
        want = reference_likelihoods(model, collate, records, batch_size)
        got = choice_likelihoods(model, collate, records, batch_size, cpu)
        assert got == want, (fusion, batch_size)
        del model.encode_images

        want = reference_likelihoods(model, collate, records, batch_size)
        seen = _encoded_images(model)
        got = choice_likelihoods(model, collate, records, batch_size, cpu)
        del model.encode_images
        assert [g.index(max(g)) for g in got] == [w.index(max(w)) for w in want]
        assert max(abs(a - b) for g, w in zip(got, want) for a, b in zip(g, w)) < 1e-5
        with_image = [r for r in records if r.image is not None]
        if batch_size == 64:   # every image once, not once per answer
            assert sum(seen) == len(with_image)
            assert sum(len(r.extra["choices"]) for r in with_image) > 2 * sum(seen)
def test_workers_prepare_the_same_batches(tmp_path):
    model, llm, collate, records = _setup(tmp_path, FUSIONS["concat"])
    cpu = torch.device("cpu")
    assert (choice_likelihoods(model, collate, records, 5, cpu, workers=2)
            == choice_likelihoods(model, collate, records, 5, cpu))
    prompts = collate.as_prompts()
    asked = {"synth-color": [r for r in records if r.image is not None]}
    answers = [generate(model, llm.tokenizer, prompts, asked, 3, 3, llm.tokenizer.eos_token_id,
                        cpu, progress=False, workers=w) for w in (0, 2)]
    assert [p.prediction for p in answers[0]] == [p.prediction for p in answers[1]]
    assert len(answers[0]) == len(asked["synth-color"])
