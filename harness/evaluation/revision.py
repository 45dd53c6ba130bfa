"""Which version of the scoring code computed a benchmark's numbers: a short content hash of
the scorer's source (its module and the scoring modules it draws on) and of the benchmark's
registry record. A run records it beside each headline (scores.json), so a finished run whose
revision differs from the current one is known to have been scored by other code, and can be
scored again from its stored predictions (harness.evaluation.rescore) instead of trusted.

The hash covers source text, not behaviour: an edit that changes only a comment still
changes the revision, which costs one needless re-scoring (seconds, no model), whereas a
hash that missed a real change would leave a wrong number standing."""
from __future__ import annotations

import hashlib
import inspect
import sys
import types
from pathlib import Path
from typing import Any

from core.identity import content_hash, to_plain

# the scorer modules live here (harness.evaluation.scoring); only what is under it counts
SCORING_PACKAGE = "harness.evaluation.scoring"


def _module_of(value: Any) -> str | None:
    """The module a global of a module comes from: itself for a module, the defining module
    for a function or class; None for plain values (their text is in the module that
    defines them, which is followed only if one of its functions or classes is used)."""
    if isinstance(value, types.ModuleType):
        return value.__name__
    if inspect.isfunction(value) or inspect.isclass(value):
        return value.__module__
    func = getattr(value, "func", None)   # functools.partial
    return func.__module__ if inspect.isfunction(func) else None


def scoring_modules(scorer: Any, package: str = SCORING_PACKAGE) -> list[types.ModuleType]:
    """The module defining `scorer` and, transitively, every module under `package` whose
    functions, classes or self it imports, in name order. The package's own __init__ is left
    out: it imports every scorer, so following it would tie each benchmark to all of them."""
    target = getattr(scorer, "func", scorer)   # a partial scores with its function
    start = getattr(target, "__module__", None)
    if start is None or start not in sys.modules:
        raise TypeError(f"scorer {scorer!r} has no module to take its source from")
    seen: dict[str, types.ModuleType] = {}
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        module = seen[name] = sys.modules[name]
        for value in vars(module).values():
            dep = _module_of(value)
            if dep and dep.startswith(package + ".") and dep not in seen and dep in sys.modules:
                todo.append(dep)
    return [seen[n] for n in sorted(seen)]


def source_digest(module: types.ModuleType) -> str:
    path = getattr(module, "__file__", None)
    if not path:
        raise TypeError(f"module {module.__name__} has no source file to hash")
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def scoring_revision(record: Any, scorer: Any, package: str = SCORING_PACKAGE) -> str:
    """The revision of the scoring of a benchmark: its registry `record` (a dataclass) and
    its `scorer`'s sources."""
    return content_hash({"benchmark": to_plain(record),
                         "sources": {m.__name__: source_digest(m)
                                     for m in scoring_modules(scorer, package)}})
