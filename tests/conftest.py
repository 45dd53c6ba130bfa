"""Shared fixtures: quiet libraries, tiny specs, the local Slurm cluster."""
import logging
import os
import subprocess
from pathlib import Path

import pytest

from tests.tiny import tiny_run_yaml

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
logging.getLogger().setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def _quiet_transformers():
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


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
        (d / "base.yaml").write_text(tiny_run_yaml(sft_steps=sft_steps, sft_batch=sft_batch))
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
