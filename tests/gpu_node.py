"""Run a script as on the lent GPU machine, which has torch, timm, transformers, accelerate and
peft but not open_clip, mlflow, optuna or submitit: importing any of those fails.

    python -m tests.gpu_node SCRIPT [ARGS...]
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import runpy
import sys

ABSENT = {"open_clip", "mlflow", "optuna", "submitit"}


class _Absent(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ModuleNotFoundError(f"No module named {module.__name__!r} (not on the GPU node)")


class _HideAbsent(importlib.abc.MetaPathFinder):
    """Found (so libraries probing for them see them installed), but failing on import."""

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ABSENT:
            return importlib.machinery.ModuleSpec(name, _Absent())
        return None


if __name__ == "__main__":
    sys.meta_path.insert(0, _HideAbsent())
    script, *rest = sys.argv[1:]
    sys.argv = [script, *rest]
    runpy.run_path(script, run_name="__main__")
