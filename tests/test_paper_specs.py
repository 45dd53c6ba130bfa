"""The papers' ablations as specs: every spec in experiments/ (the full-scale ones on this
machine without their weights, data or GPUs) passes `ablate plan`, and each full spec has a
tiny twin that runs to a report on this CPU (marker `long`: CI runs one twin per paper after
the default suite; `-m twins` the others)."""
from pathlib import Path

import pytest
import yaml

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
FULL = sorted(p for p in (ROOT / "experiments").glob("*.yaml"))
# specs name a `base`; the rest of experiments/tiny are the run configs they build on
TINY = sorted(p for p in (ROOT / "experiments" / "tiny").glob("*.yaml")
              if "base" in yaml.safe_load(p.read_text()))
TWINS = [ROOT / "experiments" / "tiny" / p.name for p in FULL]
# one twin runs in CI's long run (the search, Eagle's greedy table); the others are
# marked `twins` (every full spec is rehearsed end to end in CI regardless)
CI_TWINS = {"eagle_greedy"}


def test_every_full_spec_has_a_tiny_twin():
    assert len(FULL) >= 11
    assert [p for p in TWINS if not p.is_file()] == []


@pytest.mark.slow
@pytest.mark.parametrize("spec", FULL, ids=lambda p: p.stem)
def test_full_spec_plans_without_weights_data_or_gpus(spec, tmp_path, capsys):
    assert main(["plan", str(spec), "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "estimated GPU-hours" in out and "Slurm (" in out and "sbatch --array=0-" in out
    hours = float(out.split("estimated GPU-hours: ")[1].split(" ")[0].replace(",", ""))
    assert 100 < hours < 10_000     # 7B LLaVA-style runs: about 100-300 GPU-hours each
    assert not (tmp_path / "runs").exists()   # planning writes nothing


@pytest.mark.parametrize("spec", TINY, ids=lambda p: p.stem)
def test_tiny_spec_plans(spec, tmp_path, capsys):
    assert main(["plan", str(spec), "--workdir", str(tmp_path)]) == 0
    assert "estimated GPU-hours" in capsys.readouterr().out


def test_plan_of_a_full_spec_prints_its_array_and_gpu_hours(tmp_path, capsys):
    """LLaVA-1.5 (the Dense Connector baseline) trains in about half a day on one 8x A100
    node; the plan's estimate for that row must be in that range."""
    assert main(["plan", str(ROOT / "experiments" / "dense_connector_table1.yaml"),
                 "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("0 ") and "baseline" in line)
    gpu_hours, gb_per_gpu = map(float, row.split()[-2:])   # ... GPU-h, GB/GPU
    assert 60 < gpu_hours / 8 * 8 < 200 and 6 < gpu_hours / 8 < 20
    assert 10 < gb_per_gpu < 72   # sharded over the node's 8 GPUs, within 90% of 80 GB
    assert ("sbatch --array=0-7%8 --partition=gpu --nodes=1 --gpus-per-node=8 "
            "--ntasks-per-node=8") in out


@pytest.mark.long
@pytest.mark.parametrize("twin", [pytest.param(p, marks=() if p.stem in CI_TWINS
                                               else pytest.mark.twins) for p in TWINS],
                         ids=lambda p: p.stem)
def test_tiny_twin_runs_to_a_report(twin, tmp_path, capsys):
    search = "search:" in twin.read_text()
    command = "search" if search else "run"
    assert main([command, str(twin), "--workdir", str(tmp_path), "--executor", "inline"]) == 0
    out = tmp_path / "report"
    assert main(["report", str(twin), "--workdir", str(tmp_path), "--format", "markdown",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "not run yet" not in printed and "failed" not in printed.lower().split("runs")[0]
    # an experiment's report writes its records; a search's, its lineage and rounds
    assert (out / ("lineage.csv" if search else "records.csv")).is_file()
    assert list(out.glob("*.md")) and list(out.glob("*.png"))
