"""Ranges of config fields, declared where the field is (`ranged(default, ge=1)`), so the one
binder that reads YAML into these dataclasses (harness.config.schema) checks them with the field's
file, line and path; nothing else re-checks a range. Likewise a field that is a feature grid's
side says so (`grid_side`), so the rehearsal scales it with the experts' grids without knowing
any option by name. Metadata only: no harness import."""
from __future__ import annotations

import dataclasses
import operator
import re
from typing import Any

from core.contained import SAFE_NAME, name_problem

_CHECKS = (("gt", operator.gt, ">"), ("ge", operator.ge, ">="), ("lt", operator.lt, "<"),
           ("le", operator.le, "<="))


def ranged(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None, min_items: int | None = None,
           pattern: str | None = None, metadata: dict | None = None) -> Any:
    """A dataclass field with bounds: numbers (gt/ge/lt/le; for a dict or list of numbers,
    every value), sizes (min_items, for lists and dicts) and the form of a string (pattern, a
    regular expression the whole string must match: names that become paths,
    core.contained.SAFE_NAME). None stays allowed where the type is optional."""
    bounds = {k: v for k, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le),
                                ("min_items", min_items), ("pattern", pattern))
              if v is not None}
    kwargs: dict[str, Any] = {"metadata": {**(metadata or {}), "range": bounds}}
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    if default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = default_factory
    return dataclasses.field(**kwargs)


GRID_SIDE = "grid_side"


def grid_side(default: Any = dataclasses.MISSING, **bounds: Any) -> Any:
    """A `ranged` field that is the side of a feature grid, in cells (a fusion's common grid,
    its output grid): `ablate rehearse` shrinks it with the spec's other grids, keeping their
    order and divisibility (harness.rehearsal.geometry)."""
    return ranged(default, metadata={GRID_SIDE: True}, **bounds)


def grid_sides(options: Any) -> dict[str, int]:
    """The grid sides `options` (a config dataclass) sets: field name -> side, for each field
    marked `grid_side` that holds a positive side (None: not set)."""
    if not dataclasses.is_dataclass(options):
        return {}
    return {f.name: value for f in dataclasses.fields(options)
            if f.metadata.get(GRID_SIDE)
            and isinstance(value := getattr(options, f.name), int) and value > 0}


def range_error(value: Any, bounds: dict) -> str | None:
    """Why `value` breaks `bounds`, or None."""
    if value is None or not bounds:
        return None
    if "pattern" in bounds and isinstance(value, str) \
            and not re.fullmatch(bounds["pattern"], value):
        if bounds["pattern"] == SAFE_NAME:   # said in words, with the pattern
            return name_problem(value)
        return f"{value!r} does not match the allowed pattern {bounds['pattern']}"
    if "min_items" in bounds and isinstance(value, (list, tuple, dict)) \
            and len(value) < bounds["min_items"]:
        n = bounds["min_items"]
        return f"needs at least {n} item{'s' if n > 1 else ''}, got {len(value)}"
    numbers = (list(value.values()) if isinstance(value, dict) else
               list(value) if isinstance(value, (list, tuple)) else [value])
    for v in numbers:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        for key, holds, word in _CHECKS:
            if key in bounds and not holds(v, bounds[key]):
                return f"must be {word} {bounds[key]:g}, got {v:g}"
    return None
