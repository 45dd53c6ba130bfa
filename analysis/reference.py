"""Published tables, read so a report can print the paper's numbers beside ours.

A reference table is a CSV under experiments/reference/ whose first line states its source:

    # source: MoVA (arXiv 2404.13046), Table 8.
    K,GQA,ChartQA
    dynamic,64.8,68.3

An optional `# toolkit: ...` comment line before the header says which evaluation produced
the paper's numbers (LLaVA-1.5's scripts, lmms-eval, an official server), as the source
states it; reports print it beside the paper's numbers, since a number scored by other code
is not strictly comparable to ours. Files that do not know leave it out.

A source line that says "approximate" makes every number approximate (read off a figure, or
from a third-party summary); a single cell can say so with a leading "~". Approximate values
are always printed with "≈" so nobody mistakes them for the paper's exact figures.

A spec maps its arms to the table's rows (by the value in the key column, or by a mapping of
column -> value where one column is not enough) and, optionally, paper columns to our
benchmarks, so those are printed side by side."""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError

APPROX_MARK = "~"


@dataclass(frozen=True)
class Cell:
    value: float
    approximate: bool


@dataclass(frozen=True)
class ReferenceTable:
    path: str
    source: str
    approximate: bool                 # the whole table
    columns: list[str]
    rows: list[dict[str, str]]
    toolkit: str = ""                 # the evaluation behind the paper's numbers; "": unstated

    @classmethod
    def load(cls, path: str | Path) -> ReferenceTable:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"reference table: cannot read it ({exc.strerror})",
                              file=str(path)) from None
        lines = text.splitlines()
        if not lines or not lines[0].lower().startswith("# source:"):
            raise ConfigError("a reference table must state its source on its first line, as "
                              "'# source: paper, table'", file=str(path), line=1)
        source = lines[0].split(":", 1)[1].strip()
        toolkit = _toolkit(lines, path)
        body = [line for line in lines[1:] if not line.startswith("#")]
        reader = csv.reader(io.StringIO("\n".join(body)))
        header = next(reader, None)
        if not header or len(set(header)) != len(header) or any(not h for h in header):
            raise ConfigError("a reference table needs a header of distinct, non-empty column "
                              "names after its source line", file=str(path), line=2)
        rows = []
        for i, values in enumerate(reader):
            if not values:
                continue
            if len(values) != len(header):
                raise ConfigError(f"row {i + 1} has {len(values)} cells for {len(header)} "
                                  "columns", file=str(path))
            rows.append(dict(zip(header, values)))
        return cls(str(path), source, "approximate" in source.lower(), header, rows, toolkit)

    def cell(self, row: int, column: str) -> Cell | None:
        """A number, or None where the cell is empty or not a number (a label)."""
        text = self.rows[row][column].strip()
        approx = text.startswith(APPROX_MARK)
        try:
            value = float(text.removeprefix(APPROX_MARK))
        except ValueError:
            return None
        if math.isnan(value):
            return None
        return Cell(value, approx or self.approximate)

    def numeric_columns(self) -> list[str]:
        return [c for c in self.columns
                if any(self.cell(i, c) is not None for i in range(len(self.rows)))
                and all(self.cell(i, c) is not None or not self.rows[i][c].strip()
                        for i in range(len(self.rows)))]

    def find(self, selector: dict[str, str]) -> list[int]:
        return [i for i, row in enumerate(self.rows)
                if all(row.get(k, "").strip() == str(v).strip() for k, v in selector.items())]


def _toolkit(lines: list[str], path: Path) -> str:
    """The `# toolkit:` line's text, "" without one; two of them, or an empty one, is an
    error."""
    found = [(n, line.split(":", 1)[1].strip()) for n, line in enumerate(lines[1:], 2)
             if line.lower().startswith("# toolkit:")]
    if len(found) > 1:
        raise ConfigError("a reference table states its toolkit once; a second '# toolkit:' "
                          "line", file=str(path), line=found[1][0])
    if found and not found[0][1]:
        raise ConfigError("'# toolkit:' is empty: name the evaluation behind the paper's "
                          "numbers, or leave the line out", file=str(path), line=found[0][0])
    return found[0][1] if found else ""


@dataclass(frozen=True)
class ReferenceMap:
    """A spec's reference, resolved: which paper row each arm is, which columns to show."""
    table: ReferenceTable
    title: str
    rows: dict[str, int]                  # arm id -> row index in the table
    columns: list[tuple[str, str | None]]  # (paper column, our benchmark or None)

    def value(self, arm: str, column: str) -> Cell | None:
        row = self.rows.get(arm)
        return None if row is None else self.table.cell(row, column)
