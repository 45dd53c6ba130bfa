"""Passes before answering by id (harness.evaluation.passes.registry), one module each, found by
their presence: every module of this package but `registry` registers one pass, and importing
this package imports them all, so a fusion's new pass is one new file here."""
from __future__ import annotations

import importlib
import pkgutil

from harness.evaluation.passes.registry import (
    PASSES,
    AnswerPass,
    PassLog,
    answer_pass,
    ask_first,
)

_NOT_A_PASS = {"registry"}

for _name in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_A_PASS):
    importlib.import_module(f"{__name__}.{_name}")

__all__ = ["PASSES", "AnswerPass", "PassLog", "answer_pass", "ask_first"]
