"""The smallest run config that exercises everything (two expert families, a frozen one, two
stages, two benchmarks), shared by the pipeline, scheduler, Slurm and MLflow tests."""


TINY_EXPERTS = ["{id: clip-vit, preset: tiny, resolution: 32, layers: [-1], freeze: false}",
                "{id: sam, preset: tiny, resolution: 32, layers: [-1], resample: unshuffle}"]


def tiny_run_yaml(name: str = "tiny", sft_steps: int = 5, sft_batch: int = 4,
                  sft_checkpoint_every: int = 25, before_training: bool = False,
                  experts: list[str] | None = None,
                  fusion: str = "{id: channel_concat, grid: 2}", prealign: bool = False,
                  seed: int = 3) -> str:
    """`prealign` adds Eagle's per-expert pre-alignment stage before the joint ones."""
    prealign_line = ("  - {name: prealign, data: sft, per_expert: true, "
                     "train: [projector, experts],\n     lr: 1.0e-3, steps: 3, batch_size: 4}\n"
                     if prealign else "")
    expert_lines = "".join(f"    - {e}\n" for e in (experts or TINY_EXPERTS))
    return f"""\
name: {name}
seed: {seed}
data:
  synthetic: {{seed: 1, image_size: 32, train_per_skill: 8, eval_per_skill: 3, captions: 16,
              text_only: 4, skills: [color, existence]}}
model:
  experts:
{expert_lines}  fusion: {fusion}
  llm: {{id: tiny-llama, hidden_size: 32, layers: 1, heads: 2, intermediate_size: 64,
        vocab_size: 300}}
stages:
{prealign_line}  - {{name: align, data: align, template: plain, train: [projector], lr: 1.0e-3,
     steps: 4, batch_size: 4, checkpoint_every: 2}}
  - {{name: sft, data: sft, template: vicuna_v1, train: [projector, llm, experts], lr: 1.0e-3,
     steps: {sft_steps}, batch_size: {sft_batch}, checkpoint_every: {sft_checkpoint_every},
     lrs: {{experts: 1.0e-4}}}}
eval: {{benchmarks: [synth-color, synth-pope], batch_size: 8, max_new_tokens: 3,
       before_training: {str(before_training).lower()}}}
"""
