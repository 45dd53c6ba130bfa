"""benchmarks/gpu_scale.py, scaled down, runs here with only what the GPU machine has
installed, and reports every measurement it makes there."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_scale_runs_scaled_down_without_open_clip_mlflow_optuna_submitit(tmp_path):
    out = tmp_path / "gpu_scale.json"
    done = subprocess.run([sys.executable, "-m", "tests.gpu_node", "benchmarks/gpu_scale.py",
                           "--cpu", "--steps", "2", "--warmup", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    for stage in ("stage2", "stage1"):
        r = report[stage]
        assert r["llm_layers"] == 2 and r["step_s"] > 0 and math.isfinite(r["tokens_s"])
        assert r["model_tflops_per_step"] > 0 and r["mfu"] is None   # no peak known on a CPU
    assert report["stage2"]["sequence"] == report["stage1"]["sequence"]
    assert set(report["x5_vision"]) == {"clip", "convnext", "eva02", "pix2struct", "sam"}
    assert all("error" not in r and r["images_s"] > 0 for r in report["x5_vision"].values())
    assert set(report["loader"]) == {"0", "2"}
    assert all(r["samples_s"] > 0 for r in report["loader"].values())
    assert "loader, 2 workers" in done.stdout
