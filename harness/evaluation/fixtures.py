"""The images that benchmark fixture writers draw (each benchmark module of
harness.evaluation.benchmarks writes small files in its official layout: `ablate rehearse`
answers and scores them through the real loaders and scorers, and the tests work their
expected scores out by hand, so the records are hand-picked: articles, punctuation, near
misses, a video question SEED-Bench must skip)."""
from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image


def png(path: Path, color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def png_base64(color=(30, 200, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()
