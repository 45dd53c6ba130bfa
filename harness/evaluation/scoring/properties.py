"""What a scorer declares about the questions it reads, kept on the scorer itself so that a
benchmark learns it from its scorer instead of a list kept elsewhere: closed-form (its
questions carry the allowed answers, yes/no or option letters, which likelihood can rank)."""
from __future__ import annotations

from typing import TypeVar

S = TypeVar("S")


def closed_form(scorer: S) -> S:
    """Declares `scorer` closed-form; use it beside SCORERS.register."""
    scorer.closed_form = True   # type: ignore[attr-defined]
    return scorer


def is_closed_form(scorer) -> bool:
    return getattr(scorer, "closed_form", False) is True
