"""Names that become paths, and paths that must stay inside the work directory.

A spec's `name` names its manifest (WORKDIR/specs/NAME.json) and a search's folder, a stage's
`name` its stage folder, an expert's name its per-expert stage folder, an MMBench `index` the
file its decoded image is written to. Work directories on clusters are shared scratch: a name
such as `../../x` or `/etc/x` must never move a write outside the work directory. So every
such name is checked against one safe character set where it is read (the schema declares it
with `core.fields.ranged(pattern=SAFE_NAME)`), and every path written under the work
directory is checked again by `inside` before it is written: the second check catches a
name no schema saw (a manifest read back, a hand-edited record)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from core.errors import HarnessError

# letters, digits, `_` and `-`, starting with a letter or digit: no separator, no `.` (so
# no `..`, and an expert name stays one segment of `experts.NAME` module groups), no `+`
# (a search's arm label joins expert names with it), no space; at most 100 characters
SAFE_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}"
SAFE_NAME_RULE = ("letters, digits, '_' and '-', starting with a letter or digit, at most "
                  f"100 characters (pattern {SAFE_NAME})")
_SAFE = re.compile(SAFE_NAME)


class OutsideWorkdir(HarnessError):
    """A path that would be written outside the folder it belongs to."""


def name_problem(name: object) -> str | None:
    """Why `name` cannot become a file or folder name, or None."""
    if isinstance(name, str) and _SAFE.fullmatch(name):
        return None
    return f"{name!r} cannot name a file or folder: use {SAFE_NAME_RULE}"


def inside(root: str | Path, path: str | Path) -> Path:
    """`path` (absolute, or relative to `root`), normalized, after checking that it lies
    inside `root`; raises OutsideWorkdir otherwise. The check is on the path as written
    (`..` removed), not through symbolic links: a work directory whose `runs/` or `data/` is
    a link to another disk is a normal cluster setup, and a link inside it was put there by
    whoever owns it; what is refused is a name that climbs out."""
    roots = {Path(os.path.abspath(root)), Path(root).resolve()}
    full = Path(os.path.normpath(os.path.join(os.path.abspath(root), path)))
    if not any(full == r or r in full.parents for r in roots):
        raise OutsideWorkdir(f"refusing to write {full}: it is outside {Path(root).resolve()} "
                             f"(a name that became a path must use {SAFE_NAME_RULE})")
    return full
