"""The benchmark-format loader registry, apart from the modules that register into it (one
per format family); importing harness.evaluation.formats registers them all."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.registry import Registry
from harness.evaluation.questions import Question

# (questions: file or folder, images: folder or None, cache: folder for extracted images, or
# None to read and check without writing anything: validation before a run exists)
Loader = Callable[[Path, Path | None, Path | None], list[Question]]
LOADERS: Registry[Loader] = Registry("benchmark format")
