"""Loaders for the official local file layouts of the real benchmarks, by id. A loader takes
the question file (or folder) and the image folder a user downloaded, checks every record and
image, and returns Questions with LLaVA-1.5's prompts; it never touches the network."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.evaluation.questions import Question
from models.registry import Registry

# (questions: file or folder, images: folder or None, cache: folder for extracted images)
Loader = Callable[[Path, Path | None, Path], list[Question]]
LOADERS: Registry[Loader] = Registry("benchmark format")

from harness.evaluation.formats import choice, mme, open_ended, pope  # noqa: E402,F401

__all__ = ["LOADERS", "Loader"]
