"""A greedy expert-addition search spec (Eagle's round-robin selection), loaded and checked
before anything is submitted.

    name: greedy_known_answer
    base: greedy_base.yaml            # a run config; its model.experts is replaced per arm
    set: {"stages[prealign].enabled": true}   # optional overrides of the base, as in a variant
    search:
      experts:                        # every expert the search may use, by name
        clip: {id: clip-vit, preset: tiny, resolution: 64}
        convnext: {id: convnext, preset: tiny}
      start: [clip]                   # the base set, trained first
      pool: [convnext, ...]           # candidates; each round tries every one not yet added
      objective:
        benchmarks:                   # each normalized to 0-100: 100 * (value - min) / (max - min)
          synth-color: {max: 1}       # accuracies are fractions: max 1
          mme-perception: {max: 2000} # MME perception is a sum of 14 subtask scores
          ocrbench: {max: 1000}       # OCRBench counts correct answers out of 1000
        # weights (default 1) make the average a weighted mean
      stop: {min_gain: 0.5, max_experts: 4}   # stop when the best candidate gains <= min_gain
                                              # normalized points, or at max_experts experts
      seeds: [0, 1]                   # each arm trained once per seed; ranked by the mean
      tune: {path: "stages[sft].lr", low: 1.0e-4, high: 3.0e-3, trials: 4}   # optional Optuna
      halving:                        # optional successive halving within each round
        rungs: [0.25, 0.5]            # pause the candidates' last stage at these fractions
        keep: 0.5                     # of a rung's candidates, this fraction goes on
        min_keep: 1                   # ... and never fewer than this
        selection: {synthetic_per_skill: 50}   # the held-out split rung decisions read

An arm's expert order is the order of addition (start, then each round's pick), which is what
the channel order of a concatenating fusion follows."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from analysis.report_manifest import SpecManifest, file_sha256
from core.contained import SAFE_NAME, inside, name_problem
from core.errors import ConfigError
from core.fields import ranged
from core.identity import content_hash, to_plain
from harness.config.run_config import RunConfig
from harness.config.schema import bind_dataclass
from harness.config.selection import SelectionSplit
from harness.config.yamlio import Located, load_yaml
from harness.evaluation.benchmarks import BENCHMARKS
from harness.search.evidence import PER_QUESTION_MEANS
from harness.specs.expand import Override, PlannedRun, apply_overrides, check_expert_ids, load_base
from harness.specs.run_file import check_benchmark_files, parse_run_config


@dataclass(frozen=True)
class Normalization:
    """How one benchmark's metric maps to 0-100: 100 * (value - min) / (max - min)."""
    max: float
    min: float = 0.0
    metric: str | None = None     # None: the benchmark's headline, as each run recorded it
    weight: float = ranged(1.0, gt=0)


@dataclass(frozen=True)
class Objective:
    benchmarks: dict[str, Any]


@dataclass(frozen=True)
class StopRule:
    min_gain: float = ranged(0.0, ge=0)   # normalized points
    max_experts: int | None = ranged(None, ge=1)


@dataclass(frozen=True)
class Tuning:
    """Optuna per-arm tuning of one numeric field (normally a stage's learning rate): each arm
    is compared at its own best value. Trials are asked `parallel` at a time per arm, and all
    arms' trials of a wave are submitted together."""
    path: str
    low: float
    high: float
    log: bool = True
    trials: int = ranged(4, ge=1)
    parallel: int = ranged(2, ge=1)
    sampler_seed: int = 0


@dataclass(frozen=True)
class Halving:
    """Successive halving within a round, synchronous rungs: every candidate trains to the
    first rung (a fraction of its last stage's steps) and is scored there on the selection
    split; some go on from that checkpoint to the next rung, and so on; the survivors finish,
    exactly as without halving, and the round compares them on the reported benchmarks. The
    round's current set always finishes.

    Who goes on is the `rule`'s: `fraction`, the best `keep` of the rung's candidates (at least
    `min_keep`); `evidence`, every candidate whose paired per-question interval against the
    rung's leader does not show it trailing by more than the search's min_gain, at a chance
    of at most `risk` of stopping the round's best (harness.search.evidence); there `keep`,
    when given, caps the survivors, and `min_keep` is still the floor."""
    rungs: list[float] = ranged(min_items=1, gt=0, lt=1)
    rule: Literal["fraction", "evidence"] = "fraction"
    keep: float | None = ranged(None, gt=0, lt=1)    # fraction rule: 0.5 unless given
    min_keep: int = ranged(1, ge=1)
    risk: float = ranged(0.05, gt=0, lt=0.5)          # evidence rule
    selection: SelectionSplit = field(default_factory=SelectionSplit)

    @property
    def by_evidence(self) -> bool:
        return self.rule == "evidence"

    @property
    def keep_fraction(self) -> float:
        """`keep`, else the rule's default: half by fraction, no cap by evidence."""
        return self.keep if self.keep is not None else (1.0 if self.by_evidence else 0.5)

    def survivors(self, contenders: int) -> int:
        """How many of `contenders` go on past a rung at most (the evidence rule may keep
        fewer, never fewer than min_keep)."""
        return min(contenders, max(self.min_keep, math.ceil(self.keep_fraction * contenders)))

    def last_stage_share(self, contenders: int, decided_at_first: bool = False) -> float:
        """The last stage's steps that `contenders` candidates train under halving, as a
        fraction of what they train without it (1.0: halving saves nothing). The evidence
        rule's share depends on the scores: `decided_at_first` gives its best case, every
        candidate but one stopped at the first rung (its worst case is the cap's)."""
        if contenders == 0:
            return 1.0
        if decided_at_first:
            return (1.0 + (contenders - 1) * self.rungs[0]) / contenders
        trained, alive, reached = 0.0, contenders, 0.0
        for fraction in self.rungs:
            keep = self.survivors(alive)
            if keep == alive:
                continue
            trained += alive * (fraction - reached)
            alive, reached = keep, fraction
        trained += alive * (1.0 - reached)
        return trained / contenders


@dataclass(frozen=True)
class SearchSection:
    experts: dict[str, Any]
    start: list[str]
    pool: list[str]
    objective: Objective
    stop: StopRule = field(default_factory=StopRule)
    seeds: list[int] = field(default_factory=lambda: [0])
    tune: Tuning | None = None
    halving: Halving | None = None


@dataclass(frozen=True)
class SearchFile:
    name: str = ranged(pattern=SAFE_NAME)   # names WORKDIR/searches/NAME/ and its manifest
    base: Any
    search: SearchSection
    description: str = ""
    set: dict[str, Any] = field(default_factory=dict)
    slurm: str | None = None      # the Slurm profile its jobs need, relative to the spec file


@dataclass(frozen=True)
class SearchSpec:
    name: str
    file: str
    description: str
    start: list[str]
    pool: list[str]
    objective: dict[str, Normalization]
    stop: StopRule
    seeds: list[int]
    tune: Tuning | None
    identity: str                     # hash of everything that decides the search
    _src: Located = field(repr=False)
    _base: Located = field(repr=False)
    _experts: dict[str, dict] = field(repr=False)
    _overrides: list[Override] = field(repr=False)
    check_files: bool = True          # False: `ablate plan` without the data on this machine
    slurm_profile: str | None = None
    halving: Halving | None = None
    # applied to every run the search plans (`ablate rehearse` shrinks them); None: as is
    transform: Callable[[PlannedRun], PlannedRun] | None = field(default=None, repr=False)

    @property
    def max_experts(self) -> int:
        return self.stop.max_experts or len(self.start) + len(self.pool)

    def run(self, experts: list[str], seed: int, extra: dict[str, Any] | None = None
            ) -> PlannedRun:
        """The validated run of one arm (expert list, in order) at one seed; `extra` sets
        more fields (a tuned learning rate)."""
        labels = {"experts": "+".join(experts), "seed": str(seed)}
        overrides = list(self._overrides) + [Override("seed", seed, "search.seeds",
                                                      "search seeds")]
        for path, value in (extra or {}).items():
            labels[path] = f"{value:.3g}" if isinstance(value, float) else str(value)
            overrides.append(Override(path, value, "search.tune", "search tuning"))
        suffix = ",".join(f"{k}={v}" for k, v in labels.items())
        composed = apply_overrides(self._base, overrides, self._src, f"{self.name}[{suffix}]")
        try:
            cfg = parse_run_config(self._with_experts(composed, experts),
                                   self.check_files)
        except ConfigError as exc:
            raise self._renamed(exc, experts) from None
        run = PlannedRun(f"{self.name}[{suffix}]", labels, cfg, dict(extra or {}))
        return self.transform(run) if self.transform is not None else run

    @staticmethod
    def _renamed(exc: ConfigError, experts: list[str]) -> ConfigError:
        """An error in model.experts[i] is named as the field the user wrote:
        search.experts.NAME."""
        for i, n in enumerate(experts):
            prefix = f"model.experts[{i}]"
            if exc.field and (exc.field == prefix or exc.field.startswith(prefix + ".")):
                return ConfigError(exc.message, file=exc.file, line=exc.line,
                                   field=f"search.experts.{n}" + exc.field[len(prefix):])
        return exc

    def _with_experts(self, composed: Located, names: list[str]) -> Located:
        """`composed` with model.experts replaced by the named experts, each field's line
        pointing at its definition under search.experts."""
        data = copy.deepcopy(composed.data)
        keep = {p: v for p, v in composed.lines.items() if not p.startswith("model.experts")}
        files = {p: v for p, v in composed.files.items() if not p.startswith("model.experts")}
        data.setdefault("model", {})["experts"] = [copy.deepcopy(self._experts[n])
                                                   for n in names]
        for i, n in enumerate(names):
            sub = self._src.subtree(f"search.experts.{n}", self._experts[n])
            for rel, line in sub.lines.items():
                path = f"model.experts[{i}]" + (rel if rel.startswith("[") or not rel
                                                else "." + rel)
                keep[path], files[path] = line, self._src.file
        return Located(data, keep, composed.file, files)


def _check_names(src: Located, where: str, names: list[str], defined: dict) -> None:
    for i, n in enumerate(names):
        if n not in defined:
            raise src.error(f"{where}[{i}]", f"unknown expert '{n}'; defined under "
                                             f"search.experts: {', '.join(defined) or 'none'}")
        if names.index(n) != i:
            raise src.error(f"{where}[{i}]", f"expert '{n}' is listed twice")


def _objective(section: SearchSection, base_cfg: RunConfig, src: Located
               ) -> dict[str, Normalization]:
    entries = section.objective.benchmarks
    where = "search.objective.benchmarks"
    if not entries:
        raise src.error(where, "the objective needs at least one benchmark")
    evaluated = base_cfg.eval.benchmarks
    out = {}
    for name, value in entries.items():
        at = f"{where}.{name}"
        if name not in evaluated:
            raise src.error(at, f"no run evaluates benchmark '{name}'; the base config's "
                                f"eval.benchmarks: {', '.join(evaluated)}")
        if not isinstance(value, dict) or "max" not in value:
            raise src.error(at, f"normalization missing for '{name}': give the range of its "
                                "metric as {max: M} (and min, default 0), e.g. {max: 1} for "
                                "an accuracy fraction, {max: 2000} for MME perception, "
                                "{max: 1000} for OCRBench")
        norm = bind_dataclass(Normalization, value, src, at)
        if not norm.max > norm.min:
            raise src.error(f"{at}.max", f"max ({norm.max}) must be above min ({norm.min})")
        out[name] = norm
    return out


def is_search_spec(path: str | Path) -> bool:
    """A spec file with a `search:` section (the rest are experiment specs)."""
    data = load_yaml(path).data
    return isinstance(data, dict) and "search" in data


def load_search_spec(path: str | Path, check_files: bool = True) -> SearchSpec:
    from harness.data.fingerprints import active_cache
    active_cache().new_snapshot()   # the data as it is now
    src = load_yaml(path)
    if isinstance(src.data, dict) and "axes" in src.data:
        raise src.error("axes", "a search spec has no axes: the search chooses the expert "
                                "sets; compare settings (e.g. pre-alignment on/off) with one "
                                "search spec each, sharing a base")
    spec = bind_dataclass(SearchFile, src.data, src, "")
    s = spec.search   # its name checked by the schema: it names the search's folder
    experts = {}
    for name, value in s.experts.items():
        problem = name_problem(name)   # the key names the expert, and its stage folders
        if problem:
            raise src.error(f"search.experts.{name}", problem)
        if not isinstance(value, dict) or "id" not in value:
            raise src.error(f"search.experts.{name}", "expected an expert config mapping "
                                                      "with an `id`")
        if value.get("name", name) != name:
            raise src.error(f"search.experts.{name}.name", "leave `name` out: the key under "
                                                           "search.experts names the expert")
        experts[name] = {**value, "name": name}
    if not s.start:
        raise src.error("search.start", "the start set needs at least one expert")
    _check_names(src, "search.start", s.start, experts)
    if not s.pool:
        raise src.error("search.pool", "the candidate pool is empty: nothing to add")
    _check_names(src, "search.pool", s.pool, experts)
    for i, n in enumerate(s.pool):
        if n in s.start:
            raise src.error(f"search.pool[{i}]", f"expert '{n}' is in the start set and in "
                                                 "the pool; a start expert cannot be added")
    if not s.seeds:
        raise src.error("search.seeds", "at least one seed is required")
    for i, seed in enumerate(s.seeds):
        if s.seeds.index(seed) != i:
            raise src.error(f"search.seeds[{i}]", f"seed {seed} is listed twice")
    if s.stop.max_experts is not None and s.stop.max_experts <= len(s.start):
        raise src.error("search.stop.max_experts", f"must exceed the start set's size "
                                                   f"({len(s.start)}), or nothing is added")
    if s.tune is not None:
        t = s.tune
        if not t.low < t.high or (t.log and t.low <= 0):
            raise src.error("search.tune", "need low < high (and low > 0 on a log scale)")
    base = load_base(spec, src)
    if not isinstance(base.data, dict):
        raise base.error("", "a run config must be a mapping")
    check_expert_ids(base)
    overrides = [Override(p, v, f"set.{p}", "search `set`") for p, v in spec.set.items()]
    identity = content_hash({"experts": experts, "start": s.start, "pool": s.pool,
                             "objective": s.objective.benchmarks,
                             "stop": dataclasses.asdict(s.stop),
                             "seeds": s.seeds, "set": spec.set, "base": base.data,
                             "tune": dataclasses.asdict(s.tune) if s.tune else None,
                             **({"halving": to_plain(s.halving)} if s.halving else {})})
    search = SearchSpec(spec.name, str(Path(src.file).resolve()), spec.description,
                        list(s.start), list(s.pool), {}, s.stop, list(s.seeds), s.tune,
                        identity, src, base, experts, overrides, check_files)
    if spec.slurm is not None:
        from harness.config.profiles import spec_profile
        search = dataclasses.replace(search, slurm_profile=spec_profile(src, spec.slurm))
    # Everything the first round submits is validated now (the start set, and the start set
    # with each candidate), and the objective against what the runs evaluate; later rounds'
    # arms are validated before their round submits anything.
    first = search.run(search.start, search.seeds[0])
    for e in search.pool:
        search.run(search.start + [e], search.seeds[0])
    if s.tune is not None:
        for value in (s.tune.low, s.tune.high):
            try:
                search.run(search.start, search.seeds[0], {s.tune.path: value})
            except ConfigError as exc:
                raise src.error("search.tune.path", f"cannot tune '{s.tune.path}': "
                                                    f"{exc.message}") from None
    objective = _objective(s, first.config, src)
    halving = (_halving(s.halving, first.config, objective, src, check_files) if s.halving
               else None)
    if halving is not None and s.tune is not None:
        raise src.error("search.halving", "halving and tune cannot be combined yet: each "
                                          "tuning trial would need its own rungs; drop one")
    return dataclasses.replace(search, objective=objective, halving=halving)


def _halving(h: Halving, base_cfg: RunConfig, objective: dict[str, Normalization],
             src: Located, check_files: bool = True) -> Halving:
    """The halving section checked against what the runs train and evaluate, with the
    selection benchmarks defaulting to the objective's."""
    where = "search.halving"
    if any(b <= a for a, b in zip(h.rungs, h.rungs[1:])):
        raise src.error(f"{where}.rungs", f"rungs must increase: {h.rungs}")
    if base_cfg.stages[-1].per_expert:
        raise src.error(where, f"the last stage ('{base_cfg.stages[-1].name}') is per-expert; "
                               "rungs pause the joint stage that trains the combination")
    sel = h.selection
    benchmarks = list(sel.benchmarks) or list(objective)
    for i, name in enumerate(benchmarks):
        at = f"{where}.selection.benchmarks[{i}]"
        if name not in objective:
            raise src.error(at, f"'{name}' is not in the objective; the selection split scores "
                                "the objective's benchmarks on held-out questions (allowed: "
                                f"{', '.join(objective)})")
        if BENCHMARKS.get(name).needs_source and name not in sel.sources:
            raise src.error(f"{where}.selection.sources", f"benchmark '{name}' reads its own "
                            "files: give its held-out questions as sources."
                            f"{name}: {{questions: ..., images: ...}} (the reported files "
                            "would make the search select on the numbers it reports)")
        if name in sel.sources:   # held-out files: read by their loader now, as eval's are
            check_benchmark_files(name, sel.sources[name], src,
                                  f"{where}.selection.sources.{name}", check_files)
    if h.by_evidence:   # the rule pairs per-question scores that add up to the headline
        for i, name in enumerate(benchmarks):
            metric = objective[name].metric or BENCHMARKS.get(name).main_metric
            if metric not in PER_QUESTION_MEANS:
                raise src.error(f"{where}.selection.benchmarks[{i}]", f"the evidence rule reads "
                                f"per-question scores, and '{name}' is judged by '{metric}', "
                                "which is not their mean; allowed metrics: "
                                f"{', '.join(PER_QUESTION_MEANS)} (or use rule: fraction)")
    if base_cfg.data.synthetic is None and sel.data is None and not all(
            BENCHMARKS.get(n).needs_source for n in benchmarks):
        raise src.error(f"{where}.selection.data", "the runs do not use synthetic data: give "
                                                   "the held-out evaluation file as "
                                                   "{json: ..., images: ...}")
    return dataclasses.replace(h, selection=dataclasses.replace(sel, benchmarks=benchmarks))


def raw_values(spec: SearchSpec, result, benchmarks: list[str] | None = None
               ) -> dict[str, float]:
    """Benchmark -> the value the objective normalizes, from one run's result
    (harness.runs.pipeline.RunResult, or a PausedRun's rung record): the named metric, else
    the run's recorded headline; of `benchmarks` (default: all the objective's)."""
    names = benchmarks if benchmarks is not None else list(spec.objective)
    return {name: (result.metrics[name][spec.objective[name].metric]
                   if spec.objective[name].metric else result.scores[name]) for name in names}


def normalized(spec: SearchSpec, result, benchmarks: list[str] | None = None
               ) -> dict[str, float]:
    """Benchmark -> 0-100 score of one run."""
    return {name: 100.0 * (value - spec.objective[name].min)
            / (spec.objective[name].max - spec.objective[name].min)
            for name, value in raw_values(spec, result, benchmarks).items()}


def objective_value(spec: SearchSpec, result, benchmarks: list[str] | None = None) -> float:
    """The weighted mean of the normalized benchmark scores (of `benchmarks`, default all)."""
    scores = normalized(spec, result, benchmarks)
    total = sum(spec.objective[b].weight for b in scores)
    return sum(scores[b] * spec.objective[b].weight for b in scores) / total


def selection_objective(spec: SearchSpec, paused) -> float:
    """A run's objective on the selection split at a rung (harness.runs.pipeline.PausedRun):
    the objective's normalization and weights over the selection's benchmarks."""
    return objective_value(spec, paused, spec.halving.selection.benchmarks)


def searched_runs(spec: SearchSpec, workdir: Path) -> list[PlannedRun]:
    """Every run the search has submitted so far, in order, from its runs.json (written by
    harness.search.greedy before each submission), planned again from the spec."""
    path = inside(Path(workdir) / "searches", spec.name) / "runs.json"
    if not path.exists():
        return []
    return [spec.run(r["experts"], r["seed"], r["extra"] or None)
            for r in json.loads(path.read_text())]


def search_manifest(spec: SearchSpec) -> SpecManifest:
    """What the search's report needs besides its round files (analysis.report_manifest)."""
    return SpecManifest("search", spec.name, spec.description, spec.file,
                        file_sha256(Path(spec.file)))
