"""The report's figures, sized for a paper (a two-column-wide figure is 7 in; fonts 8-9 pt
stay legible when printed at that size), written as PNG and PDF. Figures are built on
matplotlib's object API, without pyplot's global state, so a library call never opens a
window or leaks figures; notebooks display the returned Figure.

- benchmark_bars: each benchmark (and the average) per arm, error bars over seeds;
- greedy_path: the search's objective against the number of experts, the chosen path drawn
  through each round's scattered candidates;
- accuracy_vs_cost: the average against forward GFLOPs and against training throughput."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from analysis.tables import Table

WIDTH_IN = 7.0
STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
         "xtick.labelsize": 7, "ytick.labelsize": 7}


def paper_style(fn):
    """Build the figure under the paper's font sizes (text takes them when it is created)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        import matplotlib
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapped


def _figure(height: float, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(WIDTH_IN, height), layout="constrained")
    return fig, list(np.atleast_1d(fig.subplots(1, ncols)))


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    ax.set_axisbelow(True)


def _labels(table: Table) -> list[str]:
    return [", ".join(map(str, i)) if isinstance(i, tuple) else str(i)
            for i in table.frame.index]


def save(fig: Figure, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=200)
    fig.savefig(paths[1])
    return paths


@paper_style
def benchmark_bars(table: Table, benchmarks: list[str], title: str) -> Figure:
    frame = table.frame
    columns = [*benchmarks, "avg"]
    arms = _labels(table)
    fig, (ax,) = _figure(3.0)
    width = 0.8 / max(1, len(arms))
    colors = _colors(len(arms))
    x = np.arange(len(columns))
    for i, arm in enumerate(arms):
        values = [frame[c].iloc[i] for c in columns]
        errors = [frame[f"{c} sd"].iloc[i] if f"{c} sd" in frame else math.nan
                  for c in columns]
        has_err = any(not math.isnan(e) for e in errors)
        ax.bar(x - 0.4 + width * (i + 0.5), values, width, label=arm, color=colors[i],
               yerr=[0 if math.isnan(e) else e for e in errors] if has_err else None,
               error_kw={"linewidth": 0.6, "capsize": 1.5})
    ax.set_xticks(x, [c.removeprefix("synth-") for c in columns])
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100 if np.nanmax(frame[columns].to_numpy(dtype=float), initial=0) <= 100
                else None)
    ax.set_title(title, loc="left")
    # as many legend columns as fit the width at 7 pt (about 0.06 in per character)
    entry_in = 0.5 + 0.06 * max(len(a) for a in arms)
    ax.legend(ncols=max(1, min(len(arms), int((WIDTH_IN - 0.2) / entry_in))),
              loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    _style(ax)
    return fig


def _colors(n: int) -> list:
    from matplotlib import colormaps
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


@paper_style
def accuracy_vs_cost(table: Table, title: str) -> Figure | None:
    frame = table.frame
    panels = [(c, label) for c, label in (("GFLOPs/sample", "forward GFLOPs per sample"),
                                          ("train samples/s", "training throughput "
                                                              "(samples/s)"))
              if c in frame and frame[c].notna().any()]
    if not panels or frame["avg"].notna().sum() == 0:
        return None
    fig, axes = _figure(3.0, len(panels))
    arms = _labels(table)
    colors = _colors(len(arms))
    for ax, (col, label) in zip(axes, panels):
        for i, arm in enumerate(arms):
            x, y = frame[col].iloc[i], frame["avg"].iloc[i]
            if math.isnan(x) or math.isnan(y):
                continue
            err = frame["avg sd"].iloc[i] if "avg sd" in frame else math.nan
            ax.errorbar(x, y, yerr=None if math.isnan(err) else err, fmt="o", ms=4,
                        color=colors[i], elinewidth=0.6, capsize=1.5)
            ax.annotate(arm, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6.5)
        ax.set_xlabel(label)
        ax.set_ylabel("average score (%)")
        _style(ax)
    fig.suptitle(title, x=0.01, ha="left", fontsize=STYLE["axes.titlesize"])
    return fig


@paper_style
def greedy_path(rounds: list[dict], title: str) -> Figure | None:
    if not rounds:
        return None
    fig, (ax,) = _figure(3.2)
    start = rounds[0]["current"]
    xs, ys = [len(start["experts"])], [start["mean"]]
    errs = [start["std"] if len(start["runs"]) > 1 else 0.0]
    for r in rounds:
        cands = r["candidates"]
        # a round's candidates spread a little around their set size, so none hides another
        offsets = np.linspace(-0.12, 0.12, len(cands)) if len(cands) > 1 else [0.0]
        for c, dx in zip(cands, offsets):
            x, chosen = len(c["experts"]) + dx, c["added"] == r["chosen"]
            err = c["std"] if len(c["runs"]) > 1 else None
            if chosen:
                xs.append(x)
                ys.append(c["mean"])
                errs.append(err or 0.0)
            else:
                ax.errorbar(x, c["mean"], yerr=err, fmt="o", ms=4, color="0.6",
                            elinewidth=0.6, capsize=1.5, zorder=3)
            ax.annotate(f"+{c['added']}", (x, c["mean"]), xytext=(5, -3),
                        textcoords="offset points", fontsize=6.5,
                        color="black" if chosen else "0.4")
    ax.errorbar(xs, ys, yerr=errs if any(errs) else None, fmt="-o", color="tab:blue", ms=5,
                linewidth=1.2, elinewidth=0.6, capsize=1.5, zorder=4, label="chosen path")
    ax.annotate(" + ".join(start["experts"]), (xs[0], ys[0]), xytext=(5, -3),
                textcoords="offset points", fontsize=6.5)
    ax.errorbar([], [], fmt="o", ms=4, color="0.6", label="candidates not added")
    largest = max(len(c["experts"]) for r in rounds for c in r["candidates"])
    ax.set_xticks(range(len(start["experts"]), largest + 1))
    ax.set_xlim(len(start["experts"]) - 0.3, largest + 0.4)
    ax.set_xlabel("number of experts")
    ax.set_ylabel("objective (normalized average, 0-100)")
    ax.set_title(title, loc="left")
    ax.legend(frameon=False, loc="lower right")
    _style(ax)
    return fig
