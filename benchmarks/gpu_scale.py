"""What one GPU does at paper scale: throughput, MFU and peak memory of the harness's training
step, and whether the loader keeps up with it.

    python benchmarks/gpu_scale.py [--out gpu_scale.json] [--steps 6] [--peak-tflops F]
    python benchmarks/gpu_scale.py --cpu     # the scaled-down version (tested on every CI run)

On a GPU it measures, with the harness's own model assembly (harness.modelbuild), strategy
(harness.training.strategies), activation checkpointing switch and bf16 autocast:

1. stage 2: CLIP-L/14-336 + a random-init Llama shaped as Vicuna-7B, LLM, projector trained
   (fp32 master weights, bf16 compute), activation checkpointing, micro-batch 16, 576 visual +
   128 text tokens: tokens/s, MFU against the GPU's dense bf16 peak, peak memory; if the whole
   7B does not fit one GPU, half the decoder layers (a per-layer cost, so MFU carries over;
   the layers used are reported);
2. stage 1: the same with the LLM frozen, projector trained, micro-batch 32;
3. Eagle X5's vision side: CLIP-448, ConvNeXt-XXL, EVA-02-L, Pix2Struct and SAM-L at 1024,
   frozen, bf16 forward, micro-batch 16 (ConvNeXt-XXL through timm, the same network as
   open_clip's, since a GPU node may lack open_clip);
4. the loader (harness.training.loader with the run's Collator): samples/s at Eagle X5's
   resolutions with 0, 4 and 8 workers on COCO-sized JPEGs, against the samples/s the stage-2
   step consumes (a CLIP-only step, faster than X5's, so the stricter bar).

Model FLOPs (MFU excludes activation recomputation), per token of a sequence of S tokens on a
decoder of L layers and width d with N non-embedding parameters: trained 6N + 12LdS, frozen
but back-propagated through 4N + 8LdS, frozen forward only 2N + 4LdS (PaLM's accounting, as
torchtitan). Imports only torch, timm, transformers and the harness (no open_clip, mlflow,
optuna or submitit), so it runs on a bare GPU node.
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

from harness.config.run_config import FusionSpec, ModelConfig, StageConfig
from harness.data.batching import Collator, ImageTransform
from harness.data.llava import Conversation
from harness.modelbuild import assemble
from harness.training import param_groups
from harness.training.distributed import World
from harness.training.loader import StepBatches, step_batches, step_order
from harness.training.strategies import choose, upcast_trainable
from models.experts import EXPERTS, ExpertConfig, build_expert
from models.experts.base import StandIn
from models.fusion.concat import SequenceAppendOptions
from models.llm import LLMConfig, LoadedLLM, set_activation_checkpointing, train_tokenizer
from models.templates import IGNORE_INDEX, TEMPLATES

# dense bf16 tensor-core peaks (vendor datasheets), TFLOP/s
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0,
                    "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10": 125.0}


@dataclass(frozen=True)
class Scale:
    """The shapes one measurement uses: the paper's on a GPU, a CPU-sized copy otherwise."""
    llm: LLMConfig
    clip: ExpertConfig
    x5: tuple[ExpertConfig, ...]
    text_tokens: int
    micro_stage2: int
    micro_stage1: int
    image_side: tuple[int, int]       # the JPEGs the loader decodes (COCO-sized on a GPU)

    @classmethod
    def paper(cls) -> Scale:
        vicuna = LLMConfig(hidden_size=4096, layers=32, heads=32, intermediate_size=11008,
                           vocab_size=32000, max_positions=4096, dtype="bfloat16")
        return cls(vicuna, ExpertConfig("clip-vit-hf", "large-336", layers=[-2]),
                   (ExpertConfig("clip-vit-hf", "large-336", name="clip", resolution=448),
                    ExpertConfig("convnext", "xxlarge", name="convnext", layers=[3]),
                    ExpertConfig("eva02", "large-1024", name="eva02"),
                    ExpertConfig("pix2struct", "large", name="pix2struct", resolution=1024),
                    ExpertConfig("sam", "large", name="sam")),
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
                   text_tokens=16, micro_stage2=2, micro_stage1=4, image_side=(160, 120))


def _llama(cfg: LLMConfig, layers: int, device: torch.device) -> LoadedLLM:
    """A random-init Llama of `cfg`'s shape, built in bf16 directly on `device` (a 7B model
    never exists in fp32 or on the host)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    tokenizer = train_tokenizer(["a picture of a cat on a mat"] * 4, 300)
    config = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                         intermediate_size=cfg.intermediate_size, num_hidden_layers=layers,
                         num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                         max_position_embeddings=cfg.max_positions, tie_word_embeddings=False,
                         pad_token_id=tokenizer.pad_token_id)
    with device:
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    return LoadedLLM(model, tokenizer, "random-init")


def _non_embedding(module: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if "embed_tokens" not in n)


def _vision_flops(expert, tokens_per_image: int) -> float:
    """Forward FLOPs of one image through a frozen expert (2N per token + attention)."""
    params = sum(p.numel() for p in expert.parameters())
    return 2.0 * params * tokens_per_image


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


def _timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _batch(model, micro: int, text: int, vocab: int, device: torch.device) -> dict:
    """A step's tensors: an <image> then `text` tokens whose second half is the answer."""
    ids = torch.randint(10, vocab, (micro, text), device=device)
    labels = ids.clone()
    labels[:, : text // 2] = IGNORE_INDEX
    pixels = {name: torch.randn(micro, 3, *e.input_size, device=device)
              for name, e in model.experts.items()}
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
            "pixels": pixels, "has_image": torch.ones(micro, dtype=torch.bool, device=device)}


def measure_stage(scale: Scale, stage: int, layers: int, steps: int, warmup: int,
                  device: torch.device, peak: float | None) -> dict:
    """One training step of the LLaVA model as the loop runs it: stage 2 trains projector +
    LLM (fp32 masters, bf16 autocast, checkpointed decoder layers), stage 1 the projector."""
    llm = _llama(scale.llm, layers, device)
    model_cfg = ModelConfig(experts=[scale.clip], llm=scale.llm,
                            fusion=FusionSpec("sequence_append", SequenceAppendOptions()))
    with device:
        model = assemble(model_cfg, seed=0, llm=llm)
    model.to(device)
    train = ["projector", "llm"] if stage == 2 else ["projector"]
    spec = StageConfig(name=f"stage{stage}", data="sft", train=train, lr=2e-5, steps=1)
    world = World.single(device)
    strategy = choose("fsdp", world, model, llm_trains=stage == 2)
    param_groups(model, spec)
    upcast_trainable(model)
    wrapped = strategy.wrap(model)
    groups = param_groups(model, spec)
    optimizer = torch.optim.AdamW(groups, lr=spec.lr, fused=device.type == "cuda")
    params = [p for g in groups for p in g["params"]]
    micro = scale.micro_stage2 if stage == 2 else scale.micro_stage1
    batch = _batch(model, micro, scale.text_tokens, scale.llm.vocab_size, device)
    if stage == 2:
        set_activation_checkpointing(model.llm, True)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss_sum, count = wrapped(**batch, reduction="sum")
        (loss_sum / count.clamp_min(1)).backward()
        strategy.clip(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = _timed(step, steps, warmup, device)
    visual = model.fusion.output_tokens
    seq = visual + scale.text_tokens
    n_llm, d = _non_embedding(model.llm), scale.llm.hidden_size
    per_token = (6 * n_llm + 12 * layers * d * seq) if stage == 2 else (
        4 * n_llm + 8 * layers * d * seq)
    clip = next(iter(model.experts.values()))
    flops = micro * (per_token * seq + _vision_flops(clip, visual + 1)
                     + 6 * sum(p.numel() for p in model.projector.parameters()) * visual)
    out = {"stage": stage, "llm_layers": layers, "micro_batch": micro, "sequence": seq,
           "step_s": seconds, "samples_s": micro / seconds, "tokens_s": micro * seq / seconds,
           "model_tflops_per_step": flops / 1e12, "achieved_tflops": flops / seconds / 1e12,
           "mfu": (flops / seconds / 1e12 / peak) if peak else None,
           "peak_memory_gb": (torch.cuda.max_memory_allocated() / 1e9
                              if device.type == "cuda" else None)}
    return out


def measure_stage_fitting(scale: Scale, stage: int, steps: int, warmup: int,
                          device: torch.device, peak: float | None) -> dict:
    """measure_stage with the full LLM, or with half its layers (repeatedly) when it does not
    fit this one GPU."""
    layers = scale.llm.layers
    while True:
        try:
            return measure_stage(scale, stage, layers, steps, warmup, device, peak)
        except torch.OutOfMemoryError:
            if layers <= 1:
                raise
            layers //= 2
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()


def measure_x5_vision(scale: Scale, steps: int, warmup: int, device: torch.device,
                      peak: float | None) -> dict:
    """Eagle X5's five experts, frozen, bf16: a forward of micro_stage2 images each."""
    out = {}
    for cfg in scale.x5:
        try:
            with device:
                expert = build_expert(cfg).to(device=device, dtype=torch.bfloat16)
            pixels = torch.randn(scale.micro_stage2, 3, *expert.input_size, device=device,
                                 dtype=torch.bfloat16)

            @torch.no_grad()
            def forward(expert=expert, pixels=pixels):
                expert(pixels)
            seconds = _timed(forward, steps, warmup, device)
            grid = expert.output_grid(expert.layers[-1])
            flops = scale.micro_stage2 * _vision_flops(expert, max(1, grid[0] * grid[1]))
            out[cfg.key] = {"input": list(expert.input_size), "step_s": seconds,
                            "images_s": scale.micro_stage2 / seconds,
                            "mfu": (flops / seconds / 1e12 / peak) if peak else None}
            del expert, pixels
        except Exception as exc:   # one expert failing must not lose the others' numbers
            out[cfg.key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return out


def _x5_transforms(scale: Scale) -> dict[str, ImageTransform]:
    """Each X5 expert's preprocessing (its input side, its own mean and std, padded to a
    square as Eagle's image_aspect_ratio: pad), without building the networks."""
    out = {}
    for cfg in scale.x5:
        cls = EXPERTS.get(cfg.id)
        side = cfg.resolution or (1024 if cfg.id != "clip-vit-hf" else 448)
        out[cfg.key] = ImageTransform((side, side), tuple(cls.mean), tuple(cls.std),
                                      aspect="pad")
    return out


def measure_loader(scale: Scale, workers: list[int], steps: int, folder: Path,
                   consumed_samples_s: float) -> dict:
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
    collate = Collator(tokenizer, TEMPLATES.get("vicuna_v1"), _x5_transforms(scale), folder)
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the scaled-down version")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 peak when it is not in the table")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    on_gpu = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if on_gpu else "cpu")
    scale = Scale.paper() if on_gpu else Scale.cpu()
    peak = _peak_tflops(args.peak_tflops) if on_gpu else args.peak_tflops
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    report = {"device": torch.cuda.get_device_name() if on_gpu else "cpu",
              "peak_bf16_tflops": peak, "torch": torch.__version__}
    report["stage2"] = measure_stage_fitting(scale, 2, args.steps, args.warmup, device, peak)
    print(json.dumps({"stage2": report["stage2"]}), flush=True)
    report["stage1"] = measure_stage_fitting(scale, 1, args.steps, args.warmup, device, peak)
    print(json.dumps({"stage1": report["stage1"]}), flush=True)
    report["x5_vision"] = measure_x5_vision(scale, args.steps, args.warmup, device, peak)
    print(json.dumps({"x5_vision": report["x5_vision"]}), flush=True)
    workers = args.workers or ([0, 4, 8] if on_gpu else [0, 2])
    with tempfile.TemporaryDirectory() as folder:
        report["loader"] = measure_loader(scale, workers, max(2, args.steps), Path(folder),
                                          report["stage2"]["samples_s"])
    print(json.dumps({"loader": report["loader"]}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    for key in ("stage2", "stage1"):
        r = report[key]
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"{key}: {r['tokens_s']:,.0f} tokens/s, {r['achieved_tflops']:.1f} TFLOP/s, "
              f"MFU {mfu}, {r['llm_layers']} LLM layers, micro-batch {r['micro_batch']}")
    for w, r in report["loader"].items():
        print(f"loader, {w} workers: {r['samples_s']:.1f} samples/s "
              f"({r['over_step']:.2f}x what stage 2 consumes)")
    if not math.isfinite(report["stage2"]["step_s"]):
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
