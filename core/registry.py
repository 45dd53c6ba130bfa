"""Name -> constructor registries, so every model part is built from an id in a config and an
unknown id fails with the close matches instead of falling through an if/elif chain. A choice
registry also knows each entry's options type, so a config naming an entry by id can be read
with that entry's typed options beside the id."""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownIdError(KeyError):
    """An id that no registry entry carries; the message lists the close matches."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        super().__init__(f"unknown {kind} id '{name}'.{hint} Known: {', '.join(sorted(known))}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    builder: T
    summary: str


class Registry(Generic[T]):
    """A named table of builders. `register` is a decorator; `get` raises UnknownIdError."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, summary: str = "") -> Callable[[T], T]:
        def decorate(builder: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} id '{name}' registered twice")
            doc = summary or (getattr(builder, "__doc__", None) or "").strip().splitlines()[0:1]
            text = doc if isinstance(doc, str) else (doc[0] if doc else "")
            self._entries[name] = Entry(name, builder, text)
            return builder

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[name].builder
        except KeyError:
            raise UnknownIdError(self.kind, name, list(self._entries)) from None

    def summary(self, name: str) -> str:
        """The one-line description `name` was registered with."""
        self.get(name)   # an unknown id fails here, with the close matches
        return self._entries[name].summary

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))


class ChoiceRegistry(Registry[T]):
    """A registry whose entries each take a typed options dataclass, found by `options_of`
    (e.g. a fusion class's `Options`). A config type that declares
    `choices: ClassVar[ChoiceRegistry]` and the fields `id` and `options` is an id-keyed
    union: written as `{id: ..., <option fields>}`, its id picks the type the other fields
    are read into (the binder, harness.config.schema, does this for any such type)."""

    def __init__(self, kind: str, options_of: Callable[[T], type]):
        super().__init__(kind)
        self._options_of = options_of

    def options_type(self, name: str) -> type:
        """The options dataclass of entry `name`; an unknown id raises UnknownIdError."""
        return self._options_of(self.get(name))
