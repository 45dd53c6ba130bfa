"""What one GPU does at paper scale: throughput, MFU and peak memory of the harness's training
step, whether `ablate plan`'s memory estimate holds, and whether the loader keeps up.

    python benchmarks/gpu_scale.py [--out gpu_scale.json] [--steps 6] [--peak-tflops F]
    python benchmarks/gpu_scale.py --cpu     # the scaled-down version (tested on every CI run)

On a GPU it measures, through the harness's own model assembly (models.builder), stage
preparation (harness.training.strategies: Strategy.prepare, fp32 trainables, frozen weights
held in bf16, activation checkpointing of the LLM and of every trained expert), optimizer and
step (harness.training.loop.optimizer_step, bf16 autocast):

1. stage 2: CLIP-L/14-336 + a random-init Llama shaped as Vicuna-7B, LLM and projector
   trained, micro-batch 16 of one <image> (576 visual tokens) and 128 text tokens: tokens/s,
   MFU against the GPU's dense bf16 peak, peak memory; if the whole 7B does not fit one GPU,
   half the decoder layers (a per-layer cost, so MFU carries over; the layers are reported);
2. stage 1: the same with the LLM frozen, projector trained, micro-batch 32;
3. Eagle's base at its shapes (CLIP-448 and ConvNeXt-XXL at 1024 trained with the LLM,
   channel concatenation, 1024 visual tokens): one training step's measured peak memory
   beside `ablate plan`'s estimate for the same configuration (harness.planning.estimate);
4. Eagle X5's vision side: CLIP-448, ConvNeXt-XXL, EVA-02-L, Pix2Struct and SAM-L at 1024,
   frozen, bf16 forward, micro-batch 16 (ConvNeXt-XXL through timm, the same network as
   open_clip's, since a GPU node may lack open_clip);
5. the loader (harness.training.loader with the run's Collator): samples/s at Eagle X5's
   resolutions with 0, 4 and 8 workers on COCO-sized JPEGs, against the samples/s the stage-2
   step consumes (a CLIP-only step, faster than X5's, so the stricter bar); images padded to
   a square as Eagle's `image_aspect_ratio: pad`, or `--aspect processor` / `resize`.

The LLM's input is checked on every step: its length is the visual tokens plus the text, so
an image whose placeholder went missing cannot pass for a cheap step. Model FLOPs (MFU
excludes activation recomputation): a decoder of L layers, width d and N non-embedding
parameters over a sequence of S tokens costs per token 6N + 12LdS when it trains and
4N + 12LdS when it is frozen but back-propagated through (attention's backward reads two
activations, so it costs twice its forward either way; PaLM's accounting, as torchtitan);
the vision side's forward is counted by torch's FlopCounterMode (attention included).

One process times one GPU: with the single strategy, no FSDP communication, an upper bound on
what the plan's FSDP ranks reach. The report is written after each section, so a crash keeps
what came before. Imports only torch, timm, transformers and the harness (no open_clip,
mlflow, optuna or submitit), so it runs on a bare GPU node.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from core.identity import to_plain
from harness.config.run_config import ParallelConfig, RunConfig, StageConfig
from harness.config.yamlio import load_yaml
from harness.data.batching import ASPECT_RATIOS, Collator, ImageTransform
from harness.data.llava import Conversation
from harness.planning.estimate import TEXT_TOKENS, stage_memory
from harness.specs.run_file import parse_run_config
from harness.training.distributed import World
from harness.training.loader import StepBatches, step_batches, step_order
from harness.training.memory import release
from harness.training.step_probe import (
    LLMInputLength,
    TrainingStep,
    placeholder_batch,
    random_llama,
)
from models.builder import assemble
from models.experts import EXPERTS, ExpertConfig, build_expert
from models.experts.base import StandIn
from models.fusion.concat import SequenceAppendOptions
from models.llm import LLMConfig, train_tokenizer
from models.model_config import FusionSpec, ModelConfig
from models.templates import TEMPLATES

EAGLE_BASE = Path(__file__).resolve().parent.parent / "experiments" / "bases" / "eagle.yaml"

# dense bf16 tensor-core peaks (vendor datasheets), TFLOP/s
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0,
                    "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10": 125.0}


@dataclass(frozen=True)
class Scale:
    """The shapes one measurement uses: the paper's on a GPU, a CPU-sized copy otherwise."""
    llm: LLMConfig
    clip: ExpertConfig
    x5: tuple[ExpertConfig, ...]
    eagle: tuple[ExpertConfig, ...]   # Eagle's base: trained CLIP-448 and ConvNeXt-XXL
    eagle_grid: int
    eagle_layers: int                 # LLM layers in the Eagle step (the memory check)
    eagle_micro: int
    text_tokens: int
    micro_stage2: int
    micro_stage1: int
    image_side: tuple[int, int]       # the JPEGs the loader decodes (COCO-sized on a GPU)

    @classmethod
    def paper(cls) -> Scale:
        vicuna = LLMConfig(hidden_size=4096, layers=32, heads=32, intermediate_size=11008,
                           vocab_size=32000, max_positions=4096, dtype="bfloat16")
        clip448 = ExpertConfig("clip-vit-hf", "large-336", name="clip", resolution=448)
        return cls(vicuna, ExpertConfig("clip-vit-hf", "large-336", layers=[-2]),
                   (clip448,
                    ExpertConfig("convnext", "xxlarge", name="convnext", layers=[3]),
                    ExpertConfig("eva02", "large-1024", name="eva02"),
                    ExpertConfig("pix2struct", "large", name="pix2struct", resolution=1024),
                    ExpertConfig("sam", "large", name="sam")),
                   (replace(clip448, layers=[-2], freeze=False),
                    ExpertConfig("convnext", "xxlarge", name="convnext", resolution=1024,
                                 layers=[-1], freeze=False)),
                   eagle_grid=32, eagle_layers=16, eagle_micro=8,
                   text_tokens=128, micro_stage2=16, micro_stage1=32, image_side=(640, 480))

    @classmethod
    def cpu(cls) -> Scale:
        tiny = LLMConfig(hidden_size=64, layers=2, heads=4, intermediate_size=128,
                         vocab_size=512, max_positions=512, dtype="bfloat16")

        def small(cfg: ExpertConfig, side: int) -> ExpertConfig:
            return replace(cfg, resolution=side, stand_in=StandIn(side))
        paper = cls.paper()
        return cls(tiny, small(paper.clip, 56),
                   tuple(small(e, 56 if e.name == "clip" else 128) for e in paper.x5),
                   (small(paper.eagle[0], 56), small(paper.eagle[1], 128)),
                   eagle_grid=4, eagle_layers=2, eagle_micro=2,
                   text_tokens=16, micro_stage2=2, micro_stage1=4, image_side=(160, 120))


def _non_embedding(module: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in module.named_parameters()
               if "embed_tokens" not in n and "lm_head" not in n)


def forward_flops(fn) -> float:
    """FLOPs of one call of `fn`, counted by torch (matrix products, convolutions and
    attention kernels)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return float(counter.get_total_flops())


def _peak_tflops(override: float | None) -> float | None:
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _free(device: torch.device) -> None:
    """What the last measurement held given back, and the peak counted from here."""
    release(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 1024 ** 3 if device.type == "cuda" else None


def _timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _parallel() -> ParallelConfig:
    return ParallelConfig(strategy="auto", activation_checkpointing=True)


def measure_stage(scale: Scale, stage: int, layers: int, steps: int, warmup: int,
                  device: torch.device, peak: float | None) -> dict:
    """Stage 2 trains projector + LLM (fp32 masters, bf16 compute, checkpointed decoder
    layers); stage 1 the projector, through the frozen (still checkpointed) LLM."""
    llm = random_llama(scale.llm, layers, device)
    # LLaVA-1.5's context (2048): the default 512 would cut 576 visual + 128 text tokens
    model_cfg = ModelConfig(experts=[scale.clip], llm=replace(scale.llm, layers=layers),
                            fusion=FusionSpec("sequence_append", SequenceAppendOptions()),
                            max_length=2048)
    with device:
        model = assemble(model_cfg, seed=0, llm=llm)
    model.to(device)
    micro = scale.micro_stage2 if stage == 2 else scale.micro_stage1
    batch = placeholder_batch(model, micro, scale.text_tokens, scale.llm.vocab_size, device)
    train = ["projector", "llm"] if stage == 2 else ["projector"]
    spec = StageConfig(name=f"stage{stage}", data="sft", train=train, lr=2e-5, steps=1,
                       batch_size=micro)
    visual = model.fusion.output_tokens
    seq = visual + scale.text_tokens - 1           # the placeholder becomes the visual tokens
    clip = next(iter(model.experts.values()))
    vision_flops = forward_flops(lambda: clip(batch["pixels"][next(iter(model.experts))][:1]))
    with TrainingStep(model, spec, _parallel(), World.single(device), batch) as step:
        seen = LLMInputLength(step.model.llm)
        seconds = _timed(step, steps, warmup, device)
        seen.check(seq)
    n_llm, d = _non_embedding(model.llm), scale.llm.hidden_size
    attention = 12 * layers * d * seq
    per_token = (6 * n_llm if stage == 2 else 4 * n_llm) + attention
    projector = sum(p.numel() for p in model.projector.parameters())
    flops = micro * (per_token * seq + vision_flops + 6 * projector * visual)
    return {"stage": stage, "llm_layers": layers, "micro_batch": micro, "sequence": seq,
            "visual_tokens": visual, "llm_input_checked": True, "ranks": 1,
            "strategy": step.strategy.name,
            "step_s": seconds, "samples_s": micro / seconds, "tokens_s": micro * seq / seconds,
            "model_tflops_per_step": flops / 1e12, "achieved_tflops": flops / seconds / 1e12,
            "mfu": (flops / seconds / 1e12 / peak) if peak else None,
            "peak_memory_gb": _peak_gb(device)}


def measure_stage_fitting(scale: Scale, stage: int, steps: int, warmup: int,
                          device: torch.device, peak: float | None) -> dict:
    """measure_stage with the full LLM, or with half its layers (repeatedly) when it does not
    fit this one GPU."""
    layers = scale.llm.layers
    while True:
        _free(device)
        try:
            return measure_stage(scale, stage, layers, steps, warmup, device, peak)
        except torch.OutOfMemoryError:
            if layers <= 1:
                raise
            layers //= 2


def eagle_config(scale: Scale) -> RunConfig:
    """Eagle's base run at `scale`: its stages, precision and parallel settings as the spec
    says, random-init experts (ConvNeXt-XXL through timm), a Vicuna-shaped LLM of
    `eagle_layers` layers and micro-batch `eagle_micro` on one rank."""
    src = load_yaml(EAGLE_BASE)
    model = src.data["model"]
    model["experts"] = [to_plain(e) for e in scale.eagle]
    model["llm"] = to_plain(replace(scale.llm, layers=scale.eagle_layers))
    model["fusion"] = {"id": "channel_concat", "grid": scale.eagle_grid}
    src.data["parallel"].update(strategy="single", micro_batch=scale.eagle_micro)
    return parse_run_config(src, check_files=False)


def measure_eagle_memory(scale: Scale, steps: int, device: torch.device) -> dict:
    """Eagle's fine-tuning stage on one GPU: `ablate plan`'s per-GPU estimate against the
    peak one training step allocates (from an empty GPU: model, optimizer, activations)."""
    cfg = eagle_config(scale)
    stage = next(s for s in cfg.stages if s.name == "sft")
    estimate = stage_memory(cfg, stage, ranks=1)
    _free(device)
    llm = random_llama(scale.llm, scale.eagle_layers, device)
    with device:
        model = assemble(cfg.model, seed=0, llm=llm)
    model.to(device)
    batch = placeholder_batch(model, scale.eagle_micro, TEXT_TOKENS, scale.llm.vocab_size,
                              device)
    with TrainingStep(model, stage, cfg.parallel, World.single(device), batch) as step:
        seen = LLMInputLength(step.model.llm)
        seconds = _timed(step, steps, 0, device)
        seen.check(model.fusion.output_tokens + TEXT_TOKENS - 1)
        measured = _peak_gb(device)
    est = {k: getattr(estimate, k) for k in ("params", "grads", "optimizer", "activations")}
    return {"llm_layers": scale.eagle_layers, "micro_batch": scale.eagle_micro,
            "visual_tokens": model.fusion.output_tokens, "step_s": seconds,
            "estimate_gb": {**est, "total": estimate.total}, "measured_peak_gb": measured,
            "measured_over_estimate": (measured / estimate.total) if measured else None}


def measure_x5_vision(scale: Scale, steps: int, warmup: int, device: torch.device,
                      peak: float | None) -> dict:
    """Eagle X5's five experts, frozen, bf16: a forward of micro_stage2 images each."""
    out = {}
    for cfg in scale.x5:
        _free(device)
        try:
            with device:
                expert = build_expert(cfg).to(device=device, dtype=torch.bfloat16)
            pixels = torch.randn(scale.micro_stage2, 3, *expert.input_size, device=device,
                                 dtype=torch.bfloat16)

            @torch.no_grad()
            def forward(expert=expert, pixels=pixels):
                expert(pixels)
            flops = forward_flops(forward)
            seconds = _timed(forward, steps, warmup, device)
            out[cfg.key] = {"input": list(expert.input_size), "step_s": seconds,
                            "images_s": scale.micro_stage2 / seconds,
                            "tflops_per_image": flops / scale.micro_stage2 / 1e12,
                            "mfu": (flops / seconds / 1e12 / peak) if peak else None}
            del expert, pixels, forward
        except Exception as exc:   # one expert failing must not lose the others' numbers
            out[cfg.key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return out


def _x5_transforms(scale: Scale, aspect: str = "pad") -> dict[str, ImageTransform]:
    """Each X5 expert's preprocessing (its input side, its own pixel recipe; padded to a square
    as Eagle's image_aspect_ratio: pad by default), without building the networks."""
    out = {}
    for cfg in scale.x5:
        recipe = EXPERTS.get(cfg.id).pixel_recipe(cfg)
        side = cfg.resolution or (1024 if cfg.id != "clip-vit-hf" else 448)
        out[cfg.key] = ImageTransform((side, side), recipe.mean, recipe.std, aspect=aspect,
                                      recipe=recipe)
    return out


def measure_loader(scale: Scale, workers: list[int], steps: int, folder: Path,
                   consumed_samples_s: float, aspect: str = "pad") -> dict:
    """Samples/s the harness loader prepares at X5 resolutions, per worker count."""
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(32):
        w, h = scale.image_side
        base = torch.linspace(0, 255, w).repeat(h, 1)
        noise = torch.randint(0, 40, (h, w), generator=g)
        rgb = torch.stack([(base + noise) % 256, base * 0.5, noise * 4.0], -1)
        rgb = rgb.clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(rgb).save(folder / f"{i}.jpg", quality=90)
        samples.append(Conversation(str(i), f"{i}.jpg", [
            ("human", "<image>\nWhat is shown in the picture? " * 3),
            ("gpt", "A gradient with some noise on it. " * 6)]))
    tokenizer = train_tokenizer([t for s in samples for _, t in s.turns], 300)
    collate = Collator(tokenizer, TEMPLATES.get("vicuna_v1"), _x5_transforms(scale, aspect),
                       folder)
    micro = scale.micro_stage2
    order = step_order(samples, micro, seed=0, group_by_modality=False)
    batches = StepBatches(samples, collate, order, rank=0, micro=micro, accumulation=1)
    out, prefetch = {}, 2
    for w in workers:
        # drain what the workers prepared while starting; of the steps timed after that, the
        # w x prefetch already in flight at the start are not counted (a lower bound)
        in_flight = w * prefetch
        drained, timed = in_flight + 1, steps * max(1, w) + in_flight
        stream = step_batches(batches, 0, drained + timed, w, prefetch=prefetch,
                              pin_memory=torch.cuda.is_available())
        for _ in range(drained):
            next(stream)
        t0 = time.perf_counter()
        for _ in range(timed):
            next(stream)
        rate = (timed - in_flight) * micro / (time.perf_counter() - t0)
        out[str(w)] = {"samples_s": rate, "over_step": rate / consumed_samples_s}
    return out


def _section(report: dict, key: str, out: Path | None, measure) -> None:
    """Measure one section into the report, print it and write the report so far; a section
    that fails records its error and the others still run."""
    try:
        report[key] = measure()
    except Exception as exc:
        report[key] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    print(json.dumps({key: report[key]}), flush=True)
    if out:
        out.write_text(json.dumps(report, indent=2))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the scaled-down version")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 peak when it is not in the table")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["stage2", "stage1", "eagle_memory", "x5_vision", "loader"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--aspect", choices=ASPECT_RATIOS, default="pad",
                        help="the loader section's image_aspect_ratio (Eagle's: pad)")
    args = parser.parse_args(argv)
    on_gpu = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if on_gpu else "cpu")
    scale = Scale.paper() if on_gpu else Scale.cpu()
    peak = _peak_tflops(args.peak_tflops) if on_gpu else args.peak_tflops
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    report = {"device": torch.cuda.get_device_name() if on_gpu else "cpu",
              "peak_bf16_tflops": peak, "torch": torch.__version__, "ranks": 1,
              "note": "one process, the single strategy: no FSDP communication, an upper "
                      "bound on what the plan's FSDP ranks reach"}
    sections = {
        "stage2": lambda: measure_stage_fitting(scale, 2, args.steps, args.warmup, device,
                                                peak),
        "stage1": lambda: measure_stage_fitting(scale, 1, args.steps, args.warmup, device,
                                                peak),
        "eagle_memory": lambda: measure_eagle_memory(scale, 2, device),
        "x5_vision": lambda: measure_x5_vision(scale, args.steps, args.warmup, device, peak),
    }
    for key, measure in sections.items():
        if key not in args.skip:
            _section(report, key, args.out, measure)
    workers = args.workers or ([0, 4, 8] if on_gpu else [0, 2])
    consumed = report.get("stage2", {}).get("samples_s")
    if "loader" not in args.skip and consumed:
        with tempfile.TemporaryDirectory() as folder:
            _section(report, "loader", args.out, lambda: measure_loader(
                scale, workers, max(2, args.steps), Path(folder), consumed, args.aspect))
    for key in ("stage2", "stage1"):
        r = report.get(key, {})
        if "step_s" in r:
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
            print(f"{key}: {r['tokens_s']:,.0f} tokens/s, {r['achieved_tflops']:.1f} TFLOP/s, "
                  f"MFU {mfu}, {r['llm_layers']} LLM layers, micro-batch {r['micro_batch']}, "
                  f"{r['sequence']} tokens ({r['visual_tokens']} visual)")
    eagle = report.get("eagle_memory", {})
    if "estimate_gb" in eagle:
        print(f"eagle sft step: plan estimates {eagle['estimate_gb']['total']:.1f} GB, "
              f"measured peak {eagle['measured_peak_gb']} GB")
    for w, r in report.get("loader", {}).items():
        if isinstance(r, dict) and "samples_s" in r:
            print(f"loader, {w} workers: {r['samples_s']:.1f} samples/s "
                  f"({r['over_step']:.2f}x what stage 2 consumes)")
    failed = [k for k, r in report.items() if isinstance(r, dict) and "error" in r]
    if failed or not math.isfinite(report.get("stage2", {}).get("step_s", math.nan)):
        print(f"failed sections: {failed}")
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
