"""`ablate report`: a spec's records -> its tables and plots, printed and written to a folder.

An experiment spec gives the ablation table (with the paper beside it where the spec maps a
reference table), the per-benchmark changes, the fusion cost table where fusions differ, and
three figures; a search spec gives the lineage, one candidate table per round and the path
plot. A report renders whatever exists: runs that failed or never ran are named, with their
reason, and their rows show dashes.

A report reads records only: the spec's manifest (analysis.report_manifest, written when the spec
was submitted), the run directories or MLflow, and a search's round files. It needs neither
the spec's data nor the training code."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from analysis import lineage, plots
from analysis.records import Records, from_mlflow, from_run_dirs
from analysis.render import FORMATS, SUFFIX, render
from analysis.report_manifest import SpecManifest, manifest_path, read_manifest, spec_name
from analysis.tables import Table, ablation_tables
from core.errors import HarnessError
from core.record_names import default_uri

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


def read_records(manifest: SpecManifest, workdir: Path, source: str = "rundirs",
                 tracking_uri: str | None = None) -> Records:
    if source == "mlflow":
        return from_mlflow(manifest.runs, tracking_uri or default_uri(workdir), manifest.name)
    return from_run_dirs(manifest.runs, workdir)


def _header(manifest: SpecManifest, kind: str) -> list[str]:
    header = [f"{manifest.name}: {manifest.description}" if manifest.description
              else manifest.name, f"{kind} {manifest.spec_file}"]
    if manifest.spec_changed():
        header.append("note: the spec file has changed since it was submitted; this report "
                      "shows the submitted spec (`ablate run` it again to report the new one)")
    return header


def _state_line(records: Records) -> str:
    states = Counter(records.runs["state"])
    words = {"DONE": "finished", "NEW": "not run", "FAILED": "failed",
             "RUNNING": "running", "INTERRUPTED": "interrupted"}
    return (f"{len(records.runs)} runs: " + ", ".join(
        f"{n} {words.get(s, s.lower())}" for s, n in states.most_common()))


def experiment_report(manifest: SpecManifest, workdir: Path, source: str = "rundirs",
                      tracking_uri: str | None = None) -> Report:
    records = read_records(manifest, workdir, source, tracking_uri)
    plan = manifest.layout
    tables = ablation_tables(records, plan, manifest.name)
    header = [*_header(manifest, "spec"), f"records: {records.source}",
              _state_line(records)]
    figures: dict[str, Figure] = {}
    ablation = tables[0]
    if ablation.frame["avg"].notna().any():
        figures["benchmarks"] = plots.benchmark_bars(
            ablation, plan.benchmarks, f"{manifest.name}: score per benchmark")
        cost = plots.accuracy_vs_cost(ablation, f"{manifest.name}: average score against cost")
        if cost is not None:
            figures["accuracy_vs_cost"] = cost
    else:
        header.append("No run has finished, so there is nothing to plot yet.")
    return Report(manifest.name, header, tables, figures, records)


def search_report(manifest: SpecManifest, workdir: Path) -> Report:
    folder = Path(workdir) / "searches" / manifest.name
    rounds = lineage.load_rounds(folder)
    title = f"{manifest.name}"
    header = [*_header(manifest, "search spec"), f"records: {folder}"]
    if not rounds:
        header.append("No round of the search has finished yet: run `ablate search` first "
                      "(a search still running writes each round when it is decided).")
        return Report(manifest.name, header, [lineage.lineage_table(rounds, f"{title}: lineage")])
    tables = [lineage.lineage_table(rounds, f"{title}: lineage"),
              *lineage.round_tables(rounds, title)]
    figures = {"greedy_path": plots.greedy_path(rounds, f"{manifest.name}: greedy expert "
                                                        "addition")}
    return Report(manifest.name, header, tables, figures)


def build_report(manifest: SpecManifest, workdir: Path, source: str = "rundirs",
                 tracking_uri: str | None = None) -> Report:
    """The report of any submitted spec: a search's, or an experiment's."""
    if manifest.kind == "search":
        return search_report(manifest, workdir)
    return experiment_report(manifest, workdir, source, tracking_uri)


def report_of(spec_file: str | Path, workdir: Path, source: str = "rundirs",
              tracking_uri: str | None = None) -> Report:
    """The report of a spec file's records, found by the spec's name (a notebook's entry)."""
    name = spec_name(spec_file)
    manifest = read_manifest(workdir, name)
    if manifest is None:
        raise HarnessError(f"{spec_file}: spec '{name}' has no records in {workdir} (no "
                           f"{manifest_path(workdir, name)}); run `ablate run` (or `ablate "
                           "search`) on it first")
    return build_report(manifest, workdir, source, tracking_uri)
