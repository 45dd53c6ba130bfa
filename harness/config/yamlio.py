"""YAML loading that remembers where each field came from, so validation errors can name the
line a user must fix rather than only the field path.

A spec holds plain values only: every explicit tag (`!!python/...`, `!!str`, `!custom`, on a
scalar, a list or a mapping) is refused with its line before anything is built, and aliases
may repeat at most MAX_ALIAS_VALUES values in all, so a nest of anchors ("billion laughs")
is refused at once instead of expanding for ever."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError


class Located:
    """Plain data from YAML plus a map from field path ("a.b[2].c") to line number. Data
    assembled from several files (a spec's base and its overrides) also maps each path to the
    file it came from, in `files`; paths not in it come from `file`."""

    def __init__(self, data: Any, lines: dict[str, int], file: str,
                 files: dict[str, str] | None = None):
        self.data, self.lines, self.file = data, lines, file
        self.files = files or {}

    def _nearest(self, path: str) -> str:
        # Walk up to the nearest ancestor that has a recorded line (e.g. a missing field).
        while path:
            if path in self.lines:
                return path
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return ""

    def line_of(self, path: str) -> int | None:
        return self.lines.get(self._nearest(path))

    def file_of(self, path: str) -> str:
        return self.files.get(self._nearest(path), self.file)

    def resolve(self, path: str, value: str | Path) -> Path:
        """`value`, a path written at field `path`, made absolute against the folder of the
        file that wrote that field (a spec, or the base it overrides); `~` is expanded."""
        return (Path(self.file_of(path)).parent / Path(value).expanduser()).resolve()

    def subtree(self, prefix: str, data: Any) -> Located:
        """`data` (the value at `prefix`) with this document's lines, relative to `prefix`."""
        def strip(p: str) -> str | None:
            if p == prefix:
                return ""
            for sep in (".", "["):
                if p.startswith(prefix + sep):
                    rest = p[len(prefix):]
                    return rest[1:] if sep == "." else rest
            return None
        lines = {r: v for p, v in self.lines.items() if (r := strip(p)) is not None}
        files = {r: v for p, v in self.files.items() if (r := strip(p)) is not None}
        return Located(data, lines, self.file, files)

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file_of(path), line=self.line_of(path),
                           field=path or None)


# values that aliases may add to a document beyond those written once: far above any spec's
# use of anchors, far below what takes noticeable time to expand
MAX_ALIAS_VALUES = 10_000
# libyaml's parser where installed: fast, and it caps nesting depth (the pure-Python one takes
# quadratic time on deep flow nesting)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _refuse_tags(text: str, file: str) -> None:
    """Any explicit tag, at its line. Tags are read from the parser's events, where a tag the
    user wrote is present and an implicitly resolved one is not."""
    for event in yaml.parse(text, Loader=_LOADER):
        tag = getattr(event, "tag", None)
        if tag is not None:
            raise ConfigError(f"unsupported YAML tag {tag!r}: a spec holds plain values "
                              "(strings, numbers, booleans, lists, mappings); no tag is read, "
                              "let alone run", file=file,
                              line=event.start_mark.line + 1)


def _expanded_size(root: yaml.Node, file: str) -> tuple[int, int]:
    """(values once every alias is expanded, values written), counted without expanding
    (each node's size once); a recursive alias is refused."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children = ([n for pair in node.value for n in pair]
                    if isinstance(node, yaml.MappingNode) else
                    list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            continue
        if id(node) in open_nodes:
            raise ConfigError("a YAML alias refers to a node that contains it (a recursive "
                              "anchor)", file=file, line=node.start_mark.line + 1)
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise ConfigError("a YAML alias refers to a node that contains it (a "
                                  "recursive anchor)", file=file,
                                  line=child.start_mark.line + 1)
            stack.append((child, False))
    return sizes[id(root)], len(sizes)


def _to_plain(node: yaml.Node, path: str, lines: dict[str, int], file: str,
              scalars: yaml.constructor.SafeConstructor) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _to_plain(key_node, path, {}, file, scalars)
            if not isinstance(key, str):
                raise ConfigError(f"field names must be strings, got {key!r}", file=file,
                                  line=key_node.start_mark.line + 1, field=path or None)
            child = f"{path}.{key}" if path else key
            if key in out:
                raise ConfigError("field given twice", file=file,
                                  line=key_node.start_mark.line + 1, field=child)
            out[key] = _to_plain(value_node, child, lines, file, scalars)
            lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_plain(n, f"{path}[{i}]", lines, file, scalars)
                for i, n in enumerate(node.value)]
    if node.tag == "tag:yaml.org,2002:merge":
        raise ConfigError("YAML merge keys (<<) are not supported: write the fields out",
                          file=file, line=node.start_mark.line + 1, field=path or None)
    try:   # an implicitly resolved scalar: str, int, float, bool, null, timestamp
        return scalars.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot read the value: {getattr(exc, 'problem', None) or exc}",
                          file=file, line=node.start_mark.line + 1,
                          field=path or None) from None


def load_yaml(path: str | Path) -> Located:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file not found", file=str(path))
    text = path.read_text()
    try:
        _refuse_tags(text, str(path))
        node = yaml.compose(text, Loader=_LOADER)
    except RecursionError:
        raise ConfigError("malformed YAML: nested too deeply", file=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"malformed YAML: {problem}", file=str(path), line=line) from None
    if node is None:
        raise ConfigError("file is empty", file=str(path))
    expanded, written = _expanded_size(node, str(path))
    if expanded - written > MAX_ALIAS_VALUES:
        raise ConfigError(f"YAML aliases expand {written:,} values into {expanded:,}, more than "
                          f"{MAX_ALIAS_VALUES:,} repeated values (nested anchors, a 'billion "
                          "laughs'?); write the values out or use fewer aliases",
                          file=str(path))
    lines: dict[str, int] = {}
    data = _to_plain(node, "", lines, str(path), yaml.constructor.SafeConstructor())
    return Located(data, lines, str(path))
