"""Run identity: a config's hashed form and its content hash. A run, stage or dataset key is
the hash of what determines its result, so equal content is reused and any change makes a new
key. Options added after results exist carry ADDED_OPTION: at their default they are left out
of the hashed form, so adding an option keeps every earlier key valid. An option whose default
changed after results exist carries `earlier_default(value)`: left out when it equals the
value earlier keys were made with (so those runs keep their keys) and written otherwise, the
new default included (so its runs get new keys instead of reusing the old ones)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

ADDED_OPTION = {"omit_if_default": True}


def earlier_default(value: Any) -> dict:
    """Field metadata of an option whose default was `value` when earlier keys were made."""
    return {"omit_if": value}


def _omitted(obj: Any, f: dataclasses.Field) -> bool:
    if "omit_if" in f.metadata:
        return getattr(obj, f.name) == f.metadata["omit_if"]
    return (f.metadata.get("omit_if_default", False)
            and getattr(obj, f.name) == (f.default if f.default is not dataclasses.MISSING
                                         else f.default_factory()))


def written(obj: Any) -> Any:
    """to_plain with every `earlier_default` option spelled out: the form a config is written
    in, so reading it back gives the same value whatever the default is by then."""
    plain = to_plain(obj)
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if "omit_if" in f.metadata:
                plain[f.name] = value
            elif f.name in plain and dataclasses.is_dataclass(value):
                plain[f.name] = written(value)
    return plain


def to_plain(obj: Any) -> Any:
    """Dataclass tree -> plain dicts/lists, for hashing and writing the resolved config."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not _omitted(obj, f)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def content_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
