"""benchmarks/train_step_overhead.py on two gloo ranks: the harness's FSDP stage and a bare
loop of the same strategy both train, and the benchmark reports both of its comparisons."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from tests.tiny import tiny_run_yaml

ROOT = Path(__file__).resolve().parent.parent


def test_the_overhead_benchmark_compares_a_two_rank_fsdp_stage_with_a_bare_loop(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_run_yaml("overhead"))
    done = subprocess.run([sys.executable, "benchmarks/train_step_overhead.py", "--config",
                           str(config), "--nproc", "2", "--strategy", "fsdp", "--steps", "2",
                           "--blocks", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 rank(s), strategy fsdp, 1 blocks x 2 steps" in done.stdout
    for what in ("whole stage per step", "median step"):
        line = next(line for line in done.stdout.splitlines() if line.startswith(what))
        bare, harness = (float(line.split(kind)[1].split()[0]) for kind in (" bare ",
                                                                             " harness "))
        assert bare > 0 and harness > 0 and math.isfinite(bare / harness), line
