"""Binds plain YAML data onto typed dataclasses, field by field, so that every unknown field,
missing field, wrong type, out-of-range choice or value outside the field's declared range
(core.fields.ranged) is reported with its file, line and path. An id-keyed union (a type
declaring `choices`, a core.registry.ChoiceRegistry) is read by its id first: the registry
gives the options type the other fields are bound onto."""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union

from core.fields import range_error
from core.registry import ChoiceRegistry, UnknownIdError
from harness.config.yamlio import Located


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return True, (args[0] if len(args) == 1 else Union[tuple(args)])
    return False, tp


def not_among(value: Any, allowed: typing.Sequence[Any], src: Located, path: str) -> Exception:
    """The error for a choice outside `allowed`, naming the file, line, field and each allowed
    value: the binder's for a Literal field, and validation's for a choice held in a registry."""
    return src.error(path, f"got {value!r}; allowed values: " + ", ".join(repr(a) for a in allowed))


def bind(tp: Any, value: Any, src: Located, path: str) -> Any:
    """Convert `value` (from `src` at `path`) to type `tp`, raising ConfigError on mismatch."""
    if tp is Any:
        return value
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise src.error(path, f"must not be empty; expected {_type_name(inner)}")
    tp = inner
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(getattr(tp, "choices", None), ChoiceRegistry):
            return bind_choice(tp, value, src, path)
        return bind_dataclass(tp, value, src, path)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise not_among(value, allowed, src, path)
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise src.error(path, f"expected a list, got {type(value).__name__} {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [bind(item_tp, v, src, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise src.error(path, f"expected a mapping, got {type(value).__name__} {value!r}")
        _, val_tp = typing.get_args(tp) or (str, Any)
        return {k: bind(val_tp, v, src, f"{path}.{k}") for k, v in value.items()}
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return bind(option, value, src, path)
            except Exception:
                continue
        raise src.error(path, f"got {value!r}; expected " +
                        " or ".join(_type_name(a) for a in typing.get_args(tp)))
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML 1.1 reads "1e-3" as a string; accept numeric strings for floats.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise src.error(path, f"expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise src.error(path, f"expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise src.error(path, f"expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise src.error(path, f"expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"schema type {tp!r} at {path} is not supported")


def bind_choice(cls: type, value: Any, src: Located, path: str) -> Any:
    """`{id: ..., <option fields>}` -> cls(id, options): the id, checked against cls.choices,
    picks the options dataclass; the other fields are bound onto it at `path` itself, where
    they were written."""
    registry: ChoiceRegistry = cls.choices
    if not isinstance(value, dict) or "id" not in value:
        raise src.error(path, "expected a mapping with an `id`; allowed ids: "
                              + ", ".join(registry.names()))
    try:
        options_type = registry.options_type(value["id"])
    except UnknownIdError as exc:
        raise src.error(f"{path}.id", str(exc)) from None
    rest = {k: v for k, v in value.items() if k != "id"}
    return cls(id=value["id"], options=bind_dataclass(options_type, rest, src, path))


def bind_dataclass(cls: type, value: Any, src: Located, path: str) -> Any:
    if not isinstance(value, dict):
        raise src.error(path, f"expected a mapping of {cls.__name__} fields, got {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in value:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise src.error(f"{path}.{key}" if path else key,
                            f"unknown field{hint}; allowed fields: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        child = f"{path}.{name}" if path else name
        if name in value:
            kwargs[name] = bind(hints[name], value[name], src, child)
            problem = range_error(kwargs[name], f.metadata.get("range", {}))
            if problem:
                raise src.error(child, problem)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise src.error(child, "required field is missing")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # __post_init__ checks report a field-less message
        raise src.error(path, str(exc)) from None


