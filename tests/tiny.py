"""The smallest run config that exercises everything (two expert families, a frozen one, two
stages, two benchmarks), shared by the pipeline, scheduler, Slurm and MLflow tests."""


TINY_EXPERTS = ["{id: clip-vit, preset: tiny, resolution: 32, layers: [-1], freeze: false}",
                "{id: sam, preset: tiny, resolution: 32, layers: [-1], resample: unshuffle}"]


def tiny_run_yaml(name: str = "tiny", sft_steps: int = 5, sft_batch: int = 4,
                  sft_checkpoint_every: int = 25, before_training: bool = False,
                  experts: list[str] | None = None,
                  fusion: str = "{id: channel_concat, grid: 2}", prealign: bool = False,
                  seed: int = 3, sft_lr: str = "1.0e-3", skills: str = "color, existence",
                  eval_per_skill: int = 3, eval_yaml: str | None = None) -> str:
    """`prealign` adds Eagle's per-expert pre-alignment stage before the joint ones;
    `eval_yaml` replaces the eval section (a benchmark's files, likelihood scoring)."""
    prealign_line = ("  - {name: prealign, data: sft, per_expert: true, "
                     "train: [projector, experts],\n     lr: 1.0e-3, steps: 3, batch_size: 4}\n"
                     if prealign else "")
    expert_lines = "".join(f"    - {e}\n" for e in (experts or TINY_EXPERTS))
    eval_lines = eval_yaml or (
        "eval: {benchmarks: [synth-color, synth-pope], batch_size: 8, max_new_tokens: 3,\n"
        f"       before_training: {str(before_training).lower()}}}\n")
    per_skill = f"eval_per_skill: {eval_per_skill}"
    return f"""\
name: {name}
seed: {seed}
data:
  synthetic: {{seed: 1, image_size: 32, train_per_skill: 8, {per_skill}, captions: 16,
              text_only: 4, skills: [{skills}]}}
model:
  experts:
{expert_lines}  fusion: {fusion}
  llm: {{id: tiny-llama, hidden_size: 32, layers: 1, heads: 2, intermediate_size: 64,
        vocab_size: 300}}
stages:
{prealign_line}  - {{name: align, data: align, template: plain, train: [projector], lr: 1.0e-3,
     steps: 4, batch_size: 4, checkpoint_every: 2}}
  - {{name: sft, data: sft, template: vicuna_v1, train: [projector, llm, experts], lr: {sft_lr},
     steps: {sft_steps}, batch_size: {sft_batch}, checkpoint_every: {sft_checkpoint_every},
     lrs: {{experts: 1.0e-4}}}}
{eval_lines}"""
