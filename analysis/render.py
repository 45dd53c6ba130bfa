"""One table, five formats: the terminal (rich), Markdown, LaTeX (booktabs), CSV and HTML.
The human formats print the table's text cells with its title and notes; CSV carries the
numbers at full precision, for anyone who wants to compute with them."""
from __future__ import annotations

import html
import io
import shutil
import sys

import pandas as pd

from analysis.tables import Table

FORMATS = ("rich", "markdown", "latex", "csv", "html")
SUFFIX = {"rich": "txt", "markdown": "md", "latex": "tex", "csv": "csv", "html": "html"}


def _header_rows(cells: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Row-label columns then value columns, and each row's text."""
    names = [n or "" for n in cells.index.names]
    rows = []
    for idx, row in cells.iterrows():
        labels = list(idx) if isinstance(idx, tuple) else [idx]
        rows.append([str(x) for x in labels] + [str(v) for v in row.tolist()])
    return names + [str(c) for c in cells.columns], rows


def terminal_width() -> int:
    """The terminal's width when printing to one; wide enough not to wrap when piped."""
    return shutil.get_terminal_size((250, 40)).columns if sys.stdout.isatty() else 250


def _left(table: Table) -> list[bool]:
    """Per column of text: left-aligned when it holds words (an expert set, a fusion id),
    right-aligned when it holds numbers."""
    out = [True] * table.cells.index.nlevels
    for col in table.cells.columns:
        kind = table.frame[col].dtype.kind if col in table.frame else "f"
        out.append(kind in "OSUb")
    return out


def to_rich(table: Table, width: int | None = None) -> str:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table as RichTable
    header, rows = _header_rows(table.cells)
    left = _left(table)
    out = RichTable(title=escape(table.title), title_justify="left", caption_justify="left",
                    caption=escape("\n".join(table.notes)) or None, header_style="bold")
    for i, name in enumerate(header):
        out.add_column(escape(name), justify="left" if left[i] else "right",
                       no_wrap=i < table.cells.index.nlevels)
    for row in rows:
        out.add_row(*(escape(c) for c in row))
    buffer = io.StringIO()
    Console(file=buffer, width=width or terminal_width(), force_terminal=False,
            color_system=None).print(out)
    return buffer.getvalue()


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: Table) -> str:
    header, rows = _header_rows(table.cells)
    lines = [f"### {table.title}", "",
             "| " + " | ".join(_md(h) for h in header) + " |",
             "|" + "|".join(":---" if left else "---:" for left in _left(table)) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    if table.notes:
        lines += [""] + [f"- {_md(n)}" for n in table.notes]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", "≈": r"$\approx$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); notes go under it in small type."""
    header, rows = _header_rows(table.cells)
    spec = "".join("l" if left else "r" for left in _left(table))
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(table.title)}}}",
             rf"\label{{tab:{table.name}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\par\smallskip{\footnotesize " + " ".join(
            latex_escape(n) for n in table.notes) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    body = table.cells.to_html(escape=True, border=0, classes="ablate-table")
    notes = "".join(f"<p class=\"note\">{html.escape(n)}</p>\n" for n in table.notes)
    return f"<h3>{html.escape(table.title)}</h3>\n{body}\n{notes}"


def to_csv(table: Table) -> str:
    return table.frame.to_csv()


RENDERERS = {"rich": to_rich, "markdown": to_markdown, "latex": to_latex, "csv": to_csv,
             "html": to_html}


def render(table: Table, fmt: str) -> str:
    if fmt not in RENDERERS:
        raise ValueError(f"unknown format '{fmt}'; formats: {', '.join(FORMATS)}")
    return RENDERERS[fmt](table)
