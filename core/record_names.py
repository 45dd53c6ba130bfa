"""How a run's records are named in MLflow, shared by the writer (the mirror) and the readers
(analysis): where the default store is, the flattened config as params, and the characters
MLflow allows in names. Imports nothing heavy, so reading records never pulls in the training
code."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any


def default_uri(workdir: Path) -> str:
    """The embedded default store: a SQLite file in the work directory."""
    return f"sqlite:///{(Path(workdir) / 'mlflow.db').resolve()}"


def quiet() -> None:
    """MLflow announces creating its tables at INFO; a user needs only warnings."""
    for name in ("alembic", "mlflow", "sqlalchemy", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for handler in logging.getLogger("mlflow").handlers:
        handler.setLevel(logging.WARNING)


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"model.experts.0.id": "clip-vit", ...} (MLflow params are flat);
    lists of scalars stay one value, written as JSON."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        items = ((str(i), v) for i, v in enumerate(obj))
    else:
        return {prefix: json.dumps(obj) if isinstance(obj, list) else str(obj)}
    out: dict[str, str] = {}
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def mlflow_name(name: str) -> str:
    """MLflow accepts only alphanumerics, _ - . space : / in metric and tag names (an expert or
    benchmark name may hold more)."""
    return re.sub(r"[^\w\-. :/]", "_", name)


# The MLflow tag headline.<benchmark> holds {"metric", "unit", "protocol", "revision"} of the
# benchmark's headline (the run's scores.json; runs scored before protocols were recorded lack
# the last two), so readers of MLflow records need not know it either.
HEADLINE_TAG = "headline."
