"""One full-scale run config -> its rehearsal: the mechanical shrink. Only sizes change:

- each expert becomes a random-init stand-in of its own family and preset (same backend
  class, depth, patch or stride, layer requests; width 32), at the spec's scaled geometry
  (harness.rehearsal.geometry);
- fusion grid options scale the same way; every other fusion option stays;
- the LLM becomes a tiny random-init model of its architecture, with a locally trained
  tokenizer that behaves as the real one (Vicuna/Llama-2: sentencepiece-style), in its dtype;
- the datasets and benchmark files become the generated ones (harness.rehearsal.generated_data);
- every stage keeps its recipe with its steps capped and its batch made small; evaluation
  keeps its benchmarks, likelihood answers and template with small batches;
- the device becomes this machine's CPU.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError
from core.fields import grid_sides
from harness.config.run_config import BenchmarkSource, DatasetRef, RunConfig
from harness.config.yamlio import Located
from harness.rehearsal.generated_data import FUSION_FILE_WRITERS
from harness.rehearsal.geometry import ExpertGeometry, GridScale
from harness.specs.run_file import parse_run_config
from models.experts import ExpertConfig
from models.experts.base import StandIn
from models.fusion import FUSIONS
from models.llm import LLMConfig, llm_config
from models.model_config import FusionSpec

EXPERT_WIDTH = 32


@dataclass(frozen=True)
class Sizes:
    """What a rehearsal caps: steps and batch of each stage, evaluation batch and answer
    length, and the tiny LLM."""
    steps: int = 2
    batch_size: int = 2
    eval_batch_size: int = 8
    max_new_tokens: int = 8
    llm_hidden: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    llm_vocab: int = 512


def tiny_llm(llm: LLMConfig, max_length: int, sizes: Sizes) -> LLMConfig:
    """A random-init stand-in of the LLM's own architecture: a Llama for Vicuna and Llama-3
    (their configs are read without the hub where known), with the tokenizer style of the
    real one (Vicuna / Llama-2: sentencepiece-style; Llama-3: byte-level BPE)."""
    if llm.id == "tiny-llama":
        return dataclasses.replace(llm, max_positions=max(llm.max_positions, max_length))
    real = llm_config(llm)
    kind = getattr(real, "model_type", None)
    if kind != "llama":
        raise ConfigError(f"the rehearsal has a stand-in for Llama-architecture LLMs only; "
                          f"'{llm.path}' is {kind or 'unreadable without the hub'}",
                          field="model.llm.path")
    style = "llama" if real.vocab_size <= 64000 else "byte-level"   # Llama-3: 128256
    return LLMConfig(id="tiny-llama", hidden_size=sizes.llm_hidden, layers=sizes.llm_layers,
                     heads=sizes.llm_heads, intermediate_size=2 * sizes.llm_hidden,
                     vocab_size=sizes.llm_vocab, max_positions=max_length, dtype=llm.dtype,
                     tokenizer=style)


def stand_in(expert: ExpertConfig, geo: ExpertGeometry, scale: GridScale) -> ExpertConfig:
    return dataclasses.replace(
        expert, pretrained=None, resolution=scale(geo.grid) * geo.reduction,
        stand_in=StandIn(scale(geo.native_grid) * geo.reduction, EXPERT_WIDTH))


def shrink_fusion(fusion: FusionSpec, scale: GridScale) -> FusionSpec:
    options = fusion.options
    if options is None:
        return fusion
    changed = {name: scale(side) for name, side in grid_sides(options).items()}
    return FusionSpec(fusion.id, dataclasses.replace(options, **changed))


def with_rehearsal_files(fusion: FusionSpec, experts: list[str],
                         training: dict[str, tuple[Path, Path]], where: Path) -> FusionSpec:
    """The fusion's option files (Fusion.rehearsal_files: MoVA's routing labels) written anew
    for the rehearsal's fine-tuning samples (the real ones name other ids), unpinned: the
    rehearsal's own config pins them when it is read."""
    wanted = FUSIONS.get(fusion.id).rehearsal_files(fusion.options, experts)
    if not wanted or "sft" not in training:
        return fusion
    options = fusion.options
    for option, (kind, names) in wanted.items():
        path = FUSION_FILE_WRITERS[kind](where / "data", training["sft"][0], names)
        pin = f"{option}_sha256"
        options = dataclasses.replace(options, **{option: str(path)},
                                      **({pin: None} if hasattr(options, pin) else {}))
    return FusionSpec(fusion.id, options)


def shrink(cfg: RunConfig, scale: GridScale, geometry: dict[str, ExpertGeometry],
           training: dict[str, tuple[Path, Path]], benchmarks: dict[str, tuple[Path, Path | None]],
           sizes: Sizes, where: Path) -> RunConfig:
    """The rehearsal of `cfg`, validated as any run config is (on the meta device)."""
    experts = [stand_in(e, geometry[repr(e)], scale) for e in cfg.model.experts]
    fusion = with_rehearsal_files(shrink_fusion(cfg.model.fusion, scale),
                                  [e.key for e in cfg.model.experts], training, where)
    model = dataclasses.replace(cfg.model, experts=experts, fusion=fusion,
                                llm=tiny_llm(cfg.model.llm, cfg.model.max_length, sizes))
    data = cfg.data
    if data.synthetic is None:
        data = dataclasses.replace(data, **{
            part: DatasetRef(str(training[part][0]), str(training[part][1]))
            for part in ("align", "sft") if getattr(data, part) is not None})
    stages = [dataclasses.replace(s, steps=sizes.steps, epochs=None,
                                  batch_size=min(s.batch_size, sizes.batch_size),
                                  checkpoint_every=min(s.checkpoint_every, sizes.steps))
              for s in cfg.stages]
    sources = {name: BenchmarkSource(str(benchmarks[name][0]),
                                     str(benchmarks[name][1]) if benchmarks[name][1] else None)
               for name in cfg.eval.sources}
    ev = dataclasses.replace(cfg.eval, sources=sources,
                             batch_size=min(cfg.eval.batch_size, sizes.eval_batch_size),
                             max_new_tokens=min(cfg.eval.max_new_tokens, sizes.max_new_tokens))
    # a spec that accumulates micro-batches still does, over the rehearsal's few samples
    parallel = (dataclasses.replace(cfg.parallel, micro_batch=1)
                if cfg.parallel.micro_batch is not None else cfg.parallel)
    small = dataclasses.replace(cfg, model=model, data=data, stages=stages, eval=ev,
                                device="cpu", parallel=parallel)
    # validated as any run config is: the stand-ins built on meta, the files checked
    return parse_run_config(Located(small.to_dict(), {}, str(where / "rehearsal.yaml")))
