"""An experiment spec: a base run plus axes, expanded into fully resolved run configs.

    name: two_experts_grid
    base: two_experts.yaml          # a run config file, or the run config inline
    set: {seed: 1}                  # optional: overrides of the base shared by every run
    axes:
      fusion:                       # one field, labelled values
        path: model.fusion
        values: {concat: {id: channel_concat, grid: 8}, append: {id: sequence_append}}
      sft_lr: {path: "stages[sft].lr", values: [1.0e-3, 3.0e-4]}
      experts:                      # no path: each value is a set of overrides
        values:
          frozen: {"model.experts[clip-vit].freeze": true, "model.experts[convnext].freeze": true}
          tuned: {"model.experts[clip-vit].freeze": false, "model.experts[convnext].freeze": false}
    zip: [[a, b]]                   # axes that vary together instead of as a product
    exclude: [{fusion: append, sft_lr: 3.0e-4}]
    variants:                       # named rows of a paper table, each crossed with the axes
      - {name: paper, set: {seed: 1}}
    report: {baseline: ...}         # how `ablate report` lays out the table (spec/report.py)

Runs are the product of the variants (or the base alone) and the axes, minus exclusions.
Every run is validated in full (architecture included) before any is returned; an error
names the spec file (or the base file, for a field the spec did not touch), line and field."""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.arms import TableLayout
from core.contained import SAFE_NAME
from core.errors import ConfigError
from core.fields import ranged
from harness.config.run_config import RunConfig
from harness.config.schema import bind_dataclass
from harness.config.yamlio import Located, load_yaml
from harness.specs import paths
from harness.specs.lock import apply_lock, read_lock
from harness.specs.report_section import ReportSection, resolve_report
from harness.specs.run_file import parse_run_config


@dataclass(frozen=True)
class AxisSpec:
    values: Any
    path: str | None = None


@dataclass(frozen=True)
class VariantSpec:
    name: str
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpecFile:
    name: str = ranged(pattern=SAFE_NAME)   # names WORKDIR/specs/NAME.json
    base: Any
    description: str = ""
    axes: dict[str, AxisSpec] = field(default_factory=dict)
    zip: list[list[str]] = field(default_factory=list)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    variants: list[VariantSpec] = field(default_factory=list)
    report: ReportSection = field(default_factory=ReportSection)
    slurm: str | None = None      # the Slurm profile its jobs need, relative to the spec file
    set: dict[str, Any] = field(default_factory=dict)   # base overrides shared by every run
    # a grid larger than this is refused before it is expanded (each run is validated in
    # full, so 10 axes of 10 values would not finish); raise it to allow more
    max_runs: int = ranged(1000, ge=1, metadata={"omit_if_default": True})


@dataclass(frozen=True)
class Override:
    """One field a run sets, and where in the spec it was written."""
    path: str          # as written
    value: Any
    at: str            # the value's field path in the spec file
    source: str        # "axis 'fusion'" / "variant 'paper'", for conflict messages


@dataclass(frozen=True)
class AxisValue:
    label: str
    overrides: tuple[Override, ...]


@dataclass(frozen=True)
class PlannedRun:
    name: str
    labels: dict[str, str]     # axis (and "variant") -> value label
    config: RunConfig
    extra: dict[str, Any] = field(default_factory=dict)   # a search's tuned fields, exactly

    @property
    def key(self) -> str:
        return self.config.key


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    file: str
    description: str
    axes: list[str]            # label columns, in display order
    runs: list[PlannedRun]
    report: TableLayout | None = None   # arms, baseline, benchmarks, the paper's table
    slurm_profile: str | None = None    # absolute path of the spec's Slurm profile


def _label(value: Any) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return str(value)
    return None


def _axis_values(name: str, axis: AxisSpec, src: Located) -> list[AxisValue]:
    at = f"axes.{name}.values"
    vals = axis.values
    if isinstance(vals, list):
        labelled = []
        for i, v in enumerate(vals):
            label = _label(v)
            if label is None:
                raise src.error(f"{at}[{i}]", "values that are mappings or lists need labels: "
                                              "write `values` as a mapping label -> value")
            labelled.append((label, v, f"{at}[{i}]"))
    elif isinstance(vals, dict):
        labelled = [(str(k), v, f"{at}.{k}") for k, v in vals.items()]
    else:
        raise src.error(at, "expected a list of values or a mapping label -> value")
    if not labelled:
        raise src.error(at, "an axis needs at least one value")
    labels = [lab for lab, _, _ in labelled]
    for lab in labels:
        if labels.count(lab) > 1:
            raise src.error(at, f"label '{lab}' is used twice")
    out = []
    for label, value, where in labelled:
        if axis.path is not None:
            overrides = (Override(axis.path, value, where, f"axis '{name}'"),)
        else:
            if not isinstance(value, dict) or not value:
                raise src.error(where, "an axis without `path` takes, for each label, a "
                                       "mapping of override path -> value")
            overrides = tuple(Override(p, v, f"{where}.{p}", f"axis '{name}'")
                              for p, v in value.items())
        out.append(AxisValue(label, overrides))
    return out


def _groups(spec: SpecFile, axes: dict[str, list[AxisValue]], src: Located
            ) -> list[list[str]]:
    """Axes in declared order, zipped ones grouped at the position of their first member."""
    zipped: dict[str, int] = {}
    for g, group in enumerate(spec.zip):
        if len(group) < 2:
            raise src.error(f"zip[{g}]", "a zip group needs at least two axes")
        for i, name in enumerate(group):
            if name not in axes:
                raise src.error(f"zip[{g}][{i}]", f"unknown axis '{name}'; axes: "
                                                  + ", ".join(axes))
            if name in zipped:
                raise src.error(f"zip[{g}][{i}]", f"axis '{name}' is in two zip groups")
            zipped[name] = g
        lengths = {name: len(axes[name]) for name in group}
        if len(set(lengths.values())) > 1:
            raise src.error(f"zip[{g}]", "zipped axes need the same number of values; got "
                            + ", ".join(f"{k}: {v}" for k, v in lengths.items()))
    order, seen = [], set()
    for name in axes:
        if name in zipped:
            g = zipped[name]
            if g not in seen:
                seen.add(g)
                order.append(list(spec.zip[g]))
        else:
            order.append([name])
    return order


def _exclusions(spec: SpecFile, axes: dict[str, list[AxisValue]], has_variants: bool,
                variant_names: list[str], src: Located) -> list[dict[str, set[str]]]:
    rules = []
    for r, rule in enumerate(spec.exclude):
        if not rule:
            raise src.error(f"exclude[{r}]", "an exclusion needs at least one axis: label")
        parsed = {}
        for name, want in rule.items():
            where = f"exclude[{r}].{name}"
            if name == "variant" and has_variants:
                allowed = variant_names
            elif name in axes:
                allowed = [v.label for v in axes[name]]
            else:
                raise src.error(where, f"unknown axis '{name}'; axes: "
                                + ", ".join([*axes, *(["variant"] if has_variants else [])]))
            wanted = want if isinstance(want, list) else [want]
            labels = set()
            for w in wanted:
                lab = _label(w)
                if lab not in allowed:
                    raise src.error(where, f"axis '{name}' has no value {w!r}; values: "
                                    + ", ".join(allowed))
                labels.add(lab)
            parsed[name] = labels
        rules.append(parsed)
    return rules


def load_base(spec: SpecFile, src: Located) -> Located:
    """The spec's base run config, read from its file or inline, with its lines."""
    if isinstance(spec.base, str):
        path = src.resolve("base", spec.base)
        if not path.is_file():
            raise src.error("base", f"base run config not found: {path}")
        return load_yaml(path)
    if isinstance(spec.base, dict):
        return src.subtree("base", spec.base)
    raise src.error("base", "expected a run config mapping or the path of a run config file")


def check_expert_ids(base: Located) -> None:
    """An unknown expert id in the base is reported at the base's line before any override
    is resolved: overrides address experts by name (the id, when unnamed), so a typo there
    would otherwise surface as an override naming an expert the base does not have."""
    from core.registry import UnknownIdError
    from models.experts import EXPERTS
    model = base.data.get("model") if isinstance(base.data, dict) else None
    experts = model.get("experts") if isinstance(model, dict) else None
    for i, expert in enumerate(experts if isinstance(experts, list) else []):
        eid = expert.get("id") if isinstance(expert, dict) else None
        if isinstance(eid, str) and eid not in EXPERTS:
            raise base.error(f"model.experts[{i}].id",
                             str(UnknownIdError(EXPERTS.kind, eid, EXPERTS.names())))


def apply_overrides(base: Located, overrides: list[Override], spec_src: Located, name: str
                    ) -> Located:
    """The base with the overrides applied, with each field's line and file pointing at
    where it was written."""
    data = copy.deepcopy(base.data)
    lines, files = dict(base.lines), {p: base.file_of(p) for p in base.lines}
    resolved: list[tuple[str, Override]] = []
    for ov in overrides:
        try:
            path = paths.canonical(ov.path, data)
        except paths.PathError as exc:
            raise spec_src.error(ov.at, f"{ov.source}: {exc}") from None
        for other_path, other in resolved:
            if paths.overlaps(path, other_path):
                raise spec_src.error(ov.at, f"conflicting overrides: {other.source} sets "
                                            f"'{other.path}' and {ov.source} sets '{ov.path}'")
        resolved.append((path, ov))
    for path, ov in resolved:
        paths.assign(data, path, copy.deepcopy(ov.value))
        replaced = [p for p in lines if p == path or p.startswith((path + ".", path + "["))]
        for p in replaced:
            lines.pop(p, None)
            files.pop(p, None)
        sub = spec_src.subtree(ov.at, ov.value)
        for rel, line in sub.lines.items():
            full = path + ("" if not rel else (rel if rel.startswith("[") else "." + rel))
            lines[full] = line
            files[full] = spec_src.file
    data["name"] = name
    return Located(data, lines, base.file, files)


def load_spec(path: str | Path, check_files: bool = True) -> ExperimentSpec:
    """check_files=False: validate everything but the existence of data and benchmark files
    (`ablate plan` of a full-scale spec on a machine without the data)."""
    from harness.data.fingerprints import active_cache
    active_cache().new_snapshot()   # every run's data fingerprinted as it is now, once
    src = load_yaml(path)
    spec = bind_dataclass(SpecFile, src.data, src, "")   # its name checked by the schema
    base = load_base(spec, src)
    if not isinstance(base.data, dict):
        raise base.error("", "a run config must be a mapping")
    check_expert_ids(base)
    if spec.set:  # applied to the base first, so variants and axes may refine what it sets
        base = apply_overrides(base, [Override(p, v, f"set.{p}", "spec `set`")
                               for p, v in spec.set.items()], src, spec.name)
    axes = {name: _axis_values(name, axis, src) for name, axis in spec.axes.items()}
    if "variant" in axes:
        raise src.error("axes.variant", "'variant' is reserved for the `variants` labels")
    variant_names = [v.name for v in spec.variants]
    for i, name in enumerate(variant_names):
        if name in variant_names[:i]:
            raise src.error(f"variants[{i}].name", f"variant name '{name}' is used twice")
    variants = [AxisValue(v.name, tuple(Override(p, val, f"variants[{i}].set.{p}",
                                                 f"variant '{v.name}'")
                                        for p, val in v.set.items()))
                for i, v in enumerate(spec.variants)]
    groups = _groups(spec, axes, src)
    rules = _exclusions(spec, axes, bool(variants), variant_names, src)

    columns = (["variant"] if variants else []) + list(axes)
    choices = [[[("variant", v)] for v in variants]] if variants else []
    for group in groups:
        choices.append([[(name, axes[name][i]) for name in group]
                        for i in range(len(axes[group[0]]))])
    sizes = [len(c) for c in choices]
    combinations = math.prod(sizes)
    if combinations > spec.max_runs:
        raise src.error("max_runs" if "max_runs" in src.data else "axes",
                        f"the grid has {combinations:,} combinations ("
                        + " x ".join(str(n) for n in sizes) + f" values) before exclusions, "
                        f"more than max_runs = {spec.max_runs:,}; narrow the axes, or set "
                        f"`max_runs: {combinations}` in the spec to expand them all")
    runs: list[PlannedRun] = []
    by_key: dict[str, PlannedRun] = {}
    pins = read_lock(src.file)   # `ablate fetch`'s commits: part of each run's key
    for combo in itertools.product(*choices):
        picked = [pair for part in combo for pair in part]
        labels = {name: value.label for name, value in picked}
        if any(all(labels[a] in want for a, want in rule.items()) for rule in rules):
            continue
        overrides = [ov for _, value in picked for ov in value.overrides]
        suffix = ",".join(f"{k}={v}" for k, v in labels.items())
        name = f"{spec.name}[{suffix}]" if suffix else spec.name
        composed = apply_overrides(base, overrides, src, name)
        cfg = apply_lock(parse_run_config(composed, check_files), pins)
        run = PlannedRun(name, labels, cfg)
        if cfg.key in by_key:
            raise ConfigError(f"runs {by_key[cfg.key].name} and {name} resolve to the same "
                              f"config (run {cfg.key}); an axis value changes nothing",
                              file=src.file, field="axes")
        by_key[cfg.key] = run
        runs.append(run)
    if not runs:
        raise src.error("exclude" if rules else "axes", "the grid is empty: every combination "
                                                        "is excluded")
    # axes that only change the seed are replicates: their runs are one arm of the table
    replicates = {n for n, values in axes.items()
                  if all(ov.path == "seed" for v in values for ov in v.overrides)}
    evaluated = list(dict.fromkeys(b for r in runs for b in r.config.eval.benchmarks))
    report = resolve_report(spec.report, src, [r.labels for r in runs],
                            [c for c in columns if c not in replicates], evaluated)
    from harness.config.profiles import spec_profile
    profile = spec_profile(src, spec.slurm) if spec.slurm is not None else None
    return ExperimentSpec(spec.name, str(Path(src.file).resolve()), spec.description,
                          columns, runs, report, profile)
