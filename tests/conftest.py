"""Shared fixtures: quiet libraries, tiny specs, the local Slurm cluster."""
import logging
import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
logging.getLogger().setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def _quiet_transformers():
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


TINY_BASE = """\
name: tiny
seed: 3
data:
  synthetic: {seed: 1, image_size: 32, train_per_skill: 8, eval_per_skill: 3, captions: 16,
              text_only: 4, skills: [color, existence]}
model:
  experts:
    - {id: clip-vit, preset: tiny, resolution: 32, layers: [-1], freeze: false}
    - {id: sam, preset: tiny, resolution: 32, layers: [-1], resample: unshuffle}
  fusion: {id: channel_concat, grid: 2}
  llm: {id: tiny-llama, hidden_size: 32, layers: 1, heads: 2, intermediate_size: 64,
        vocab_size: 300}
stages:
  - {name: align, data: align, template: plain, train: [projector], lr: 1.0e-3, steps: 4,
     batch_size: 4, checkpoint_every: 2}
  - {name: sft, data: sft, template: vicuna_v1, train: [projector, llm, experts], lr: 1.0e-3,
     steps: SFT_STEPS, batch_size: SFT_BATCH, checkpoint_every: 25, lrs: {experts: 1.0e-4}}
eval: {benchmarks: [synth-color, synth-pope], batch_size: 8, max_new_tokens: 3}
"""

GRID = """\
name: NAME
base: base.yaml
axes:
  sft_lr: {path: "stages[sft].lr", values: [1.0e-3, 3.0e-4]}
  seed: {path: seed, values: [3, 4]}
"""


@pytest.fixture
def tiny_spec(tmp_path):
    """Write a base run and a spec over it; returns the spec's path. The default is a 2x2
    grid whose runs share their alignment stage in pairs (same seed, different sft lr)."""
    def write(name: str = "tiny_grid", body: str | None = None, sft_steps: int = 5,
              sft_batch: int = 4, folder: str = "spec"):
        d = tmp_path / folder
        d.mkdir(exist_ok=True)
        (d / "base.yaml").write_text(TINY_BASE.replace("SFT_STEPS", str(sft_steps))
                                     .replace("SFT_BATCH", str(sft_batch)))
        path = d / f"{name}.yaml"
        path.write_text((body or GRID).replace("NAME", name))
        return path
    return write


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def slurm_cluster():
    """The one-node cluster from slurm/cluster.sh. Where ABLATE_REQUIRE_SLURM is set (CI), a
    missing cluster fails the Slurm tests instead of skipping them."""
    script = ROOT / "slurm" / "cluster.sh"
    if subprocess.run([str(script), "status"], capture_output=True).returncode != 0:
        message = "no Slurm cluster is up: start one with `slurm/cluster.sh start`"
        if os.environ.get("ABLATE_REQUIRE_SLURM"):
            pytest.fail(message)
        pytest.skip(message)
    return ROOT / "slurm" / "local.yaml"
