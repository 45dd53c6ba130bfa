"""`ablate report`: a spec's records -> its tables and plots, printed and written to a folder.

An experiment spec gives the ablation table (with the paper beside it where the spec maps a
reference table), the per-benchmark changes, the fusion cost table where fusions differ, and
three figures; a search spec gives the lineage, one candidate table per round and the path
plot. A report renders whatever exists: runs that failed or never ran are named, with their
reason, and their rows show dashes."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from analysis import greedy, plots
from analysis.arms import arm_id
from analysis.records import Records, RunRef, from_mlflow, from_run_dirs
from analysis.render import FORMATS, SUFFIX, render
from analysis.tables import Table, ablation_tables

SOURCES = ("rundirs", "mlflow")


@dataclass
class Report:
    name: str
    header: list[str]
    tables: list[Table]
    figures: dict[str, Figure] = field(default_factory=dict)
    records: Records | None = None

    def text(self, fmt: str = "rich") -> str:
        parts = ["\n".join(self.header)] if fmt != "csv" else []
        for table in self.tables:
            parts.append(render(table, fmt) if fmt != "csv"
                         else f"# {table.title}\n{render(table, fmt)}")
        return "\n\n".join(parts) + "\n"

    def write(self, folder: Path) -> list[Path]:
        """Every table in every format, and every figure as PNG and PDF."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for table in self.tables:
            for fmt in FORMATS:
                path = folder / f"{table.name}.{SUFFIX[fmt]}"
                path.write_text(render(table, fmt))
                written.append(path)
        for stem, fig in self.figures.items():
            written += plots.save(fig, folder / stem)
        if self.records is not None:
            path = folder / "records.csv"
            self.records.runs.to_csv(path, index=False)
            written.append(path)
        return written


def run_refs(spec) -> list[RunRef]:
    axes = spec.report.arm_axes
    return [RunRef(r.key, r.name, r.labels, arm_id(r.labels, axes)) for r in spec.runs]


def read_records(spec, workdir: Path, source: str = "rundirs",
                 tracking_uri: str | None = None) -> Records:
    refs = run_refs(spec)
    if source == "mlflow":
        from harness.tracking.store import default_uri
        return from_mlflow(refs, tracking_uri or default_uri(workdir), spec.name)
    return from_run_dirs(refs, workdir)


def _state_line(records: Records) -> str:
    states = Counter(records.runs["state"])
    words = {"DONE": "finished", "NEW": "not run", "FAILED": "failed",
             "RUNNING": "running", "INTERRUPTED": "interrupted"}
    return (f"{len(records.runs)} runs: " + ", ".join(
        f"{n} {words.get(s, s.lower())}" for s, n in states.most_common()))


def experiment_report(spec, workdir: Path, source: str = "rundirs",
                      tracking_uri: str | None = None) -> Report:
    records = read_records(spec, workdir, source, tracking_uri)
    plan = spec.report
    tables = ablation_tables(records, plan, spec.name)
    header = [f"{spec.name}: {spec.description}" if spec.description else spec.name,
              f"spec {spec.file}", f"records: {records.source}", _state_line(records)]
    figures: dict[str, Figure] = {}
    ablation = tables[0]
    if ablation.frame["avg"].notna().any():
        figures["benchmarks"] = plots.benchmark_bars(
            ablation, plan.benchmarks, f"{spec.name}: score per benchmark")
        cost = plots.accuracy_vs_cost(ablation, f"{spec.name}: average score against cost")
        if cost is not None:
            figures["accuracy_vs_cost"] = cost
    else:
        header.append("No run has finished, so there is nothing to plot yet.")
    return Report(spec.name, header, tables, figures, records)


def search_report(spec, workdir: Path) -> Report:
    folder = Path(workdir) / "searches" / spec.name
    rounds = greedy.load_rounds(folder)
    title = f"{spec.name}"
    header = [f"{spec.name}: {spec.description}" if spec.description else spec.name,
              f"search spec {spec.file}", f"records: {folder}"]
    if not rounds:
        header.append("No round of the search has finished yet: run `ablate search` first "
                      "(a search still running writes each round when it is decided).")
        return Report(spec.name, header, [greedy.lineage_table(rounds, f"{title}: lineage")])
    tables = [greedy.lineage_table(rounds, f"{title}: lineage"),
              *greedy.round_tables(rounds, title)]
    figures = {"greedy_path": plots.greedy_path(rounds, f"{spec.name}: greedy expert "
                                                        "addition")}
    return Report(spec.name, header, tables, figures)


def build_report(path: str | Path, workdir: Path, source: str = "rundirs",
                 tracking_uri: str | None = None) -> Report:
    """The report of any spec file: a search spec's, or an experiment spec's."""
    from harness.search import is_search_spec, load_search_spec
    if is_search_spec(path):
        return search_report(load_search_spec(path), workdir)
    from harness.spec import load_spec
    return experiment_report(load_spec(path), workdir, source, tracking_uri)
