"""A loaded experiment spec -> its manifest (analysis.report_manifest), written when the spec is
submitted so that its report needs only the records. (A search writes its own:
harness.search.search_spec.search_manifest.)"""
from __future__ import annotations

from pathlib import Path

from analysis.arms import arm_id
from analysis.records import RunRef
from analysis.report_manifest import SpecManifest, file_sha256, write_manifest
from harness.specs.expand import ExperimentSpec


def experiment_manifest(spec: ExperimentSpec) -> SpecManifest:
    axes = spec.report.arm_axes
    runs = [RunRef(r.key, r.name, r.labels, arm_id(r.labels, axes)) for r in spec.runs]
    reference = spec.report.reference
    return SpecManifest("experiment", spec.name, spec.description, spec.file,
                        file_sha256(Path(spec.file)), runs, spec.report,
                        file_sha256(Path(reference.table.path)) if reference else "")


def record_spec(spec: ExperimentSpec, workdir: Path) -> Path:
    """Write the spec's manifest under WORKDIR/specs/ (replacing the previous submission's)."""
    return write_manifest(experiment_manifest(spec), workdir)
