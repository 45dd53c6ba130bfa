"""The run config: one fully resolved training + evaluation run, loaded from YAML, validated
field by field (errors name file, line and field), and hashed into its identity.

Validation also builds the model's architecture on the meta device (no weights, no memory),
so an expert that cannot take a resolution, a layer index past an encoder's depth or experts a
fusion cannot combine are reported before any run directory exists."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.schema import bind, bind_dataclass, to_plain
from harness.yamlio import Located, load_yaml
from models.experts import ADDED_OPTION, EXPERTS, ExpertConfig
from models.fields import ranged
from models.fusion import FUSIONS, FusionOptionError
from models.llm import LLMS, LLMConfig
from models.projectors import PROJECTORS
from models.registry import UnknownIdError
from models.templates import TEMPLATES


@dataclass(frozen=True)
class SyntheticData:
    """Generate LLaVA-format data on disk (see harness.data.synthetic)."""
    seed: int = 0
    image_size: int = ranged(64, ge=16)
    train_per_skill: int = ranged(400, ge=1)
    eval_per_skill: int = ranged(50, ge=1)
    captions: int = ranged(2000, ge=1)
    text_only: int = ranged(100, ge=0)
    skills: list[str] = ranged(default_factory=lambda: ["color", "shape", "position", "count",
                                                        "existence", "chart", "text"],
                               min_items=1)


@dataclass(frozen=True)
class DatasetRef:
    """A LLaVA-format conversation JSON and the folder its `image` paths are relative to.
    `samples` states the file's record count (LLaVA-558K: 558128), so a plan can size an
    epoch-based stage before the file is on this machine; the loaded file must agree."""
    json: str
    images: str
    samples: int | None = ranged(None, ge=1, metadata=ADDED_OPTION)


@dataclass(frozen=True)
class DataConfig:
    """image_aspect_ratio: how a non-square image reaches each expert, in training and
    evaluation alike: `resize` stretches it to the expert's input, `pad` first pads it to a
    square with the expert's mean colour (LLaVA-1.5's and Eagle's `image_aspect_ratio: pad`)."""
    synthetic: SyntheticData | None = None
    align: DatasetRef | None = None
    sft: DatasetRef | None = None
    eval: DatasetRef | None = None
    image_aspect_ratio: Literal["resize", "pad"] = field(default="resize",
                                                         metadata=ADDED_OPTION)


@dataclass(frozen=True)
class FusionSpec:
    """`id` picks the fusion; the other fields of the YAML mapping are that fusion's typed
    Options, so what is allowed depends on the id."""
    id: str
    options: Any = None

    @classmethod
    def bind_from_yaml(cls, value: Any, src: Located, path: str) -> FusionSpec:
        if not isinstance(value, dict) or "id" not in value:
            raise src.error(path, "expected a mapping with an `id`; allowed ids: "
                                  + ", ".join(FUSIONS.names()))
        try:
            fusion = FUSIONS.get(value["id"])
        except UnknownIdError as exc:
            raise src.error(f"{path}.id", str(exc)) from None
        rest = {k: v for k, v in value.items() if k != "id"}
        return cls(value["id"], bind_dataclass(fusion.Options, rest, src, path))


@dataclass(frozen=True)
class ModelConfig:
    experts: list[ExpertConfig] = ranged(min_items=1)
    fusion: FusionSpec
    projector: str = "mlp2x_gelu"
    llm: LLMConfig = field(default_factory=LLMConfig)
    max_length: int = ranged(512, ge=2)

    def to_dict(self) -> dict:
        out = to_plain(self)
        out["fusion"] = {"id": self.fusion.id, **to_plain(self.fusion.options)}
        return out


TRAINABLE_GROUPS = ("projector", "fusion", "llm", "experts")


@dataclass(frozen=True)
class StageConfig:
    """One training stage. `train` lists module groups: projector, fusion, llm, experts (every
    expert whose `freeze` is false) or experts.NAME (that expert). `lrs` overrides the stage lr
    per group; an expert's own `lr` applies when no `lrs` entry names it.

    per_expert (Eagle's pre-alignment): the stage trains each expert alone, with a projector
    of its own and the LLM frozen, before the experts are combined; `train` may list only
    `projector` and `experts` (each expert is trained whatever its `freeze`, which governs the
    joint stages). Its key depends on that one expert only, so every combination containing
    the expert reuses it; the expert's weights carry on, its projector is dropped. Per-expert
    stages come before the joint ones. enabled: false drops the stage (an axis can toggle it).
    """
    name: str
    data: Literal["align", "sft"]
    train: list[str] = ranged(min_items=1)
    lr: float = ranged(gt=0)
    template: str = "vicuna_v1"
    steps: int | None = ranged(None, ge=1)
    epochs: float | None = ranged(None, gt=0)
    batch_size: int = ranged(32, ge=1)
    lrs: dict[str, float] = ranged(default_factory=dict, gt=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = ranged(0.03, ge=0, le=1)
    weight_decay: float = ranged(0.0, ge=0)
    grad_clip: float = ranged(1.0, ge=0)    # 0: no clipping
    checkpoint_every: int = ranged(100, ge=1)
    per_expert: bool = field(default=False, metadata=ADDED_OPTION)
    enabled: bool = field(default=True, metadata=ADDED_OPTION)
    # LLaVA-1.5's group_by_modality_length (its fine-tuning sets it): batches of one modality,
    # sorted by length (harness.training.loader.ModalityLengthOrder); changes the data order
    group_by_modality: bool = field(default=False, metadata=ADDED_OPTION)

    def __post_init__(self):
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of `steps` or `epochs`")


def trainable_lrs(experts: list[ExpertConfig], stage: StageConfig) -> dict[str, float]:
    """Module name -> learning rate for everything `stage` trains. Precedence:
    lrs[experts.NAME] > the expert's own lr > lrs[GROUP] > the stage lr."""
    out: dict[str, float] = {}
    by_name = {f"experts.{e.key}": e for e in experts}
    for group in stage.train:
        if group == "experts":
            names = [n for n, e in by_name.items() if not e.freeze]
        else:
            names = [group]
        for name in names:
            expert = by_name.get(name)
            choices = (stage.lrs.get(name), expert.lr if expert else None,
                       stage.lrs.get(group.split(".")[0]))
            out[name] = next((c for c in choices if c is not None), stage.lr)
    return out


def architecture_dict(model: ModelConfig) -> dict:
    """The model config without what only training reads (expert freeze and lr): two runs
    that differ only there build the same network, and share stages that train the same
    modules at the same rates."""
    out = model.to_dict()
    for e in out["experts"]:
        e.pop("freeze"), e.pop("lr")
    return out


@dataclass(frozen=True)
class BenchmarkSource:
    """Where a real benchmark's official files are: its question file (or folder: POPE, MME)
    and its image folder (None where images are inside: MME, MMBench's TSV)."""
    questions: str
    images: str | None = None


@dataclass(frozen=True)
class EvalConfig:
    """benchmarks: registry ids; sources: benchmark -> its files, for every real benchmark;
    likelihood: closed-answer benchmarks (yes/no, option letters) answered by the allowed
    answer the model finds most likely instead of by generation."""
    benchmarks: list[str] = ranged(min_items=1)
    batch_size: int = ranged(64, ge=1)
    max_new_tokens: int = ranged(8, ge=1)
    template: str | None = None   # None = the last stage's template
    before_training: bool = False  # also score the untrained model (a floor for the table)
    sources: dict[str, BenchmarkSource] = field(default_factory=dict, metadata=ADDED_OPTION)
    likelihood: list[str] = field(default_factory=list, metadata=ADDED_OPTION)


@dataclass(frozen=True)
class ParallelConfig:
    """How a run uses its hardware, which is not part of its identity (a run finished on 8
    GPUs is reused by a spec run on 4): strategy auto | single | ddp | fsdp
    (harness.training.strategies), micro_batch (samples per rank and forward; None: the
    stage's batch over the ranks, no accumulation), activation checkpointing on the LLM's
    decoder layers; loader_workers: processes per rank that decode and resize images ahead
    of the step (0: in the training process), prefetch_steps: steps each worker prepares
    ahead; checkpoint_minutes: also checkpoint when this long has passed since the last one
    (beside every stage's checkpoint_every steps), so a preempted job loses at most that."""
    strategy: Literal["auto", "single", "ddp", "fsdp"] = "auto"
    micro_batch: int | None = ranged(None, ge=1)
    activation_checkpointing: bool = False
    loader_workers: int = ranged(0, ge=0, le=64)
    prefetch_steps: int = ranged(2, ge=1, le=64)
    checkpoint_minutes: float | None = ranged(None, gt=0)


@dataclass(frozen=True)
class RunConfig:
    name: str
    model: ModelConfig
    data: DataConfig
    stages: list[StageConfig]
    eval: EvalConfig
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["no", "bf16", "fp16"] = "no"
    parallel: ParallelConfig = field(default_factory=ParallelConfig, metadata=ADDED_OPTION)

    def to_dict(self) -> dict:
        out = to_plain(self)
        out["model"] = self.model.to_dict()
        return out

    @property
    def key(self) -> str:
        """Identity: the hash of the resolved content, not of the name or the hardware."""
        return content_hash({k: v for k, v in self.to_dict().items()
                             if k not in ("name", "parallel")})


def device_problem(device: str) -> str | None:
    """Why `device` cannot run on this machine (None: it can). `cuda` never falls back to the
    CPU silently: a run meant for GPUs that trains on a CPU is days of wasted queue time."""
    import torch
    if device == "cuda" and not torch.cuda.is_available():
        import os
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return ("device: cuda, but this machine has no GPU visible to torch"
                + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
                + "; run it where there is one (--executor slurm with a GPU profile), or set "
                  "device: cpu or auto")
    return None


def content_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_run_config(src: Located, check_files: bool = True) -> RunConfig:
    """check_files=False (planning on a machine without the data) skips the checks that data
    and benchmark files exist; everything else is validated."""
    cfg = bind(RunConfig, src.data, src, "")
    cfg = dataclasses.replace(cfg, data=_absolute_paths(cfg.data, src),
                              eval=_absolute_sources(cfg.eval, src),
                              model=_pinned_fusion_files(cfg.model, src))
    validate(cfg, src, check_files)
    return dataclasses.replace(cfg, stages=[s for s in cfg.stages if s.enabled])


def _absolute_sources(ev: EvalConfig, src: Located) -> EvalConfig:
    def fix(name: str, attr: str) -> str | None:
        value = getattr(ev.sources[name], attr)
        if value is None:
            return None
        where = Path(src.file_of(f"eval.sources.{name}.{attr}")).parent
        return str((where / Path(value).expanduser()).resolve())
    return dataclasses.replace(ev, sources={
        name: BenchmarkSource(fix(name, "questions"), fix(name, "images"))
        for name in ev.sources})


def _pinned_fusion_files(model: ModelConfig, src: Located) -> ModelConfig:
    """A fusion option naming a file (MoVA's routing `labels`) is made absolute against the
    file that wrote it, and the file's content hash is recorded next to it, so a run's key
    changes when the file does."""
    options = model.fusion.options
    path = getattr(options, "labels", None)
    if not path:
        return model
    resolved = (Path(src.file_of("model.fusion.labels")).parent / Path(path).expanduser())
    if not resolved.is_file():
        raise src.error("model.fusion.labels", f"file not found: {resolved.resolve()}")
    digest = hashlib.sha256(resolved.read_bytes()).hexdigest()[:16]
    pinned = dataclasses.replace(options, labels=str(resolved.resolve()), labels_sha256=digest)
    return dataclasses.replace(model, fusion=FusionSpec(model.fusion.id, pinned))


def load_run_config(path: str | Path) -> RunConfig:
    return parse_run_config(load_yaml(path))


def _absolute_paths(data: DataConfig, src: Located) -> DataConfig:
    """Relative data paths are relative to the file that wrote them (a run config, or a spec
    overriding its base); the resolved config holds them absolute so a run does not depend on
    the directory it was started from."""
    def fix(part: str) -> DatasetRef | None:
        ref = getattr(data, part)
        if ref is None:
            return None
        return DatasetRef(*(str((Path(src.file_of(f"data.{part}.{attr}")).parent
                                 / Path(getattr(ref, attr)).expanduser()).resolve())
                            for attr in ("json", "images")), samples=ref.samples)
    return dataclasses.replace(data, align=fix("align"), sft=fix("sft"), eval=fix("eval"))


def _check_id(src: Located, path: str, registry, name: str) -> None:
    if name not in registry:
        raise src.error(path, str(UnknownIdError(registry.kind, name, registry.names())))


def validate(cfg: RunConfig, src: Located, check_files: bool = True) -> None:
    """Everything that can be checked before work starts; raises ConfigError."""
    from harness.modelbuild import ExpertBuildError, build_architecture

    names = [e.key for e in cfg.model.experts]
    if not names:
        raise src.error("model.experts", "at least one expert is required")
    for i, expert in enumerate(cfg.model.experts):
        _check_id(src, f"model.experts[{i}].id", EXPERTS, expert.id)
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
    _validate_eval(cfg.eval, src, check_files)
    _validate_data(cfg, src, check_files)
    arch = content_hash(architecture_dict(cfg.model))
    if arch not in _BUILDS_ON_META:  # a grid repeats few architectures; build each once
        try:
            _, fusion = build_architecture(cfg.model, meta=True)
        except FusionOptionError as exc:
            where = f"model.fusion.{exc.option}" if exc.option else "model.fusion"
            raise src.error(where, str(exc)) from None
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


def _blame(message: str, cfg: RunConfig) -> str:
    """Point an architecture error at the expert it names, else at the fusion."""
    for i, e in enumerate(cfg.model.experts):
        if f"'{e.key}'" in message or f"'{e.id}'" in message:
            return f"model.experts[{i}]"
    return "model.fusion"


def _validate_eval(ev: EvalConfig, src: Located, check_files: bool) -> None:
    from harness.evaluation.benchmarks import BENCHMARKS
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
    if check_files:
        for name, source in ev.sources.items():
            for attr in ("questions", "images"):
                value = getattr(source, attr)
                if value is not None and not Path(value).exists():
                    raise src.error(f"eval.sources.{name}.{attr}", f"not found: {value}")


def _validate_data(cfg: RunConfig, src: Located, check_files: bool = True) -> None:
    from harness.evaluation.benchmarks import BENCHMARKS
    d = cfg.data
    needed = {s.data for s in cfg.stages if s.enabled}
    if any(not BENCHMARKS.get(b).needs_source for b in cfg.eval.benchmarks):
        needed.add("eval")  # the synthetic benchmarks' questions live in the eval data
    if d.synthetic is None:
        for part in sorted(needed):
            if getattr(d, part) is None:
                raise src.error(f"data.{part}", "required when `data.synthetic` is not given")
    else:
        from harness.data.synthetic import SKILLS
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
        from harness.data.llava import check_llava_file
        from harness.errors import DataError
        try:   # a malformed file fails here, before any run directory or job exists
            count = check_llava_file(ref.json)
        except DataError as exc:
            raise src.error(f"data.{part}.json", str(exc)) from None
        if ref.samples is not None and ref.samples != count:
            raise src.error(f"data.{part}.samples", f"states {ref.samples} records; "
                            f"{ref.json} has {count}")
