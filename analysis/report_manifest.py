"""What a report needs to know of a spec, written beside the records when the spec is
submitted, so a report (or a notebook) reads records only: no spec loading, no training data,
no torch. A spec's manifest holds its runs (key, name, labels, arm), its table layout (arms,
baseline, benchmark columns) and the published table printed beside it, copied in whole; a
search's holds its name and where its rounds are.

    WORKDIR/specs/NAME.json

`spec_sha256` (and `reference_sha256`, the published table's) are the files' hashes at
submission, so a reader can tell that they have changed since (the manifest then still
describes the records that exist)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from analysis.arms import TableLayout
from analysis.records import RunRef
from analysis.reference import ReferenceMap, ReferenceTable
from core.contained import inside, name_problem
from core.errors import HarnessError
from core.files import atomic_write_text

FORMAT = 1


@dataclass(frozen=True)
class SpecManifest:
    kind: Literal["experiment", "search"]
    name: str
    description: str
    spec_file: str
    spec_sha256: str
    runs: list[RunRef] = field(default_factory=list)
    layout: TableLayout | None = None
    reference_sha256: str = ""      # the published table's file, copied into `layout`

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": self.kind, "name": self.name,
                "description": self.description, "spec_file": self.spec_file,
                "spec_sha256": self.spec_sha256, "runs": [asdict(r) for r in self.runs],
                "layout": _layout_dict(self.layout), "reference_sha256": self.reference_sha256}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpecManifest:
        return cls(data["kind"], data["name"], data["description"], data["spec_file"],
                   data["spec_sha256"], [RunRef(**r) for r in data["runs"]],
                   _layout_of(data["layout"]), data.get("reference_sha256", ""))

    def spec_changed(self) -> bool:
        """The spec file, or the published table it maps, differs from the one submitted (or
        is gone)."""
        reference = self.layout.reference if self.layout is not None else None
        return (file_sha256(Path(self.spec_file)) != self.spec_sha256
                or (reference is not None
                    and file_sha256(Path(reference.table.path)) != self.reference_sha256))


def file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def manifest_path(workdir: Path, name: str) -> Path:
    """WORKDIR/specs/NAME.json; a name that would climb out of specs/ is refused."""
    return inside(Path(workdir) / "specs", f"{name}.json")


def write_manifest(manifest: SpecManifest, workdir: Path) -> Path:
    path = manifest_path(workdir, manifest.name)
    atomic_write_text(path, json.dumps(manifest.to_dict(), indent=1))
    return path


def read_manifest(workdir: Path, name: str) -> SpecManifest | None:
    path = manifest_path(workdir, name)
    if not path.is_file():
        return None
    try:
        return SpecManifest.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise HarnessError(f"{path}: not a spec manifest this version reads ({exc}); run "
                           "`ablate run SPEC` again to rewrite it") from None


def spec_name(path: str | Path) -> str:
    """A spec file's `name`, read without loading the spec (no validation, no data)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise HarnessError(f"{path}: cannot read the spec ({exc})") from None
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise HarnessError(f"{path}: the spec has no `name`")
    problem = name_problem(name)   # it names the manifest read (and the report's folder)
    if problem:
        raise HarnessError(f"{path}: name: {problem}")
    return name


def _layout_dict(layout: TableLayout | None) -> dict | None:
    if layout is None:
        return None
    out = {"arm_axes": layout.arm_axes, "arms": layout.arms, "baseline": layout.baseline,
           "benchmarks": layout.benchmarks, "reference": None}
    ref: ReferenceMap | None = layout.reference
    if ref is not None:
        out["reference"] = {"table": asdict(ref.table), "title": ref.title, "rows": ref.rows,
                            "columns": [list(c) for c in ref.columns]}
    return out


def _layout_of(data: dict | None) -> TableLayout | None:
    if data is None:
        return None
    ref = data["reference"]
    reference = None if ref is None else ReferenceMap(
        ReferenceTable(**ref["table"]), ref["title"], dict(ref["rows"]),
        [(paper, ours) for paper, ours in ref["columns"]])
    return TableLayout(list(data["arm_axes"]), list(data["arms"]), data["baseline"],
                       list(data["benchmarks"]), reference)
