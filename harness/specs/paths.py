"""Override paths: how a spec names one field of a run config.

`stages[sft].lr` and `model.experts[convnext].resolution` select list items by name (a
stage's `name`, an expert's `name` or else its `id`) as well as by position, so a spec reads
like the paper table it reproduces and does not break when a list is reordered. Every path is
resolved against the base to a canonical, index-only form (`stages[1].lr`) that conflicts are
checked on and line numbers are mapped through."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\[\]]+\])*)$")


class PathError(ValueError):
    """An override path that is malformed or selects nothing in the base."""


@dataclass(frozen=True)
class Step:
    key: str | int          # a mapping key, or a list index once resolved
    by_name: bool = False   # a list selector written as a name


def parse(path: str) -> list[Step]:
    if not path or path.strip() != path:
        raise PathError(f"empty or padded path {path!r}")
    steps: list[Step] = []
    for part in path.split("."):
        m = _SEGMENT.match(part)
        if not m:
            raise PathError(f"malformed path {path!r} at {part!r}; expected field names and "
                            "[index] or [name] selectors, e.g. stages[sft].lr")
        steps.append(Step(m.group(1)))
        for sel in re.findall(r"\[([^\[\]]+)\]", m.group(2)):
            if re.fullmatch(r"-?\d+", sel):
                steps.append(Step(int(sel)))
            else:
                steps.append(Step(sel, by_name=True))
    return steps


def _item_name(item: Any) -> str | None:
    if isinstance(item, dict):
        return item.get("name") or item.get("id")
    return None


def canonical(path: str, data: Any) -> str:
    """Resolve name selectors against `data`; the result uses indices only. Mapping keys may
    be absent (optional fields the base leaves at their defaults)."""
    out, node = "", data
    steps = parse(path)
    for step in steps:
        if isinstance(step.key, str) and not step.by_name:
            if node is not None and not isinstance(node, dict):
                raise PathError(f"{out or 'the config'} is not a mapping, so it has no field "
                                f"'{step.key}'")
            out = f"{out}.{step.key}" if out else step.key
            node = node.get(step.key) if isinstance(node, dict) else None
            continue
        if not isinstance(node, list):
            raise PathError(f"{out} is not a list in the base, so [{step.key}] selects nothing")
        if step.by_name:
            names = [_item_name(item) for item in node]
            if step.key not in names:
                raise PathError(f"{out} has no item named '{step.key}'; items: "
                                + ", ".join(str(n) for n in names))
            index = names.index(step.key)
        else:
            index = step.key if step.key >= 0 else len(node) + step.key
            if not 0 <= index < len(node):
                raise PathError(f"{out}[{step.key}] is out of range ({len(node)} items)")
        out, node = f"{out}[{index}]", node[index]
    return out


def overlaps(a: str, b: str) -> bool:
    """True when setting both paths would be ambiguous: the same field, or one inside the
    other."""
    return a == b or b.startswith((a + ".", a + "[")) or a.startswith((b + ".", b + "["))


def assign(data: Any, path: str, value: Any) -> None:
    """Set a canonical path in plain data, creating missing mappings on the way."""
    steps = parse(path)
    node = data
    for step, nxt in zip(steps, steps[1:]):
        if isinstance(step.key, int):
            node = node[step.key]
        else:
            if node.get(step.key) is None:
                node[step.key] = [] if isinstance(nxt.key, int) else {}
            node = node[step.key]
    node[steps[-1].key] = value
