"""Passes before answering by id, apart from the modules that register into them (one per pass,
in this package; importing harness.evaluation.passes registers them all).

A fusion may ask the LLM something about each question before it answers (Fusion.before_answer
names that pass: MoVA's LLM router names the experts). The model side of the pass lives with the
fusion (models); what needs the harness lives here, under the pass's id: asking it over a batch
of questions at evaluation, judging its decisions over a run's predictions, the training set a
stage of its own task trains it on, the check of a run's stages against it, and the names of
its record and cost entries. Generic code
looks a model's pass up by `model.before_answer` and never names the fusion."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from core.registry import Registry
from harness.config.run_config import StageConfig
from harness.data.batching import Collator
from harness.data.llava import Conversation
from models.fusion import Fusion
from models.multimodal import MultimodalLM


@dataclass
class PassLog:
    """What this rank's passes before answering cost; the pass fills it in."""
    questions: int = 0
    seconds: float = 0.0
    counted_flops: int | None = None      # on the first batch
    counted_questions: int = 0
    tokens_generated: int = 0

    def cost(self, prefix: str) -> dict:
        """cost.json's entries, each named `{prefix}_...` (the pass's `record`)."""
        return {f"{prefix}_questions": self.questions,
                f"{prefix}_s_per_question": self.seconds / self.questions if self.questions
                else None,
                f"{prefix}_flops_per_question": (self.counted_flops / self.counted_questions
                                                 if self.counted_flops is not None else None),
                f"{prefix}_tokens_per_question": (self.tokens_generated / self.questions
                                                  if self.questions else None)}


# (model, tokenizer, prompt collator, questions, device, stop id, log) -> ([B, ...] what the
# pass decided, handed to the answering pass as `given`; one decision record per question)
Ask = Callable[[MultimodalLM, Any, Collator, list[Conversation], torch.device, int,
                PassLog | None], tuple[torch.Tensor, list[dict]]]


@dataclass(frozen=True)
class AnswerPass:
    ask: Ask
    metrics: Callable[[MultimodalLM, list], dict]   # the decisions judged over the predictions
    # a stage of `task` trains the pass (inside model.in_pass()) on these records
    stage_data: Callable[[Fusion, list[Conversation]], list[Conversation]]
    task: str
    record: str     # its record: {record}{tag}.json beside the scores; its cost entries' prefix
    # (a run's stages, whether its model has this pass) -> (field, message) of the first stage
    # that cannot train (or leaves untrained) the pass, or None: checked when a spec is read
    check_stages: Callable[[list[StageConfig], bool], tuple[str, str] | None]


PASSES: Registry[AnswerPass] = Registry("pass before answering")


def answer_pass(model: MultimodalLM) -> AnswerPass | None:
    """The harness side of the model's pass before answering; None: it answers at once."""
    return PASSES.get(model.before_answer) if model.before_answer else None


def ask_first(model: MultimodalLM, tokenizer, collate: Collator, records: list[Conversation],
              device: torch.device, stop_id: int, log: PassLog | None = None
              ) -> tuple[torch.Tensor | None, list[dict | None]]:
    """(what the pass decided, one decision per record); (None, Nones) for a model without
    a pass before answering."""
    found = answer_pass(model)
    if found is None:
        return None, [None] * len(records)
    return found.ask(model, tokenizer, collate, records, device, stop_id, log)
