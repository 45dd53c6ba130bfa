"""Generation and scoring, as two steps: `generate` answers every question of the selected
benchmarks by batched greedy decoding; `score` reads those answers back, checks that every
expected question has one, and applies each benchmark's scorer."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from harness.data.batching import Collator, to_device
from harness.data.llava import Conversation
from harness.evaluation.benchmarks import BENCHMARKS
from harness.evaluation.scorers import SCORERS
from models.multimodal import MultimodalLM


@dataclass
class Prediction:
    id: str
    benchmark: str
    question: str
    prediction: str
    answers: list[str]


def generate(model: MultimodalLM, tokenizer, collate: Collator, records: list[Conversation],
             benchmarks: list[str], batch_size: int, max_new_tokens: int, stop_id: int,
             device: torch.device, progress: bool = True) -> list[Prediction]:
    questions = [(name, r) for name in benchmarks for r in BENCHMARKS.get(name).select(records)]
    model.eval()
    out: list[Prediction] = []
    for start in tqdm(range(0, len(questions), batch_size), desc="eval", leave=False,
                      disable=not progress):
        chunk = questions[start:start + batch_size]
        prompts = [Conversation(r.id, r.image, [(r.turns[0][0], "")], r.extra) for _, r in chunk]
        batch = collate(prompts)
        batch = to_device(batch, device)
        tokens = model.generate(batch["input_ids"], batch["attention_mask"], batch["pixels"],
                                batch["has_image"], max_new_tokens, stop_id,
                                sample_ids=batch["sample_ids"])
        for (name, rec), toks in zip(chunk, tokens):
            text = tokenizer.decode(toks, skip_special_tokens=True).strip()
            answers = rec.extra.get("answers") or [rec.turns[0][1]]
            out.append(Prediction(rec.id, name, rec.turns[0][0], text, list(answers)))
    return out


def expected_counts(records: list[Conversation], benchmarks: list[str]) -> dict[str, int]:
    return {name: len(BENCHMARKS.get(name).select(records)) for name in benchmarks}


def score(predictions: list[Prediction], expected: dict[str, int]
          ) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """{benchmark: {metric: value}} and the per-question scores; refuses incomplete answers."""
    metrics, per_question = {}, {}
    for name, count in expected.items():
        preds = [p for p in predictions if p.benchmark == name]
        if len(preds) != count or len({p.id for p in preds}) != count:
            raise RuntimeError(f"benchmark '{name}': {len(preds)} answers for {count} "
                               f"questions; generation is incomplete")
        if count == 0:
            raise RuntimeError(f"benchmark '{name}' has no questions in the eval data")
        bench = BENCHMARKS.get(name)
        m, per = SCORERS.get(bench.scorer)([p.prediction for p in preds],
                                           [p.answers for p in preds])
        metrics[name], per_question[name] = m, per
    return metrics, per_question
