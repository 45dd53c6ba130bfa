"""The training data path: worker processes prepare exactly the batches the training process
would, in step order from any start step, and LLaVA's modality-length grouping keeps each
global batch to one modality, longest first, reproducibly."""
from __future__ import annotations

import torch
from PIL import Image

from harness.data.batching import Collator, ImageTransform
from harness.data.llava import Conversation
from harness.training.loader import (
    ModalityLengthOrder,
    StepBatches,
    batch_indices,
    step_batches,
    step_order,
)
from models.llm import train_tokenizer
from models.templates import TEMPLATES


def _samples(n: int, text_every: int = 3) -> list[Conversation]:
    out = []
    for i in range(n):
        words = " ".join(["word"] * (1 + i % 7))
        image = None if i % text_every == 0 else f"{i}.png"
        out.append(Conversation(str(i), image, [("human", f"<image>\nsay {words}"
                                                 if image else f"say {words}"),
                                                ("gpt", words)]))
    return out


def test_workers_prepare_the_batches_the_training_process_would(tmp_path):
    samples = _samples(24)
    for s in samples:
        if s.image:
            shade = (int(s.id) * 9, 40, 200)
            Image.new("RGB", (20 + int(s.id), 16), shade).save(tmp_path / s.image)
    tokenizer = train_tokenizer([t for s in samples for _, t in s.turns], 300)
    transforms = {"a": ImageTransform((16, 16), (0.5,) * 3, (0.5,) * 3),
                  "b": ImageTransform((8, 8), (0.4,) * 3, (0.3,) * 3, aspect="pad")}
    collate = Collator(tokenizer, TEMPLATES.get("vicuna_v1"), transforms, tmp_path)
    order = step_order(samples, 8, seed=3, group_by_modality=False)
    batches = StepBatches(samples, collate, order, rank=1, micro=2, accumulation=2)
    inline = list(step_batches(batches, 2, 7, workers=0, prefetch=2, pin_memory=False))
    workers = list(step_batches(batches, 2, 7, workers=2, prefetch=2, pin_memory=False))
    assert len(inline) == len(workers) == 5
    for a_step, b_step in zip(inline, workers):
        assert len(a_step) == 2
        for a, b in zip(a_step, b_step):
            assert a["sample_ids"] == b["sample_ids"]
            assert torch.equal(a["input_ids"], b["input_ids"])
            assert all(torch.equal(a["pixels"][k], b["pixels"][k]) for k in transforms)
    # the order travels to workers started by spawn (macOS's default) as well as by fork
    import pickle
    for grouped in (False, True):
        order = step_order(samples, 8, seed=3, group_by_modality=grouped)
        assert [pickle.loads(pickle.dumps(order))(s) for s in range(5)] == \
            [order(s) for s in range(5)]
    # rank 1 of 2 at step 2: the second half of the step's global batch
    assert inline[0][0]["sample_ids"] + inline[0][1]["sample_ids"] == [
        str(i) for i in batch_indices(2, 8, 24, 3)[4:]]


def test_modality_length_grouping_as_llava():
    samples = _samples(103)
    order = ModalityLengthOrder.of(samples, 8, seed=1)
    assert order.steps_per_epoch == 103 // 8
    lengths = order.lengths
    for epoch in range(2):
        steps = [order(epoch * order.steps_per_epoch + k) for k in range(order.steps_per_epoch)]
        seen = [i for b in steps for i in b]
        assert len(seen) == len(set(seen)) == order.steps_per_epoch * 8
        mixed = [b for b in steps if len({lengths[i] > 0 for i in b}) > 1]
        assert len(mixed) <= 1        # only what is left of both modalities shares a batch
        for b in steps:
            assert [abs(lengths[i]) for i in b] == sorted((abs(lengths[i]) for i in b),
                                                          reverse=True)
    assert order(0) != order(order.steps_per_epoch)            # each epoch reshuffled
    again = step_order(samples, 8, seed=1, group_by_modality=True)
    assert [again(s) for s in range(30)] == [order(s) for s in range(30)]   # resume-exact
    assert step_order(samples, 8, seed=2, group_by_modality=True)(0) != order(0)
    # fewer samples than a batch: every sample in the one step, as without grouping
    few = _samples(5)
    assert sorted(step_order(few, 8, 1, True)(0)) == sorted(step_order(few, 8, 1, False)(0))
