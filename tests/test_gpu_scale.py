"""benchmarks/gpu_scale.py, scaled down, runs here with only what the GPU machine has
installed, and reports every measurement it makes there; `ablate plan` turns FLOPs into
GPU-hours with the MFU such a report measured, and refuses a report that has none."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent
DC = ROOT / "experiments" / "dense_connector_table1.yaml"
PAPER = ROOT / "slurm" / "paper-8xa100.yaml"
ASSUMED = "gpu: {name: A100-80GB bf16, peak_tflops: 312, utilization: 0.4}"


def _profile(folder: Path, gpu: str) -> Path:
    text = PAPER.read_text()
    assert ASSUMED in text
    path = folder / "measured.yaml"
    path.write_text(text.replace(ASSUMED, gpu))
    return path


def _gpu_hours(capsys, *args: str) -> tuple[float, str]:
    assert main(["plan", str(DC), *args]) == 0
    out = capsys.readouterr().out
    return float(re.search(r"estimated GPU-hours: ([\d,.]+) on", out)[1].replace(",", "")), out


def test_gpu_scale_runs_scaled_down_and_plan_uses_the_mfu_it_measured(tmp_path, capsys):
    out = tmp_path / "gpu_scale.json"
    done = subprocess.run([sys.executable, "-m", "tests.gpu_node", "benchmarks/gpu_scale.py",
                           "--cpu", "--steps", "2", "--warmup", "1", "--peak-tflops", "1",
                           "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    for stage in ("stage2", "stage1"):
        r = report[stage]
        assert r["llm_layers"] == 2 and r["step_s"] > 0 and math.isfinite(r["tokens_s"])
        assert r["model_tflops_per_step"] > 0
        assert math.isclose(r["mfu"], r["achieved_tflops"] / 1.0)   # against the given peak
    assert report["stage2"]["sequence"] == report["stage1"]["sequence"]
    # the visual tokens reach the LLM: its input was checked on every step to be the visual
    # tokens plus the text (the <image> placeholder becomes them)
    for stage in ("stage2", "stage1"):
        r = report[stage]
        assert r["llm_input_checked"] and r["sequence"] == r["visual_tokens"] + 16 - 1
    eagle = report["eagle_memory"]
    assert eagle["estimate_gb"]["total"] > 0 and eagle["step_s"] > 0
    assert set(report["x5_vision"]) == {"clip", "convnext", "eva02", "pix2struct", "sam"}
    assert all("error" not in r and r["images_s"] > 0 for r in report["x5_vision"].values())
    assert set(report["loader"]) == {"0", "2"}
    assert all(r["samples_s"] > 0 for r in report["loader"].values())
    assert "loader, 2 workers" in done.stdout

    work = ["--workdir", str(tmp_path / "w")]
    assumed, _ = _gpu_hours(capsys, *work, "--profile", str(PAPER))
    measured, text = _gpu_hours(capsys, *work, "--profile", str(_profile(
        tmp_path, "gpu: {measured: gpu_scale.json, memory_gb: 80}")))  # relative to the profile
    assert "(measured by benchmarks/gpu_scale.py" in text and "utilization (assumed)" not in text
    expected = assumed * (312 * 0.4) / (1.0 * report["stage2"]["mfu"])
    assert math.isclose(measured, expected, rel_tol=0.02), (measured, expected)

    report["stage2"]["mfu"] = None           # what a CPU run without a peak reports
    (tmp_path / "no_peak.json").write_text(json.dumps(report))
    for gpu, says in [("{measured: no_peak.json}", "has no MFU"),
                      ("{measured: missing.json}", "no benchmark report at"),
                      ("{measured: gpu_scale.json, utilization: 0.5}", "drop `utilization`")]:
        profile = _profile(tmp_path, f"gpu: {gpu}")
        assert main(["plan", str(DC), *work, "--profile", str(profile)]) == 2
        err = capsys.readouterr().err
        assert str(profile) in err and "gpu.measured" in err and says in err, err


def test_the_shipped_h200_profile_prices_plans_with_its_measured_mfu(tmp_path, capsys):
    """slurm/paper-8xh200.yaml names the report gpu_scale wrote on an H200: the plan takes its
    peak and stage-2 MFU (an upper bound measured on one GPU)."""
    hours, text = _gpu_hours(capsys, "--workdir", str(tmp_path),
                             "--profile", str(ROOT / "slurm" / "paper-8xh200.yaml"))
    assert "on NVIDIA H200 at 989.4 TFLOPs peak" in text and "(measured by" in text
    assert hours > 0
