"""`ablate plan`'s memory estimate held against what one training step allocates. The step is
the loop's own (harness.training.step_probe: the strategy's preparation, the stage's
optimizer, optimizer_step under bf16 autocast with activation checkpointing), two steps so the
AdamW moments exist; the measurement is torch's profiler's record of every host allocation and
free, from the model's construction on, its running sum's peak. Three kinds of stage at reduced
size: the LLM frozen (alignment), the LLM trained (fine-tuning) and a vision expert trained at
high resolution beside it (Eagle's stage 2, whose tower's activations the plan counts through
harness.planning.vision_memory). Each must be within 20% of the estimate. On a GPU the same
three kinds were measured by benchmarks/gpu_scale.py (docs/measured.md)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from harness.config.yamlio import load_yaml
from harness.planning.estimate import TEXT_TOKENS, stage_memory
from harness.specs.run_file import parse_run_config
from harness.training.distributed import World
from harness.training.step_probe import TrainingStep, placeholder_batch, random_llama
from models.builder import assemble
from tests.tiny import tiny_run_yaml

TINY_LLM = ("{id: tiny-llama, hidden_size: 32, layers: 1, heads: 2, intermediate_size: 64,\n"
            "        vocab_size: 300}")
LLM = ("{id: tiny-llama, hidden_size: 256, layers: 4, heads: 4, intermediate_size: 688, "
       "vocab_size: 4000}")
CLIP = "{id: clip-vit, preset: tiny, resolution: 64, layers: [-1]}"
CONVNEXT_512 = "{id: convnext, preset: tiny, resolution: 512, layers: [-1], freeze: false}"
CASES = {
    "llm_frozen": ([CLIP], "[projector]"),
    "llm_trained": ([CLIP], "[projector, llm]"),
    "expert_trained_at_512": ([CONVNEXT_512], "[projector, llm, experts]"),
}
MICRO = 4


def _config(folder: Path, experts: list[str], train: str):
    text = tiny_run_yaml("memory", experts=experts).replace(TINY_LLM, LLM)
    assert LLM in text
    text = text.replace("train: [projector, llm, experts]", f"train: {train}")
    text += ("precision: bf16\nparallel: {activation_checkpointing: true, "
             f"micro_batch: {MICRO}, strategy: single}}\n")
    (folder / "run.yaml").write_text(text)
    return parse_run_config(load_yaml(folder / "run.yaml"), check_files=False)


def peak_allocated(fn) -> int:
    """The most host memory torch's allocator held at once while `fn` ran (allocations and
    frees as the profiler records them, in order)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    held = peak = 0
    for e in events:
        held += e.nbytes()
        peak = max(peak, held)
    return peak


def _measured_and_estimated(folder: Path, experts: list[str], train: str) -> tuple[float, float]:
    cfg = _config(folder, experts, train)
    stage = cfg.stages[-1]
    estimate = stage_memory(cfg, stage, ranks=1).total * 1024 ** 3
    cpu = torch.device("cpu")

    def build_and_step():
        torch.manual_seed(0)
        model = assemble(cfg.model, 0, random_llama(cfg.model.llm, cfg.model.llm.layers, cpu))
        batch = placeholder_batch(model, MICRO, TEXT_TOKENS + 1, cfg.model.llm.vocab_size, cpu)
        with TrainingStep(model, stage, cfg.parallel, World.single(cpu), batch) as step:
            step()
            step()
    return peak_allocated(build_and_step), estimate


@pytest.mark.parametrize("case", list(CASES))
def test_the_plans_memory_estimate_is_within_20_percent_of_one_step(case, tmp_path):
    measured, estimate = _measured_and_estimated(tmp_path, *CASES[case])
    assert 0.8 <= measured / estimate <= 1.2, (case, measured / 2 ** 20, estimate / 2 ** 20)
