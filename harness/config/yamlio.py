"""YAML loading that remembers where each field came from, so validation errors can name the
line a user must fix rather than only the field path."""
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


def _to_plain(node: yaml.Node, path: str, lines: dict[str, int], file: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            if not isinstance(key, str):
                raise ConfigError(f"field names must be strings, got {key!r}", file=file,
                                  line=key_node.start_mark.line + 1, field=path or None)
            child = f"{path}.{key}" if path else key
            if key in out:
                raise ConfigError("field given twice", file=file,
                                  line=key_node.start_mark.line + 1, field=child)
            out[key] = _to_plain(value_node, child, lines, file)
            lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_plain(n, f"{path}[{i}]", lines, file) for i, n in enumerate(node.value)]
    try:
        return yaml.safe_load(yaml.serialize(node))
    except yaml.YAMLError as exc:   # a tag the safe loader refuses (!!python/...): never run
        raise ConfigError(f"unsupported YAML tag {node.tag!r}: a spec holds plain values "
                          f"(strings, numbers, booleans, lists, mappings); "
                          f"{getattr(exc, 'problem', None) or exc}", file=file,
                          line=node.start_mark.line + 1, field=path or None) from None


def load_yaml(path: str | Path) -> Located:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file not found", file=str(path))
    text = path.read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"malformed YAML: {problem}", file=str(path), line=line) from None
    if node is None:
        raise ConfigError("file is empty", file=str(path))
    lines: dict[str, int] = {}
    data = _to_plain(node, "", lines, str(path))
    return Located(data, lines, str(path))
