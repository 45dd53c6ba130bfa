"""What a run will cost, known before it runs: visual tokens, parameters and training compute,
from the architecture built on the meta device (no weights, no memory).

Training compute per sample is 3x the forward FLOPs of every trained part and 1x of the frozen
vision side; the vision side is counted by torch's FlopCounterMode on a meta batch, the
projector and LLM as 2 x parameters x tokens, with the text part of each sample taken as
TEXT_TOKENS (a nominal length, stated in the plan). `ablate plan` sums this over the stages
still to train, counting a stage shared by several runs once."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from core.identity import content_hash
from harness.config.run_config import (
    RunConfig,
    StageConfig,
    architecture_dict,
    trainable_lrs,
)
from harness.planning.vision_memory import KeptForBackward, kept_for_backward
from models.builder import build_architecture
from models.llm import llm_config
from models.model_config import solo_config

TEXT_TOKENS = 64


@dataclass(frozen=True)
class ArchitectureCost:
    visual_tokens: int        # what the LM sees
    fused_tokens: int         # what the projector sees (more when it is downsampled after)
    vision_params: int        # experts + fusion
    vision_forward_flops: float
    projector_params: int | None
    llm_params: int | None    # None: the LLM's config is not available here
    part_params: dict[str, int] = dataclasses.field(default_factory=dict)  # experts.X, fusion


def _llm_shape(cfg: RunConfig) -> tuple[int | None, int | None]:
    hf = llm_config(cfg.model.llm)
    if hf is None:
        return None, None
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf)
    return sum(p.numel() for p in model.parameters()), hf.hidden_size


def _measure(cfg: RunConfig) -> ArchitectureCost:
    from models.projectors import build_projector
    experts, fusion = build_architecture(cfg.model, meta=True, read_files=False)
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter, torch.device("meta"):
            fusion.encode(experts, {name: torch.empty(1, 3, *e.input_size)
                                    for name, e in experts.items()})
        vision_flops = float(counter.get_total_flops())
    except RuntimeError:
        # a backend that reads a tensor's value on the way (transformers' Pix2Struct) cannot
        # run on meta: count its encoders as 2 x parameters x patch tokens instead
        vision_flops = float(sum(2 * sum(p.numel() for p in e.parameters())
                                 * math.prod(e.output_grid(e.layers[0]))
                                 for e in experts.values()))
    vision_params = sum(p.numel() for m in (*experts.values(), fusion) for p in m.parameters())
    llm_params, hidden = _llm_shape(cfg)
    projector_params = None
    if hidden is not None:
        with torch.device("meta"):
            projector = build_projector(cfg.model.projector, fusion.channels, hidden)
        projector_params = sum(p.numel() for p in projector.parameters())
    parts = {f"experts.{n}": sum(p.numel() for p in e.parameters()) for n, e in experts.items()}
    parts["fusion"] = sum(p.numel() for p in fusion.parameters())
    return ArchitectureCost(fusion.output_tokens, fusion.num_tokens, vision_params,
                            vision_flops, projector_params, llm_params, parts)


_MEASURED: dict[str, ArchitectureCost] = {}


def architecture_cost(cfg: RunConfig) -> ArchitectureCost:
    key = content_hash(architecture_dict(cfg.model))
    if key not in _MEASURED:
        _MEASURED[key] = _measure(cfg)
    return _MEASURED[key]


def stage_samples(cfg: RunConfig, stage: StageConfig) -> int | None:
    if stage.steps is not None:
        return stage.steps * stage.batch_size
    syn = cfg.data.synthetic
    if syn is not None:
        n = syn.captions if stage.data == "align" else \
            syn.train_per_skill * len(syn.skills) + syn.text_only
    else:
        ref = getattr(cfg.data, stage.data)
        if ref.samples is not None:
            n = ref.samples
        elif Path(ref.json).is_file():
            n = len(json.loads(Path(ref.json).read_text()))
        else:
            return None   # neither the file nor its stated size
    return int(stage.epochs * n)


def stage_flops(cfg: RunConfig, stage: StageConfig, expert: str | None = None
                ) -> float | None:
    """Training FLOPs of one stage (None when the LLM's size is unknown); of one expert's
    part of a per-expert stage when `expert` is given."""
    if expert is not None:
        lone = next(e for e in cfg.model.experts if e.key == expert)
        cfg = dataclasses.replace(cfg, model=solo_config(cfg.model, lone))
    cost = architecture_cost(cfg)
    samples = stage_samples(cfg, stage)
    if cost.llm_params is None or samples is None:
        return None
    trains = trainable_lrs(cfg.model.experts, stage)
    vision_factor = 3 if any(n.startswith("experts.") for n in trains) else 1
    tokens = cost.visual_tokens + TEXT_TOKENS
    per_sample = (vision_factor * cost.vision_forward_flops
                  + 3 * 2 * cost.projector_params * cost.fused_tokens
                  + 3 * 2 * cost.llm_params * tokens)
    return per_sample * samples


# bytes per value: what trains is fp32 (its gradient fp32, AdamW two fp32 moments)
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# activations a transformer layer keeps per token and hidden unit for its backward, in bf16
# with fused (SDPA) attention (Korthikanti et al. 2022: 34 s b h bytes without the a s^2 term)
_LAYER_ACTIVATION_BYTES = 34


_KEPT: dict[tuple, KeptForBackward] = {}


def vision_activation_bytes(cfg: RunConfig, stage: StageConfig) -> int:
    """Bytes per sample the stage's trained experts keep for backward (frozen ones keep
    nothing: no autograd record), with or without activation checkpointing as the run says
    (harness.planning.vision_memory)."""
    trained = {n.removeprefix("experts.") for n in trainable_lrs(cfg.model.experts, stage)
               if n.startswith("experts.")}
    if not trained:
        return 0
    dtype = torch.float32 if cfg.precision == "no" else torch.bfloat16
    arch = content_hash(architecture_dict(cfg.model))
    missing = [n for n in trained if (arch, n, dtype) not in _KEPT]
    if missing:
        experts, _ = build_architecture(cfg.model, meta=True, read_files=False)
        for name in missing:
            _KEPT[arch, name, dtype] = kept_for_backward(experts[name], dtype)
    return sum(_KEPT[arch, n, dtype].total(cfg.parallel.activation_checkpointing)
               for n in trained)


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-GPU memory of one stage, in GB: what `ablate plan` checks against the profile's GPU
    (an estimate: allocator fragmentation comes on top). Activations are the LLM's and the
    trained experts'."""
    strategy: str
    params: float
    grads: float
    optimizer: float
    activations: float
    gathered: float = 0.0     # FSDP: the unsharded parameters in flight

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations + self.gathered


def fsdp_gathered_bytes(cfg: RunConfig, hf, total_params: int, llm_trains: bool) -> float:
    """What FSDP holds unsharded on each rank besides its shards, in the compute dtype it
    gathers (harness.training.strategies): the root unit (everything outside the decoder
    layers: the vision side, the projector, embeddings and output layer) for the whole step,
    and two decoder layers at a time (the one computing and the one prefetched) when the LLM
    trains and layers are resharded after forward; every layer stays gathered when it is
    frozen (ZeRO-2)."""
    per_value = 4 if cfg.precision == "no" else 2
    layers = hf.num_hidden_layers
    h, i = hf.hidden_size, hf.intermediate_size
    kv = getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads
    head = h // hf.num_attention_heads
    layer = 2 * h * h + 2 * h * kv * head + 3 * h * i + 2 * h   # attention, MLP, two norms
    root = total_params - layers * layer
    return per_value * (root + (2 if llm_trains else layers) * layer)


def lora_params(hf, lora) -> int:
    """The adapters' size, rank x (in + out) per targeted linear layer of a Llama-shaped
    decoder (a target of another name is not counted: its shape is not known here)."""
    h, i = hf.hidden_size, hf.intermediate_size
    kv = getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads
    head = h // hf.num_attention_heads
    shapes = {"q_proj": (h, h), "k_proj": (h, kv * head), "v_proj": (h, kv * head),
              "o_proj": (h, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    per_layer = sum(lora.rank * sum(shapes[t]) for t in lora.targets if t in shapes)
    return per_layer * hf.num_hidden_layers


def _frozen_bytes_per_param(cfg: RunConfig, part: str) -> int:
    """A frozen part's bytes per parameter during a stage: as loaded (the LLM in its dtype,
    the vision side in fp32), or 2 under bf16/fp16 autocast with `frozen_weights: compute`
    (harness.training.frozen: nearly all of their parameters are Linear and Conv weights)."""
    loaded = _DTYPE_BYTES.get(cfg.model.llm.dtype, 4) if part == "llm" else 4
    if cfg.precision != "no" and cfg.parallel.frozen_weights == "compute":
        return min(loaded, 2)
    return loaded


def stage_memory(cfg: RunConfig, stage: StageConfig, ranks: int, expert: str | None = None
                 ) -> MemoryEstimate | None:
    """The stage on `ranks` GPUs with the run's `parallel` settings (None when the LLM's
    config is not readable here). A strategy that shards state (FSDP) divides parameters,
    gradients and optimizer state over the ranks and holds gathered ones besides; DDP and one
    rank hold them whole."""
    from harness.training import split
    from harness.training.strategies import pick
    if expert is not None:
        lone = next(e for e in cfg.model.experts if e.key == expert)
        cfg = dataclasses.replace(cfg, model=solo_config(cfg.model, lone))
    cost = architecture_cost(cfg)
    hf = llm_config(cfg.model.llm)
    if cost.llm_params is None or hf is None:
        return None
    total_params = cost.llm_params + cost.vision_params + (cost.projector_params or 0)
    strategy = pick(cfg.parallel.strategy, ranks, total_params)   # as the stage will
    shard = strategy.state_shards(ranks)
    sizes = {"llm": cost.llm_params, "projector": cost.projector_params or 0,
             **cost.part_params, "lora": lora_params(hf, stage.lora) if stage.lora else 0}
    trained = set(trainable_lrs(cfg.model.experts, stage))
    trainable = sum(n for name, n in sizes.items() if name in trained)
    frozen_bytes = sum(n * _frozen_bytes_per_param(cfg, name) for name, n in sizes.items()
                       if name not in trained)
    gb = 1024 ** 3
    micro, _ = split(stage, ranks, cfg.parallel.micro_batch)
    tokens = micro * (cost.visual_tokens + TEXT_TOKENS)
    layers, hidden = hf.num_hidden_layers, hf.hidden_size
    per_layer = _LAYER_ACTIVATION_BYTES * tokens * hidden
    kept = (layers * 2 * tokens * hidden + per_layer if cfg.parallel.activation_checkpointing
            else layers * per_layer)
    logits = 2 * 4 * tokens * hf.vocab_size   # fp32 logits and their gradient
    vision = micro * vision_activation_bytes(cfg, stage)
    gathered = (fsdp_gathered_bytes(cfg, hf, total_params, "llm" in trained)
                if shard > 1 else 0.0)
    return MemoryEstimate(strategy.name, (4 * trainable + frozen_bytes) / shard / gb,
                          4 * trainable / shard / gb, 8 * trainable / shard / gb,
                          (kept + logits + vision) / gb, gathered / gb)
