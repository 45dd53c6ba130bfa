"""One evaluation of a model across a job's ranks: each rank answers its share of every
benchmark's questions (by generation, or by likelihood for the benchmarks asked so), rank 0
gathers the answers back into the questions' order, writes them (predictions.jsonl) and
scores them. The ranks' collectives come in through `Ranks` (the run passes its World's), so
evaluation stays below training in the layers."""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from harness.data.batching import Collator
from harness.data.llava import Conversation
from harness.evaluation.generate import (
    Prediction,
    choose_by_likelihood,
    expected_ids,
    generate,
    score,
)
from harness.evaluation.passes import PassLog, answer_pass
from harness.evaluation.scores import headlines
from models.multimodal import MultimodalLM

Questions = dict[str, list[Conversation]]   # benchmark -> its questions, in order


class Ranks(Protocol):
    """The job's ranks as an evaluation needs them."""

    @property
    def is_main(self) -> bool: ...

    def share(self, items: list) -> list:
        """This rank's share of `items`."""

    def gather(self, value: list) -> list[list] | None:
        """Every rank's `value` in rank order on rank 0, None on the others."""


class RecordFolder(Protocol):
    """Where an evaluation's records go (a run's directory, or a rung's)."""

    @property
    def path(self) -> Path: ...

    def write_json(self, name: str, obj: Any) -> None: ...


@dataclass(frozen=True)
class Answerer:
    """The model as an evaluation asks it: the conversation template and each expert's image
    preprocessing the questions are put in, and the run's evaluation settings. `precision`
    opens the run's autocast: it evaluates in the precision it trained in (the vision side
    in fp32 cost an evaluation at 1024 px hours instead of minutes)."""
    model: MultimodalLM
    tokenizer: Any
    template: Any
    transforms: dict
    device: torch.device
    batch_size: int
    max_new_tokens: int
    likelihood: list[str]                  # benchmarks answered by the likeliest answer
    workers: int                           # loader workers preparing the batches
    precision: Callable[[], contextlib.AbstractContextManager]
    progress: bool

    def answer(self, questions: Questions, image_root: Path, log: PassLog
               ) -> list[Prediction]:
        """Every question answered, by generation unless its benchmark is answered by
        likelihood; the model's passes before answering are counted in `log`."""
        by_likelihood = {n: q for n, q in questions.items() if n in self.likelihood}
        by_generation = {n: q for n, q in questions.items() if n not in by_likelihood}
        collate = Collator(self.tokenizer, self.template, self.transforms, image_root,
                           for_generation=True)
        stop_id = self.template.stop_id(self.tokenizer)
        with self.precision():
            preds = generate(self.model, self.tokenizer, collate, by_generation,
                             self.batch_size, self.max_new_tokens, stop_id, self.device,
                             self.progress, log, self.workers)
            if by_likelihood:
                scoring = Collator(self.tokenizer, self.template, self.transforms, image_root)
                preds += choose_by_likelihood(self.model, scoring, by_likelihood,
                                              self.batch_size, self.device, self.progress,
                                              self.tokenizer, stop_id, log, self.workers)
        return preds


def in_question_order(gathered: list[list[Prediction]], questions: Questions
                      ) -> list[Prediction]:
    """The ranks' answers as one list, in the order the questions were asked."""
    order = {(n, q.id): i for i, (n, q) in enumerate(
        (n, q) for n, qs in questions.items() for q in qs)}
    return sorted((p for part in gathered for p in part),
                  key=lambda p: order.get((p.benchmark, p.id), len(order)))


def write_scored(folder: RecordFolder, tag: str, preds: list[Prediction],
                 questions: Questions, model: MultimodalLM) -> dict:
    """The answers written (predictions{tag}.jsonl) and scored into `folder`: metrics,
    headline scores and per-question results; returns the metrics."""
    folder.path.mkdir(parents=True, exist_ok=True)
    with open(folder.path / f"predictions{tag}.jsonl", "w") as f:
        f.writelines(json.dumps(p.record()) + "\n" for p in preds)
    found = answer_pass(model)
    if found is not None:   # the pass's decisions judged (MoVA's router: against its labels)
        folder.write_json(f"{found.record}{tag}.json", found.metrics(model, preds))
    metrics, per_question = score(preds, expected_ids(questions))
    folder.write_json(f"metrics{tag}.json", metrics)
    folder.write_json(f"scores{tag}.json", headlines(metrics))
    folder.write_json(f"per_question{tag}.json", per_question)
    return metrics


def evaluate_sharded(answerer: Answerer, ranks: Ranks, questions: Questions,
                     image_root: Path, folder: RecordFolder, tag: str, log: PassLog
                     ) -> dict | None:
    """Each rank answers its share of every benchmark's questions; rank 0 gathers the
    answers back into the questions' order and scores them into `folder` (None on the
    other ranks). `log` counts this rank's passes before answering."""
    mine = {n: ranks.share(q) for n, q in questions.items()}
    gathered = ranks.gather(answerer.answer(mine, image_root, log))
    if not ranks.is_main:
        return None
    return write_scored(folder, tag, in_question_order(gathered, questions), questions,
                        answerer.model)
