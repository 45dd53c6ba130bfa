"""MoVA's routing data (Zong et al., 2024, Sec. 3.2): a stage's LLaVA records turned into
routing conversations for the LLM router. Each labeled record with an image becomes one
turn: the routing question (the experts' model cards and the record's first instruction, its
image placeholder kept) answered by the experts its routing label lists, or "none". The same
question is what the evaluation's routing pass asks, so training and use read alike."""
from __future__ import annotations

from core.errors import DataError
from harness.data.llava import Conversation
from models.fusion.mova.routers import load_routing_labels
from models.fusion.mova.routing_text import routing_answer, routing_question


def routing_conversations(records: list[Conversation], labels: dict[str, list[str]],
                          cards: dict[str, str], source: str) -> list[Conversation]:
    """The records the labels name (and that have an image), as routing turns."""
    out = [Conversation(r.id, r.image,
                        [(routing_question(r.turns[0][0], cards), routing_answer(labels[r.id]))],
                        r.extra)
           for r in records if r.image is not None and r.id in labels]
    if not out:
        raise DataError(f"routing labels {source}: none of their sample ids is an image record "
                        "of the route stage's data; build them on that data (ablate "
                        "routing-labels --data sft)")
    return out


def routing_prompts(records: list[Conversation], cards: dict[str, str]) -> list[Conversation]:
    """The routing question of each question record (no answer): the routing pass."""
    return [Conversation(r.id, r.image, [(routing_question(r.turns[0][0], cards), "")],
                         r.extra) for r in records]


def route_stage_data(fusion, records: list[Conversation]) -> list[Conversation]:
    """A route stage's training set: `records` turned into routing turns by the fusion's
    routing labels and model cards (a MoVA fusion with `router: llm`)."""
    options = fusion.options
    labels = load_routing_labels(options.labels, fusion.expert_names)
    return routing_conversations(records, labels, options.cards, options.labels)
