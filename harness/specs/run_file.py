"""Reading a run config: YAML -> harness.config.run_config's types (the model's from
models.model_config), with relative paths resolved against the file that wrote them, validated
field by field (errors name file, line and field) before any run directory exists.

Validation also builds the model's architecture on the meta device (no weights, no memory),
so an expert that cannot take a resolution, a layer index past an encoder's depth or experts a
fusion cannot combine are reported before any job starts."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from core.errors import DataError
from core.identity import content_hash
from core.registry import UnknownIdError
from harness.config.run_config import (
    TRAINABLE_GROUPS,
    BenchmarkSource,
    DataConfig,
    DatasetRef,
    EvalConfig,
    RunConfig,
    architecture_dict,
)
from harness.config.schema import bind, not_among
from harness.config.yamlio import Located, load_yaml
from harness.data.fingerprints import active_cache
from harness.data.llava import check_llava_file
from harness.data.synthetic import SKILLS
from harness.evaluation.benchmarks import BENCHMARKS
from harness.evaluation.passes import PASSES
from harness.evaluation.questions import BenchmarkFileError
from harness.specs.data_identity import with_content
from harness.training.strategies import strategy_choices
from models.builder import ExpertBuildError, build_architecture
from models.experts import EXPERTS, WRAPPERS
from models.experts.wrappers import wrapper_families
from models.fusion import FUSIONS, FusionOptionError
from models.llm import LLMS
from models.model_config import FusionSpec, ModelConfig
from models.projectors import PROJECTORS
from models.templates import TEMPLATES


def parse_run_config(src: Located, check_files: bool = True) -> RunConfig:
    """check_files=False (planning on a machine without the data) skips the checks that data
    and benchmark files exist; everything else is validated."""
    cfg = bind(RunConfig, src.data, src, "")
    cfg = dataclasses.replace(cfg, data=_absolute_paths(cfg.data, src),
                              eval=_absolute_sources(cfg.eval, src),
                              model=_pinned_fusion_files(cfg.model, src, check_files))
    validate(cfg, src, check_files)
    cfg = with_content(cfg, src, check_files)   # the key holds the data's content, not paths
    return dataclasses.replace(cfg, stages=[s for s in cfg.stages if s.enabled])


def _absolute_sources(ev: EvalConfig, src: Located) -> EvalConfig:
    def fix(name: str, attr: str) -> str | None:
        value = getattr(ev.sources[name], attr)
        if value is None:
            return None
        return str(src.resolve(f"eval.sources.{name}.{attr}", value))
    return dataclasses.replace(ev, sources={
        name: BenchmarkSource(fix(name, "questions"), fix(name, "images"))
        for name in ev.sources})


def _pinned_fusion_files(model: ModelConfig, src: Located, check_files: bool = True
                         ) -> ModelConfig:
    """Each fusion option naming a file (Fusion.file_options: MoVA's routing `labels`) is made
    absolute against the file that wrote it, and the file's content hash is recorded next to
    it (`{option}_sha256`), so a run's key changes when the file does. The fusion first
    completes its options (Fusion.complete_options: an LLM router's model cards), so what it
    reads is in the resolved config and its key. Planning without the data (check_files
    false) leaves a missing file unpinned."""
    model = _completed_options(model, src)
    options = model.fusion.options
    for option in FUSIONS.get(model.fusion.id).file_options:
        path = getattr(options, option, None)
        if not path:
            continue
        field = f"model.fusion.{option}"
        resolved = src.resolve(field, path)
        if not resolved.is_file() and check_files:
            raise src.error(field, f"file not found: {resolved}")
        pinned = ({f"{option}_sha256": hashlib.sha256(resolved.read_bytes()).hexdigest()[:16]}
                  if resolved.is_file() else {})
        options = dataclasses.replace(options, **{option: str(resolved)}, **pinned)
    return dataclasses.replace(model, fusion=FusionSpec(model.fusion.id, options))


def _completed_options(model: ModelConfig, src: Located) -> ModelConfig:
    try:
        options = FUSIONS.get(model.fusion.id).complete_options(model.fusion.options,
                                                                model.experts)
    except FusionOptionError as exc:
        raise src.error(_fusion_field(exc), str(exc)) from None
    return dataclasses.replace(model, fusion=FusionSpec(model.fusion.id, options))


def _fusion_field(exc: FusionOptionError) -> str:
    return f"model.fusion.{exc.option}" if exc.option else "model.fusion"


def load_run_config(path: str | Path) -> RunConfig:
    active_cache().new_snapshot()   # the data as it is now
    return parse_run_config(load_yaml(path))


def _absolute_paths(data: DataConfig, src: Located) -> DataConfig:
    """Relative data paths are relative to the file that wrote them (a run config, or a spec
    overriding its base); the resolved config holds them absolute so a run does not depend on
    the directory it was started from."""
    def fix(part: str) -> DatasetRef | None:
        ref = getattr(data, part)
        if ref is None:
            return None
        return DatasetRef(*(str(src.resolve(f"data.{part}.{attr}", getattr(ref, attr)))
                            for attr in ("json", "images")), samples=ref.samples)
    return dataclasses.replace(data, align=fix("align"), sft=fix("sft"), eval=fix("eval"))


def _check_id(src: Located, path: str, registry, name: str) -> None:
    if name not in registry:
        raise src.error(path, str(UnknownIdError(registry.kind, name, registry.names())))


def validate(cfg: RunConfig, src: Located, check_files: bool = True) -> None:
    """Everything that can be checked before work starts; raises ConfigError."""
    names = [e.key for e in cfg.model.experts]
    if not names:
        raise src.error("model.experts", "at least one expert is required")
    for i, expert in enumerate(cfg.model.experts):
        _check_id(src, f"model.experts[{i}].id", EXPERTS, expert.id)
        if expert.wrapper is not None:
            _check_id(src, f"model.experts[{i}].wrapper", WRAPPERS, expert.wrapper)
            if expert.id not in wrapper_families(expert.wrapper):
                raise src.error(f"model.experts[{i}].wrapper",
                                f"wrapper '{expert.wrapper}' has no version for expert id "
                                f"'{expert.id}'; it covers: "
                                + ", ".join(wrapper_families(expert.wrapper)))
        if names.count(expert.key) > 1:
            raise src.error(f"model.experts[{i}]", f"expert name '{expert.key}' is used twice; "
                                                   "give each a distinct `name`")
    _check_id(src, "model.projector", PROJECTORS, cfg.model.projector)
    _check_id(src, "model.llm.id", LLMS, cfg.model.llm.id)
    if cfg.model.llm.id == "hf" and not cfg.model.llm.path:
        raise src.error("model.llm.path", "llm 'hf' needs a hub id or local directory")
    if not any(s.enabled for s in cfg.stages):
        raise src.error("stages", "at least one enabled stage is required")
    _validate_per_expert(cfg, src)
    for i, stage in enumerate(cfg.stages):
        _check_id(src, f"stages[{i}].template", TEMPLATES, stage.template)
        for j, group in enumerate(stage.train):
            base, _, expert = group.partition(".")
            if base not in TRAINABLE_GROUPS or (expert and (base != "experts" or
                                                            expert not in names)):
                raise src.error(f"stages[{i}].train[{j}]",
                                f"unknown module group '{group}'; allowed: "
                                + ", ".join([*TRAINABLE_GROUPS,
                                             *(f"experts.{n}" for n in names)]))
        for group in stage.lrs:
            if group not in TRAINABLE_GROUPS and group.removeprefix("experts.") not in names:
                raise src.error(f"stages[{i}].lrs.{group}", "unknown module group")
        if ("lora" in stage.train) != (stage.lora is not None):
            raise src.error(f"stages[{i}].lora" if stage.lora else f"stages[{i}].train",
                            "a LoRA stage needs both `lora: {rank, alpha, dropout, targets}` "
                            "and `lora` in `train` (the adapters are what it trains)")
        if stage.lora is not None and stage.per_expert:
            raise src.error(f"stages[{i}].lora", "a per-expert stage keeps the LLM frozen; "
                                                 "LoRA adapters belong to a joint stage")
    _validate_pass_stages(cfg, src)
    if cfg.parallel.strategy not in strategy_choices():
        raise not_among(cfg.parallel.strategy, strategy_choices(), src, "parallel.strategy")
    _validate_micro_batch(cfg, src)
    _validate_eval(cfg.eval, src, check_files)
    _validate_data(cfg, src, check_files)
    arch = content_hash(architecture_dict(cfg.model))
    if arch not in _BUILDS_ON_META:  # a grid repeats few architectures; build each once
        try:
            _, fusion = build_architecture(cfg.model, meta=True, read_files=check_files)
        except FusionOptionError as exc:
            raise src.error(_fusion_field(exc), str(exc)) from None
        except ExpertBuildError as exc:
            index = [e.key for e in cfg.model.experts].index(exc.expert)
            raise src.error(f"model.experts[{index}]", str(exc)) from None
        except ValueError as exc:
            raise src.error(_blame(str(exc), cfg), str(exc)) from None
        _BUILDS_ON_META[arch] = fusion.output_tokens
    if _BUILDS_ON_META[arch] >= cfg.model.max_length:
        raise src.error("model.max_length", f"{cfg.model.max_length} tokens cannot hold the "
                        f"{_BUILDS_ON_META[arch]} visual tokens of this fusion and any text; "
                        "raise max_length (within the LLM's context) or give the fusion fewer "
                        "tokens")


_BUILDS_ON_META: dict[str, int] = {}  # architecture -> visual tokens


def _validate_pass_stages(cfg: RunConfig, src: Located) -> None:
    """Each pass before answering checks the stages of its own task, told whether this
    model's fusion has it (MoVA's LLM router: `task: route` stages train it alone, and a model
    routing by the LLM needs one)."""
    fusion = cfg.model.fusion
    own = FUSIONS.get(fusion.id).pass_of(fusion.options)
    if own is not None and own not in PASSES.names():
        raise src.error("model.fusion", f"fusion '{fusion.id}' asks a pass before answering, "
                        f"'{own}', that no module of harness/evaluation/passes registers; "
                        f"registered: {', '.join(PASSES.names())}")
    for entry in PASSES.entries():
        problem = entry.builder.check_stages(cfg.stages, entry.name == own)
        if problem is not None:
            raise src.error(*problem)


PER_EXPERT_GROUPS = ("projector", "experts")


def _validate_per_expert(cfg: RunConfig, src: Located) -> None:
    enabled = [(i, s) for i, s in enumerate(cfg.stages) if s.enabled]
    joint_seen = None
    for i, stage in enabled:
        if not stage.per_expert:
            joint_seen = joint_seen if joint_seen is not None else i
            continue
        if joint_seen is not None:
            raise src.error(f"stages[{i}].per_expert", f"per-expert stage '{stage.name}' comes "
                            f"after the joint stage '{cfg.stages[joint_seen].name}'; per-expert "
                            "stages (pre-alignment) come first")
        for j, group in enumerate(stage.train):
            if group not in PER_EXPERT_GROUPS:
                raise src.error(f"stages[{i}].train[{j}]", f"a per-expert stage trains only "
                                f"{' and '.join(PER_EXPERT_GROUPS)} (the LLM stays frozen so "
                                f"every expert aligns to the same LM; a lone expert has no "
                                f"fusion); got '{group}'")
        for group in stage.lrs:
            if group not in PER_EXPERT_GROUPS:
                raise src.error(f"stages[{i}].lrs.{group}", "a per-expert stage sets lrs only "
                                "for " + " and ".join(PER_EXPERT_GROUPS))
    if joint_seen is None:
        raise src.error("stages", "only per-expert stages: at least one joint stage must "
                                  "follow them to train the combined model")


def _validate_micro_batch(cfg: RunConfig, src: Located) -> None:
    """parallel.micro_batch must split every stage's global batch on one rank; on more
    ranks it must also split each rank's share, which the submission checks once it knows
    the ranks (harness.scheduler.submit). Refused here, an inline run writes nothing."""
    micro = cfg.parallel.micro_batch
    for stage in cfg.stages:
        if stage.enabled and micro is not None and stage.batch_size % micro:
            allowed = [m for m in range(1, stage.batch_size + 1) if stage.batch_size % m == 0]
            raise src.error("parallel.micro_batch", f"stage '{stage.name}': its batch_size "
                            f"{stage.batch_size} does not split into micro-batches of {micro} "
                            "(on more ranks, each rank's share must split too); allowed "
                            f"parallel.micro_batch: {', '.join(map(str, allowed))}")


def _blame(message: str, cfg: RunConfig) -> str:
    """Point an architecture error at the expert it names, else at the fusion."""
    for i, e in enumerate(cfg.model.experts):
        if f"'{e.key}'" in message or f"'{e.id}'" in message:
            return f"model.experts[{i}]"
    return "model.fusion"


def _validate_eval(ev: EvalConfig, src: Located, check_files: bool) -> None:
    for i, bench in enumerate(ev.benchmarks):
        _check_id(src, f"eval.benchmarks[{i}]", BENCHMARKS, bench)
        if BENCHMARKS.get(bench).needs_source and bench not in ev.sources:
            raise src.error(f"eval.benchmarks[{i}]", f"benchmark '{bench}' reads its official "
                            f"files: give eval.sources.{bench}.questions (and .images)")
    for name in ev.sources:
        if name not in ev.benchmarks:
            raise src.error(f"eval.sources.{name}", "not one of eval.benchmarks: "
                            + ", ".join(ev.benchmarks))
        if not BENCHMARKS.get(name).needs_source:
            raise src.error(f"eval.sources.{name}", f"'{name}' is synthetic: its questions "
                                                    "come from the run's eval data")
    for i, name in enumerate(ev.likelihood):
        if name not in ev.benchmarks:
            raise src.error(f"eval.likelihood[{i}]", f"'{name}' is not one of eval.benchmarks")
        if not BENCHMARKS.get(name).closed:
            closed = [b for b in ev.benchmarks if BENCHMARKS.get(b).closed]
            raise src.error(f"eval.likelihood[{i}]", f"'{name}' has open answers; likelihood "
                            "scoring takes yes/no and option-letter benchmarks: "
                            + (", ".join(closed) or "none in eval.benchmarks"))
    if ev.template:
        _check_id(src, "eval.template", TEMPLATES, ev.template)
    for name, source in ev.sources.items():
        check_benchmark_files(name, source, src, f"eval.sources.{name}", check_files)


def check_benchmark_files(name: str, source: BenchmarkSource, src: Located, where: str,
                          check_files: bool = True) -> None:
    """The benchmark's files read by the loader a run uses (every record, its fields and
    image, ids unique, at least one question), before any run directory exists: a bad file
    found at scoring fails a run after its whole training. Planning without the data
    (check_files false) skips files that are not here and still checks those that are."""
    given = {a: getattr(source, a) for a in ("questions", "images") if getattr(source, a)}
    missing = [a for a, value in given.items() if not Path(value).exists()]
    if missing:
        if check_files:
            raise src.error(f"{where}.{missing[0]}", f"not found: {given[missing[0]]}")
        return
    try:
        BENCHMARKS.get(name).check(Path(source.questions),
                                   Path(source.images) if source.images else None)
    except BenchmarkFileError as exc:
        raise src.error(f"{where}.questions", str(exc)) from None


def _validate_data(cfg: RunConfig, src: Located, check_files: bool = True) -> None:
    d = cfg.data
    needed = {s.data for s in cfg.stages if s.enabled}
    if any(not BENCHMARKS.get(b).needs_source for b in cfg.eval.benchmarks):
        needed.add("eval")  # the synthetic benchmarks' questions live in the eval data
    if d.synthetic is None:
        for part in sorted(needed):
            if getattr(d, part) is None:
                raise src.error(f"data.{part}", "required when `data.synthetic` is not given")
    else:
        for i, skill in enumerate(d.synthetic.skills):
            if skill not in SKILLS:
                raise src.error(f"data.synthetic.skills[{i}]", f"unknown skill '{skill}'; "
                                f"allowed: {', '.join(SKILLS)}")
    for part in ("align", "sft", "eval"):
        ref = getattr(d, part)
        if ref is None or not check_files:
            continue
        for attr, want_dir in (("json", False), ("images", True)):
            p = Path(getattr(ref, attr))
            ok = p.is_dir() if want_dir else p.is_file()
            if not ok:
                kind = "folder" if want_dir else "file"
                raise src.error(f"data.{part}.{attr}", f"{kind} not found: {p}")
        try:   # a malformed file fails here, before any run directory or job exists
            count = check_llava_file(ref.json)
        except DataError as exc:
            raise src.error(f"data.{part}.json", str(exc)) from None
        if ref.samples is not None and ref.samples != count:
            raise src.error(f"data.{part}.samples", f"states {ref.samples} records; "
                            f"{ref.json} has {count}")
