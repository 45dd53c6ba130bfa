"""The text side of MoVA's context-aware routing (Zong et al., 2024, Sec. 3.2): each expert's
model card, the routing question the LLM is asked (the user's instruction and the cards
beside the base encoder's image tokens), the answer it is trained to give (the helpful
experts' names, from the routing labels) and the parsing of what it does answer.

Parsing is forgiving in what it reads and strict in what it counts: names are matched case-
insensitively, separated by commas, "and" or spaces; a word that names no expert is ignored
and counted as unknown; an answer naming no expert (or "none") leaves the choice to the
router's fallback, and is counted too, so a report can say how often the router failed."""
from __future__ import annotations

import re
from dataclasses import dataclass

from models.templates import IMAGE_PLACEHOLDER

# Short descriptions of the experts MoVA routes between (its Sec. 3.1 and the experts' own
# papers), by expert name first and by family id second; a spec gives its own for any other.
DEFAULT_CARDS = {
    "dinov2": "self-supervised features: objects, parts, layout and fine visual detail",
    "sam": "segmentation features: object boundaries, regions and shapes",
    "pix2struct": "screenshot parsing: documents, forms, web pages and rendered text",
    "deplot": "plot to table: charts, graphs and the numbers in them",
    "biomedclip": "biomedical images: scans, microscopy and medical figures",
    "codetr": "object detection: where objects are and how many",
    "vary": "dense optical character recognition: long text and formulas",
    "convnext": "convolutional features: textures and local detail",
    "clip-vit": "image-text features: general scene and object semantics",
    "clip-vit-hf": "image-text features: general scene and object semantics",
}

NONE_ANSWER = "none"
_SPLIT = re.compile(r"[\s,;/]+|\band\b", re.IGNORECASE)


def routing_question(instruction: str, cards: dict[str, str]) -> str:
    """The routing turn: the experts' cards, then the user's instruction (its image
    placeholder, if any, is kept at the front where the base image tokens go)."""
    lines = [f"{name}: {card}" for name, card in cards.items()]
    if instruction.startswith(IMAGE_PLACEHOLDER):
        head, sep, rest = instruction.partition("\n")
    else:
        head, sep, rest = "", "", instruction
    return (f"{head}{sep}Experts:\n" + "\n".join(lines) + f"\nQuestion: {rest.strip()}\n"
            "Which experts help answer the question? Answer with their names, or none.")


def routing_answer(experts: list[str]) -> str:
    return ", ".join(experts) if experts else NONE_ANSWER


@dataclass(frozen=True)
class ParsedRoute:
    experts: list[str]      # the named experts, in the order named, each once
    unknown: int            # words that named no expert
    said_none: bool         # the answer was "none" (or empty)


def parse_routing(text: str, experts: list[str]) -> ParsedRoute:
    by_lower = {e.lower(): e for e in experts}
    chosen, unknown = [], 0
    words = [w for w in _SPLIT.split(text.strip()) if w and w.strip()]
    for word in words:
        word = word.strip(".:!?\"'()[]").lower()
        if not word:
            continue
        if word in by_lower:
            if by_lower[word] not in chosen:
                chosen.append(by_lower[word])
        elif word != NONE_ANSWER:
            unknown += 1
    return ParsedRoute(chosen, unknown, not chosen)


def routing_corpus(options) -> list[str]:
    """What an LLM router reads and says beyond the data (the cards, the routing question,
    the experts' names), for a locally trained tokenizer (the tiny stand-in's) to learn;
    empty for a fusion that does not route by the LLM."""
    if getattr(options, "router", None) != "llm":
        return []
    names = list(options.cards)
    return [routing_question("", options.cards), *names, routing_answer(names),
            routing_answer([])] * 20
