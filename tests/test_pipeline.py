"""The pipeline end to end on a very small config: the run directory contract, reuse of
finished runs and stages, exact resume after an interruption, per-stage trainability."""
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from harness.runs.pipeline import run
from harness.specs.run_file import load_run_config
from harness.training import StageInterrupted
from tests.tiny import tiny_run_yaml

SMALL = tiny_run_yaml("small", sft_checkpoint_every=2, before_training=True)


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return load_run_config(path)


def _stage_dirs(workdir, name):
    return sorted((workdir / "stages").glob(f"{name}-*"))


def test_run_directory_contract_and_rerun_is_free(cfg, tmp_path):
    work = tmp_path / "work"
    result = run(cfg, work, progress=False)
    d = result.path
    assert d == work / "runs" / cfg.key
    assert json.loads((d / "status.json").read_text())["state"] == "DONE"
    for name in ("config.yaml", "config.json", "metrics.json", "predictions.jsonl", "cost.json",
                 "stages.json", "metrics_untrained.json", "per_question.json"):
        assert (d / name).exists(), name
    preds = (d / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 6  # 3 questions x 2 benchmarks, every one answered
    assert set(result.metrics["synth-pope"]) >= {"accuracy", "f1", "yes_ratio"}
    cost = result.cost
    assert cost["visual_tokens"] == 4
    assert cost["fusion_channels"] == 64 + 32 * 4  # ViT width + SAM neck unshuffled 2x2
    assert cost["forward_flops_per_sample"] > 0 and cost["peak_memory_mb"] > 0
    assert cost["parameters"]["experts.sam"]["trainable"] == 0  # frozen expert
    # stage logs say what was trainable at start
    align_log = json.loads((_stage_dirs(work, "align")[0] / "metrics.jsonl")
                           .read_text().splitlines()[0])
    assert set(align_log["trainable"]) == {"projector"}
    sft_log = json.loads((_stage_dirs(work, "sft")[0] / "metrics.jsonl").read_text()
                         .splitlines()[0])
    assert set(sft_log["trainable"]) == {"projector", "llm", "experts.clip-vit"}
    # a second run of the same config trains nothing and returns the same numbers
    before = (_stage_dirs(work, "sft")[0] / "metrics.jsonl").read_text()
    again = run(cfg, work, progress=False)
    assert again.scores == result.scores
    assert (_stage_dirs(work, "sft")[0] / "metrics.jsonl").read_text() == before


def test_interrupted_run_resumes_to_the_same_result(cfg, tmp_path):
    straight = run(cfg, tmp_path / "a", progress=False)
    with pytest.raises(StageInterrupted):
        run(cfg, tmp_path / "b", progress=False, stop_after=3)   # align: 3 of 4 steps
    status = json.loads((tmp_path / "b" / "runs" / cfg.key / "status.json").read_text())
    assert status["state"] == "INTERRUPTED"
    with pytest.raises(StageInterrupted):
        run(cfg, tmp_path / "b", progress=False, stop_after=3)   # align done, sft 3 of 5
    resumed = run(cfg, tmp_path / "b", progress=False)
    wa = load_file(_stage_dirs(tmp_path / "a", "sft")[0] / "weights.safetensors")
    wb = load_file(_stage_dirs(tmp_path / "b", "sft")[0] / "weights.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert resumed.metrics == straight.metrics
    losses = lambda w: [m["loss"] for m in map(json.loads, (_stage_dirs(w, "sft")[0] /
                        "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_runs_sharing_alignment_train_it_once(cfg, tmp_path):
    work = tmp_path / "work"
    first = run(cfg, work, progress=False)
    other = dataclasses.replace(cfg, name="other", stages=[
        cfg.stages[0], dataclasses.replace(cfg.stages[1], lr=5e-4)])
    assert other.key != cfg.key
    second = run(other, work, progress=False)
    assert len(_stage_dirs(work, "align")) == 1 and len(_stage_dirs(work, "sft")) == 2
    stages = json.loads((second.path / "stages.json").read_text())
    assert [s["reused"] for s in stages] == [True, False]
    assert first.path != second.path


def test_identity_is_content_not_name(cfg):
    renamed = dataclasses.replace(cfg, name="renamed")
    assert renamed.key == cfg.key
    expert = dataclasses.replace(cfg.model.experts[0], resolution=64)
    changed = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, experts=[expert, cfg.model.experts[1]]))
    assert changed.key != cfg.key


def test_failure_is_recorded_with_reason(cfg, tmp_path, monkeypatch):
    from harness.runs import trainer

    def boom(*a, **k):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(trainer, "train_stage", boom)
    with pytest.raises(RuntimeError):
        run(cfg, tmp_path, progress=False)
    status = json.loads((tmp_path / "runs" / cfg.key / "status.json").read_text())
    assert status["state"] == "FAILED" and "disk on fire" in status["reason"]


def test_learning_rate_precedence(cfg, tmp_path):
    from harness.runs.inputs import resolve_data
    from harness.training import param_groups
    from models.builder import build_model
    data = resolve_data(cfg, tmp_path)
    model, _ = build_model(cfg.model, cfg.seed, tmp_path / "llm", data.corpus)
    expert = dataclasses.replace(cfg.model.experts[0], lr=2e-5)
    stage = dataclasses.replace(cfg.stages[1], lrs={"llm": 0.0, "experts": 1e-4})
    model.experts["clip-vit"].config = expert
    lrs = {g["name"]: g["lr"] for g in param_groups(model, stage)}
    assert lrs == {"projector": 1e-3, "llm": 0.0, "experts.clip-vit": 2e-5}
    stage = dataclasses.replace(stage, lrs={"experts.clip-vit": 3e-6})
    assert {g["name"]: g["lr"] for g in param_groups(model, stage)}["experts.clip-vit"] == 3e-6


def test_runs_of_different_precision_in_one_process(cfg, tmp_path):
    """Inline runs (and `ablate train a.yaml b.yaml`) share a process; accelerate's state
    must not pin the first run's precision (the rehearsal's bf16 runs after fp32 ones)."""
    work = tmp_path / "work"
    first = run(cfg, work, progress=False)
    second = run(dataclasses.replace(cfg, precision="bf16"), work, progress=False)
    assert first.key != second.key
    for result in (first, second):
        assert json.loads((result.path / "status.json").read_text())["state"] == "DONE"
    assert json.loads((first.path / "scores.json").read_text()).keys() == {"synth-color",
                                                                           "synth-pope"}


def test_stage_weights_are_safetensors_and_older_weights_pt_still_load(tmp_path):
    """A stage's consolidated weights are one safetensors file (shared or strided tensors
    copied, nothing unpickled); a stage finished before that, with weights.pt, still loads."""
    from harness.runs.rundir import read_stage_weights, save_stage_weights, stage_weights_path
    base = torch.arange(12.0).reshape(3, 4)
    state = {"a": base, "a_view": base[1], "t": base.t(), "b": torch.ones(2, dtype=torch.bfloat16)}
    path = save_stage_weights(state, tmp_path / "new")
    assert path.name == "weights.safetensors" and not list((tmp_path / "new").glob(".*"))
    back = read_stage_weights(tmp_path / "new")
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in state.items())
    (tmp_path / "old").mkdir()
    torch.save({"a": base}, tmp_path / "old" / "weights.pt")
    assert stage_weights_path(tmp_path / "old").name == "weights.pt"
    assert torch.equal(read_stage_weights(tmp_path / "old")["a"], base)


def test_a_run_paused_at_rungs_ends_where_the_straight_run_ends(tmp_path):
    """Successive halving's contract: paused at 2 of 8 and at 4 of 8 steps (each rung scored
    on the held-out selection split), then continued, the run ends with the same weights,
    losses and scores as the run trained straight through."""
    from harness.config.selection import Rung, SelectionSplit
    from harness.runs.pipeline import PausedRun, load_paused
    from harness.runs.rundir import RunDir
    path = tmp_path / "r.yaml"
    path.write_text(tiny_run_yaml("rungs", sft_steps=8, sft_checkpoint_every=100))
    cfg = load_run_config(path)
    selection = SelectionSplit(benchmarks=["synth-color"], synthetic_per_skill=4)
    straight = run(cfg, tmp_path / "a", progress=False)
    first, second = Rung(1, 0.25, selection), Rung(2, 0.5, selection)
    paused = run(cfg, tmp_path / "b", progress=False, rung=first)
    assert isinstance(paused, PausedRun)
    assert (paused.rung["step"], paused.rung["total"], paused.rung["stage"]) == (2, 8, "sft")
    run_dir = tmp_path / "b" / "runs" / cfg.key
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "PAUSED" and "rung 1 (step 2 of 8" in status["reason"]
    preds = (run_dir / "rungs" / first.folder_name() / "predictions.jsonl").read_text()
    ids = [json.loads(line)["id"] for line in preds.splitlines()]
    assert ids and all(i.startswith("val-color") for i in ids)   # not the reported eval split
    assert not (run_dir / "metrics.json").exists()               # nothing reported yet
    # asked again for the same rung: nothing trains, the same record comes back
    log = _stage_dirs(tmp_path / "b", "sft")[0] / "metrics.jsonl"
    before = log.read_text()
    assert run(cfg, tmp_path / "b", progress=False, rung=first).scores == paused.scores
    assert log.read_text() == before
    assert run(cfg, tmp_path / "b", progress=False, rung=second).rung["step"] == 4
    finished = run(cfg, tmp_path / "b", progress=False)
    assert finished.metrics == straight.metrics
    wa = load_file(_stage_dirs(tmp_path / "a", "sft")[0] / "weights.safetensors")
    wb = load_file(_stage_dirs(tmp_path / "b", "sft")[0] / "weights.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    losses = lambda w: [m["loss"] for m in map(json.loads, (_stage_dirs(w, "sft")[0] /
                        "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert load_paused(RunDir(run_dir), first).scores == paused.scores   # the record stays
