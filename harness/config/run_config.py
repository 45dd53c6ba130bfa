"""The run config's types: one fully resolved training + evaluation run (a model, as
models.model_config types it, and data, stages, evaluation, parallelism), its identity
(`RunConfig.key`), and the pure transforms of it the run needs (the architecture's hashed
form, a stage's learning rates). Reading and validating YAML into these types is
harness.specs.run_file."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from core.contained import SAFE_NAME
from core.fields import ranged
from core.identity import ADDED_OPTION, content_hash, earlier_default, to_plain, written
from models.experts import ExpertConfig
from models.fusion import FUSIONS
from models.model_config import ModelConfig


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
    epoch-based stage before the file is on this machine; the loaded file must agree.
    `content` is not written by users: reading the config fills it with the fingerprints of
    the JSON and of the images its records name (harness.data.fingerprints), and a run's key
    holds those instead of the paths (identity_form)."""
    json: str
    images: str
    samples: int | None = ranged(None, ge=1, metadata=ADDED_OPTION)
    content: dict[str, str] = field(default_factory=dict, metadata=ADDED_OPTION)


@dataclass(frozen=True)
class DataConfig:
    """image_aspect_ratio: how an image reaches each expert, in training and evaluation
    alike: `processor` (the default) as each expert's own library preprocesses it for its
    checkpoint (shortest side and centre crop, timm's crop_pct, SAM's longest side and
    bottom-right zeros; models.experts.pixels); `pad` first pads it to a square with the
    expert's mean colour and resizes (LLaVA-1.5's and Eagle's `image_aspect_ratio: pad`);
    `resize` stretches it to the expert's input. Runs keyed before `processor` existed were
    `resize` runs and keep their keys; `processor` runs get their own.
    bad_images: what training does with a record whose image does not decode."""
    synthetic: SyntheticData | None = None
    align: DatasetRef | None = None
    sft: DatasetRef | None = None
    eval: DatasetRef | None = None
    image_aspect_ratio: Literal["processor", "pad", "resize"] = field(
        default="processor", metadata=earlier_default("resize"))
    # a record whose image does not decode: `fail` stops the stage with its id and file;
    # `skip` leaves such records out of training (harness.data.image_check decodes every
    # image first) and counts them in the stage's record
    bad_images: Literal["fail", "skip"] = field(default="fail", metadata=ADDED_OPTION)


TRAINABLE_GROUPS = ("projector", "fusion", "llm", "experts", "lora", "router")

# LLaVA-1.5's LoRA recipe targets every linear layer of the LLM (r 128, alpha 256); these are
# a Llama decoder layer's
LLAMA_LINEAR_LAYERS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                       "down_proj"]


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapters on the LLM for one stage (peft): `train: [lora, ...]` trains them, with
    the stage's lr or `lrs.lora`; the LLM's own weights stay frozen unless `llm` is listed
    too. When the stage ends they are merged into the LLM (models.lora.fold)."""
    rank: int = ranged(8, ge=1)
    alpha: float = ranged(16.0, gt=0)
    dropout: float = ranged(0.05, ge=0, lt=1)
    targets: list[str] = ranged(default_factory=lambda: list(LLAMA_LINEAR_LAYERS), min_items=1)


@dataclass(frozen=True)
class StageConfig:
    """One training stage. `train` lists module groups: projector, fusion, llm, experts (every
    expert whose `freeze` is false), experts.NAME (that expert), lora (the stage's LoRA
    adapters on the LLM, given by `lora`: LoraSpec) or router (MoVA's routing LoRA, trained
    by a `task: route` stage). `lrs` overrides the stage lr
    per group; an expert's own `lr` applies when no `lrs` entry names it.

    per_expert (Eagle's pre-alignment): the stage trains each expert alone, with a projector
    of its own and the LLM frozen, before the experts are combined; `train` may list only
    `projector` and `experts` (each expert is trained whatever its `freeze`, which governs the
    joint stages). Its key depends on that one expert only, so every combination containing
    the expert reuses it; the expert's weights carry on, its projector is dropped. Per-expert
    stages come before the joint ones. enabled: false drops the stage (an axis can toggle it).
    """
    name: str = ranged(pattern=SAFE_NAME)   # names its folder WORKDIR/stages/NAME-KEY
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
    lora: LoraSpec | None = field(default=None, metadata=ADDED_OPTION)
    # `answer`, or the task of a pass before answering (harness.evaluation.passes, a layer
    # above, so the ids are written here; tests/test_llm_router.py checks they agree).
    # `route`: the stage trains MoVA's LLM router (fusion `router: llm`) to name the experts
    # the routing labels list for each of its data's samples, on the base encoder's tokens
    # and the instruction; `train` is [router], the routing LoRA
    task: Literal["answer", "route"] = field(default="answer", metadata=ADDED_OPTION)

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
    and its image folder (None where images are inside: MME, MMBench's TSV). `content`: their
    fingerprints, filled when the config is read (as DatasetRef's)."""
    questions: str
    images: str | None = None
    content: dict[str, str] = field(default_factory=dict, metadata=ADDED_OPTION)


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
    GPUs is reused by a spec run on 4): strategy `auto` or a registered strategy's id
    (harness.training.strategies; checked when the config is read), micro_batch (samples
    per rank and forward; None: the stage's batch over the ranks, no accumulation),
    activation checkpointing on the LLM's decoder layers; loader_workers: processes per
    rank that decode and resize images ahead of the step (0: in the training process),
    prefetch_steps: steps each worker prepares ahead; checkpoint_minutes: also checkpoint
    when this long has passed since the last one (beside every stage's checkpoint_every
    steps), so a preempted job loses at most that;
    frozen_weights: `compute` holds a stage's frozen Linear and Conv weights in the run's
    compute dtype while it trains under bf16/fp16 autocast (the same numbers, half the
    memory: harness.training.frozen), `as_loaded` keeps them as they were loaded;
    deterministic: deterministic kernels (bit-for-bit repeatable, slower on a GPU, where torch
    also fills new tensors with NaN); unset: on for a CPU run, off on CUDA
    (harness.training.kernels)."""
    strategy: str = "auto"
    micro_batch: int | None = ranged(None, ge=1)
    activation_checkpointing: bool = False
    loader_workers: int = ranged(0, ge=0, le=64)
    prefetch_steps: int = ranged(2, ge=1, le=64)
    checkpoint_minutes: float | None = ranged(None, gt=0)
    frozen_weights: Literal["compute", "as_loaded"] = "compute"
    deterministic: bool | None = None


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
        """The written form (config.json/.yaml, MLflow): reads back to this config."""
        return {**written(self), "model": self.model.to_dict()}

    @property
    def key(self) -> str:
        """Identity: the hash of the resolved content, not of the name, the hardware or where
        the data lies (identity_form)."""
        return content_hash(identity_form(self.hashed()))

    def hashed(self) -> dict:
        """The plain form keys hash: earlier defaults left out (core.identity), unlike the
        written form (to_dict)."""
        return {**to_plain(self), "model": self.model.to_dict()}

    @property
    def lineage(self) -> str:
        """The key with every data source's content left out: the runs of one config over
        different data share it (how `status` finds the run this one replaces)."""
        return content_hash(identity_form(self.hashed(), masked=True))


DATASET_FIELDS = ("json", "images")
BENCHMARK_FIELDS = ("questions", "images")


def source_refs(plain: dict) -> Iterator[tuple[str, dict, tuple[str, ...]]]:
    """(name, plain source, its path fields) of every data source of a config's plain form:
    `sft`, `eval`, `benchmark gqa`, ..."""
    data = plain.get("data") or {}
    for part in ("align", "sft", "eval"):
        if isinstance(data.get(part), dict):
            yield part, data[part], DATASET_FIELDS
    for name, source in sorted(((plain.get("eval") or {}).get("sources") or {}).items()):
        if isinstance(source, dict):
            yield f"benchmark {name}", source, BENCHMARK_FIELDS


def source_identity(plain_ref: dict, fields: tuple[str, ...]) -> dict:
    """A data source as a key holds it: each path replaced by its content's fingerprint where
    the config has one (a plan on a machine without the data keeps the path)."""
    content = plain_ref.get("content") or {}
    out = {k: v for k, v in plain_ref.items() if k != "content"}
    for f in fields:
        if f in content:
            out[f] = {"content": content[f]}
    return out


def identity_form(plain: dict, masked: bool = False) -> dict:
    """A run config's plain form (RunConfig.to_dict, or a run directory's config.json) as its
    key hashes it: without the name and the hardware, each data source by its content, and a
    fusion file pinned by its hash without its path. `masked`: each data source by its name
    alone (RunConfig.lineage). Configs without data files (synthetic data) hash as before."""
    out = copy.deepcopy({k: v for k, v in plain.items() if k not in ("name", "parallel")})
    for name, ref, fields in source_refs(out):
        identity = source_identity(ref, fields)
        if masked:
            identity = {k: v for k, v in identity.items() if k not in fields}
            identity["source"] = name
        ref.clear()
        ref.update(identity)
    if isinstance(out.get("model"), dict):
        out["model"] = model_identity(out["model"], masked)
    return out


def model_identity(model: dict, masked: bool = False) -> dict:
    """A model's plain form (ModelConfig.to_dict, architecture_dict) as keys hash it: a fusion
    file (Fusion.file_options: MoVA's routing labels) by its content hash where it was pinned,
    not by its path; `masked`: by neither."""
    fusion = model.get("fusion")
    if not isinstance(fusion, dict) or fusion.get("id") not in FUSIONS.names():
        return model
    hidden = set()
    for option in FUSIONS.get(fusion["id"]).file_options:
        pin = f"{option}_sha256"
        if fusion.get(pin) or masked:
            hidden |= {option, pin} if masked else {option}
    if not hidden:
        return model
    return {**model, "fusion": {k: v for k, v in fusion.items() if k not in hidden}}


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
