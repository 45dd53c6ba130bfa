"""`ablate report`: a spec's tables and plots from its records alone (no data, no model
libraries), its finished runs scored again first where the scoring code changed."""
from __future__ import annotations

import argparse
from pathlib import Path

from core.contained import inside
from core.errors import HarnessError
from harness.cli.arguments import add_spec
from harness.cli.command import Command


def report_arguments(p: argparse.ArgumentParser) -> None:
    from analysis.render import FORMATS
    from analysis.report import SOURCES
    add_spec(p)
    p.add_argument("--format", default="rich", choices=FORMATS,
                   help="what to print (default rich, the terminal); --out gets every format")
    p.add_argument("--out", help="folder for the tables and figures (default "
                                 "WORKDIR/reports/SPEC_NAME)")
    p.add_argument("--source", default="rundirs", choices=SOURCES,
                   help="read the run directories (default, the source of truth) or MLflow")
    p.add_argument("--tracking-uri", help="with --source mlflow: the store (default: the "
                                          "sqlite file WORKDIR/mlflow.db)")


def report_manifest(path: str | Path, workdir: Path):
    """The spec's manifest as its last submission wrote it (reading it needs neither the data
    nor the training code). Where the spec file has changed since, or was never submitted,
    the spec is loaded as it is now; if that fails (its data is gone, say), the submitted
    manifest still reports the records that exist."""
    from analysis.report_manifest import read_manifest, spec_name
    submitted = read_manifest(workdir, spec_name(path))
    if submitted is not None and not submitted.spec_changed():
        return submitted
    try:
        return _current_manifest(path)
    except HarnessError:
        if submitted is None:
            raise
        return submitted


def _current_manifest(path: str | Path):
    from harness.search import is_search_spec, load_search_spec
    from harness.search.search_spec import search_manifest
    if is_search_spec(path):
        return search_manifest(load_search_spec(path))
    from harness.specs import load_spec
    from harness.specs.experiment_manifest import experiment_manifest
    return experiment_manifest(load_spec(path))


def rescore_for_report(manifest, workdir: Path, source: str) -> list[str]:
    """An experiment's finished runs whose scoring code has changed since they were scored,
    scored again from their stored predictions before the report reads them; the report's
    header lines saying which, with which protocol. Reading the revisions loads no model
    code; only a re-scoring does."""
    if manifest.kind == "search":   # its rounds were decided on the scores of their time
        return []
    from harness.scheduler.backfill import rescore_done
    done, problems = rescore_done([workdir / "runs" / r.key for r in manifest.runs])
    lines = [f"not scored again: {p}" for p in problems]
    if not done:
        return lines
    lines.append(f"scored again from their stored predictions, nothing generated, since the "
                 f"scoring code changed: {len({item.run for item in done})} runs")
    lines += ["  " + line for item in done for line in item.lines()]
    if source == "mlflow":
        lines.append("  MLflow still holds the earlier numbers until `ablate run` mirrors "
                     "these runs again")
    return lines


def write_report(args) -> int:
    from analysis.report import build_report
    workdir = Path(args.workdir)
    manifest = report_manifest(args.spec, workdir)
    rescored = rescore_for_report(manifest, workdir, args.source)
    report = build_report(manifest, workdir, args.source, args.tracking_uri)
    report.header += rescored
    # --out is the user's choice; the default folder is named by the spec, so kept inside
    out = Path(args.out) if args.out else inside(workdir / "reports", report.name)
    written = report.write(out)
    print(report.text(args.format), end="")
    figures = sorted({p.stem for p in written if p.suffix == ".png"})
    print(f"\nwritten to {out.resolve()}: {len(report.tables)} tables "
          f"(.txt .md .tex .csv .html)" + (f", figures {', '.join(figures)} (.png .pdf)"
                                            if figures else "")
          + (", records.csv" if report.records is not None else ""))
    return 0


REPORT = Command("report", "a spec's paper-layout tables and plots from its records (a search "
                           "spec: the lineage and the rounds)", report_arguments, write_report,
                 loads_models=False)
