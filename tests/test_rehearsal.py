"""`ablate rehearse`: the shrink keeps each full spec's relations and code path, a rehearsed
run goes end to end through real benchmark files, and failures are named. Every full spec
rehearsed to its report is the `long` acceptance run (CI)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from harness import cli
from harness.rehearsal.geometry import GridScale
from harness.rehearsal.run import Shrinker
from harness.rehearsal.shrink import Sizes
from harness.search import is_search_spec, load_search_spec
from harness.specs import load_spec
from models.experts import build_expert

ROOT = Path(__file__).resolve().parent.parent
FULL_SPECS = sorted((ROOT / "experiments").glob("*.yaml"))
# the shrink is checked on the specs that hold every relation it must keep (interpolation
# and tiling; SAM's pixel-unshuffle and five fusions; MoVA's six families); every spec is
# rehearsed end to end by the long test below
SHRINK_SPECS = [p for p in FULL_SPECS
                if p.stem in ("eagle_resolution", "eagle_fusion_sam", "mova_table1")]


def test_grid_scale_keeps_order_divisibility_and_tiling():
    scale = GridScale([24, 32, 48], tiles=[(24, 2)])       # eagle_resolution's grids
    assert [scale(q) for q in (24, 32, 48)] == [4, 5, 8]
    assert 2 * scale(24) == scale(48)                      # 672-tile == 672-interp tokens
    scale = GridScale([14, 24, 32, 37, 64])                # MoVA's experts
    sides = [scale(q) for q in (14, 24, 32, 37, 64)]
    assert sides == sorted(set(sides)) and max(sides) <= 8
    scale = GridScale([32, 64])                            # SAM's unshuffle 64 -> 32
    assert scale(64) % scale(32) == 0


def _runs(path: Path):
    if is_search_spec(path):
        spec = load_search_spec(path, check_files=False)
        return [spec.run(spec.start + [e], spec.seeds[0]) for e in spec.pool]
    return load_spec(path, check_files=False).runs


def _geometry(cfg):
    with torch.device("meta"):
        experts = [build_expert(dataclasses.replace(e, pretrained=None)) for e in
                   cfg.model.experts]
    return [(e.depth, e.layers, e.resolution != _native(e), e.config.tiling,
             type(e).__name__) for e in experts]


def _native(expert):
    cfg = dataclasses.replace(expert.config, pretrained=None, resolution=None, tiling=None)
    with torch.device("meta"):
        return build_expert(cfg).resolution


@pytest.mark.parametrize("path", SHRINK_SPECS, ids=lambda p: p.stem)
def test_shrink_keeps_each_runs_families_layers_and_relations(path, tmp_path):
    """Same backend classes, depths, hidden-state requests, interpolated-or-not and tiling;
    the same fusion, stages (capped), templates, benchmarks and likelihood answers; a tiny
    Llama in the LLM's dtype; the visual tokens still ordered as in the full runs."""
    runs = _runs(path)
    shrink = Shrinker((r.config for r in runs), tmp_path, Sizes())
    full_tokens, small_tokens = [], []
    from models.builder import build_architecture
    for run in runs:
        small = shrink(run).config
        full = run.config
        assert _geometry(small) == _geometry(full), run.name
        assert all(e.pretrained is None and e.stand_in for e in small.model.experts)
        assert small.model.fusion.id == full.model.fusion.id
        assert [s.name for s in small.stages] == [s.name for s in full.stages]
        assert [s.template for s in small.stages] == [s.template for s in full.stages]
        assert [s.train for s in small.stages] == [s.train for s in full.stages]
        assert all(s.steps == 2 for s in small.stages)
        assert small.eval.benchmarks == full.eval.benchmarks
        assert small.eval.likelihood == full.eval.likelihood
        assert small.model.llm.id == "tiny-llama" and small.model.llm.tokenizer == "llama"
        assert small.model.llm.dtype == full.model.llm.dtype
        assert small.data.image_aspect_ratio == full.data.image_aspect_ratio == "pad"
        assert small.device == "cpu" and small.precision == full.precision
        for part in ("align", "sft"):
            assert Path(getattr(small.data, part).json).is_file()
        full_tokens.append(build_architecture(full.model, meta=True)[1].output_tokens)
        small_tokens.append(build_architecture(small.model, meta=True)[1].output_tokens)
    for i, a in enumerate(full_tokens):
        for j, b in enumerate(full_tokens):
            if a < b:
                assert small_tokens[i] < small_tokens[j], (runs[i].name, runs[j].name)
            if a == b:
                assert small_tokens[i] == small_tokens[j], (runs[i].name, runs[j].name)


def test_rehearsing_one_run_scores_every_real_benchmark(tmp_path, capsys):
    """The LLaVA-1.5 baseline of Dense Connector Table 1 evaluates GQA, ScienceQA-IMG, TextVQA,
    POPE, MMBench, MME, OCRBench, SEED-Bench, ChartQA and DocVQA from official-layout files:
    it ends DONE (this is the run that used to end FAILED with KeyError 'accuracy'), each
    benchmark's headline is recorded with its unit, and the report is written."""
    work = tmp_path / "rh"
    code = cli.main(["rehearse", str(ROOT / "experiments/dense_connector_table1.yaml"),
                     "--workdir", str(work), "--run", "baseline"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "DONE     dense_connector_table1[variant=baseline]" in out
    assert "trained align, sft" in out and "scored 10" in out
    assert "leading gpt turn dropped" in out          # the mix's quirks were reported
    (run,) = [d for d in (work / "runs").iterdir()]
    scores = json.loads((run / "scores.json").read_text())
    assert {b: s["metric"] for b, s in scores.items()} == {
        "gqa": "accuracy", "scienceqa_img": "accuracy", "textvqa_ocr": "accuracy",
        "pope": "mean_f1", "mmbench_dev": "accuracy", "mme": "perception_points",
        "ocrbench": "points", "seed_bench_img": "accuracy", "chartqa": "relaxed_accuracy",
        "docvqa": "anls"}
    assert scores["mme"]["unit"] == scores["ocrbench"]["unit"] == "points"
    report = work / "reports" / "dense_connector_table1-rehearsal"
    assert (report / "ablation.md").exists() or any(report.iterdir())
    assert "(paper)" in out                             # the reference table beside it
    # no rehearsal record in the real work directory or experiment
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "DONE"
    from harness.runs.pipeline import load_result
    from harness.runs.results import results_table
    from harness.runs.rundir import RunDir
    table = results_table([load_result(RunDir(run))])
    mme = scores["mme"]["value"]
    assert table["mme"].iloc[0] == round(mme, 1)          # points, not x100
    assert table["pope"].iloc[0] == round(100 * scores["pope"]["value"], 1)


def test_a_failed_run_is_named_and_the_exit_code_is_1(tmp_path, capsys, monkeypatch):
    import harness.runs.pipeline as pipeline

    def broken(cfg, *args, **kwargs):
        raise RuntimeError("boom in the stage")
    monkeypatch.setattr(pipeline, "_run", broken)
    code = cli.main(["rehearse", str(ROOT / "experiments/mova_table7.yaml"), "--workdir",
                     str(tmp_path / "rh"), "--run", "linear"])
    captured = capsys.readouterr()
    assert code == 1
    assert "mova_table7[variant=linear]: FAILED: RuntimeError: boom in the stage" in \
        captured.err


@pytest.mark.slurm
@pytest.mark.long
def test_rehearsal_on_the_slurm_executor(slurm_cluster, tmp_path, capsys):
    """The five runs of MoVA Table 7 as one job array on the one-node cluster, the LLM-routed
    one (a route stage after fine-tuning) among them."""
    work = tmp_path / "rh"
    code = cli.main(["rehearse", str(ROOT / "experiments/mova_table7.yaml"), "--workdir",
                     str(work), "--executor", "slurm", "--profile", str(slurm_cluster)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "rehearsing 5 of 5 runs" in out
    assert out.count("  DONE     mova_table7[") == 5
    assert "  DONE     mova_table7[variant=context_aware]" in out
    jobs = [json.loads((d / "job.json").read_text()) for d in (work / "runs").iterdir()]
    assert {j["executor"] for j in jobs} == {"slurm"}
    assert len({j["job_id"].split("_")[0] for j in jobs}) == 1     # one array


@pytest.mark.long
@pytest.mark.parametrize("path", FULL_SPECS, ids=lambda p: p.stem)
def test_every_full_spec_rehearses_to_its_report(path, tmp_path, capsys):
    code = cli.main(["rehearse", str(path), "--workdir", str(tmp_path / "rh")])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = [line for line in out.splitlines() if line.startswith("  DONE ")
             or line.startswith("  FAILED") or line.startswith("  NEW")]
    assert lines and all(line.startswith("  DONE") for line in lines), out
    assert "report: " in out
