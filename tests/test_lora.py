"""LoRA as a stage option (peft): only the adapters (and what else the stage lists) train,
counted; the adapters are merged into the LLM when the stage ends and kept beside the stage's
weights; an interrupted LoRA stage resumes exactly; a finished one is reused."""
import json

import pytest
import torch
from safetensors.torch import load_file

from core.errors import ConfigError
from harness.runs.pipeline import run
from harness.specs.run_file import load_run_config
from harness.training import StageInterrupted
from tests.tiny import tiny_run_yaml

LORA_SECTION = "lora: {rank: 4, alpha: 8, dropout: 0.1, targets: [q_proj, v_proj]}, "
LORA = "train: [projector, lora], " + LORA_SECTION


def lora_yaml(name="lora", eval_batch=8) -> str:
    text = tiny_run_yaml(name, sft_steps=6, sft_checkpoint_every=100)
    old = "train: [projector, llm, experts], "
    assert old in text
    return text.replace(old, LORA).replace("batch_size: 8, max_new",
                                           f"batch_size: {eval_batch}, max_new")


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "lora.yaml"
    path.write_text(lora_yaml())
    return load_run_config(path)


def _sft_dir(workdir):
    (d,) = sorted((workdir / "stages").glob("sft-*"))
    return d


def test_only_the_adapters_train_and_are_merged_into_the_llm(cfg, tmp_path):
    result = run(cfg, tmp_path / "w", progress=False)
    sft = _sft_dir(tmp_path / "w")
    stage = json.loads((sft / "result.json").read_text())
    # rank x (in + out) per targeted linear layer: q_proj 32 -> 32, v_proj 32 -> 32 (1 layer)
    assert stage["trainable"] == {"projector": stage["trainable"]["projector"],
                                  "lora": 4 * (32 + 32) * 2}
    assert result.cost["trainable_parameters"]["sft"]["lora"] == 512
    from harness.planning.estimate import lora_params
    from models.llm import llm_config
    assert lora_params(llm_config(cfg.model.llm), cfg.stages[1].lora) == 512   # ablate plan's
    adapters = load_file(sft / "adapter.safetensors")
    assert sorted(adapters) == sorted(
        f"llm.model.layers.0.self_attn.{m}.lora_{ab}.default.weight"
        for m in ("q_proj", "v_proj") for ab in "AB")
    merged = load_file(sft / "weights.safetensors")
    llm = {n for n in merged if n.startswith("llm.")}
    assert llm == {"llm.model.layers.0.self_attn.q_proj.weight",
                   "llm.model.layers.0.self_attn.v_proj.weight"}
    # the merged weight is the initial one plus B A * alpha / rank
    from harness.runs.inputs import resolve_data
    from models.builder import build_model
    data = resolve_data(cfg, tmp_path / "w")
    fresh, _ = build_model(cfg.model, cfg.seed, tmp_path / "w" / "cache" / "llm", data.corpus)
    base = fresh.state_dict()["llm.model.layers.0.self_attn.q_proj.weight"]
    a = adapters["llm.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    b = adapters["llm.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    assert not torch.equal(b, torch.zeros_like(b))   # the adapter trained
    assert torch.allclose(merged["llm.model.layers.0.self_attn.q_proj.weight"],
                          base + (b @ a) * (8 / 4), atol=1e-6)
    # the run's model is the plain LLM again: no LoRA layer left, names as before
    rebuilt = json.loads((result.path / "stages.json").read_text())
    assert [s["name"] for s in rebuilt] == ["align", "sft"]


def test_an_interrupted_lora_stage_resumes_exactly_and_a_finished_one_is_reused(cfg, tmp_path):
    straight = run(cfg, tmp_path / "a", progress=False)
    with pytest.raises(StageInterrupted):
        run(cfg, tmp_path / "b", progress=False, stop_after=3)   # align: 3 of 4 steps
    with pytest.raises(StageInterrupted):
        run(cfg, tmp_path / "b", progress=False, stop_after=3)   # sft: 3 of 6
    resumed = run(cfg, tmp_path / "b", progress=False)
    for name in ("weights.safetensors", "adapter.safetensors"):
        wa, wb = (load_file(_sft_dir(tmp_path / w) / name) for w in "ab")
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    assert resumed.metrics == straight.metrics
    # another run with the same stages (only its evaluation differs) reuses the LoRA stage
    path = tmp_path / "other.yaml"
    path.write_text(lora_yaml("other", eval_batch=4))
    other = load_run_config(path)
    assert other.key != cfg.key
    again = run(other, tmp_path / "a", progress=False)
    assert [s["reused"] for s in json.loads((again.path / "stages.json").read_text())] == \
        [True, True]
    assert again.metrics == straight.metrics


@pytest.mark.parametrize("old,new,field", [
    ("train: [projector, lora], lora: {", "train: [projector], lora: {", "stages[1].lora"),
    (LORA, "train: [projector, lora], ", "stages[1].train"),
    ("rank: 4", "rank: 0", "stages[1].lora.rank"),
])
def test_bad_lora_sections_are_config_errors(tmp_path, old, new, field):
    path = tmp_path / "bad.yaml"
    text = lora_yaml()
    assert old in text
    path.write_text(text.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert err.value.field == field, str(err.value)


@pytest.mark.long   # 25-37 s; the 1-vs-2-rank FSDP equivalence runs by default in test_distributed
def test_a_lora_stage_on_two_fsdp_ranks_trains_what_one_process_trains(tmp_path):
    """FSDP2 shards the LLM with its adapters; the merged weights and the adapters equal one
    process's (fp32, within 1e-5), and so do the answers. Without LoRA dropout: its masks are
    drawn by each rank for its own samples, so with dropout two ranks draw other masks than
    one process does (as with any dropout)."""
    from tests.test_distributed import _ablate, _max_gap, _predictions, _weights
    for name, parallel, nproc in (("one", "", 1), ("fsdp", "parallel: {strategy: fsdp}\n", 2)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(lora_yaml().replace("dropout: 0.1", "dropout: 0.0") + parallel)
        done = _ablate("train", str(path), "--workdir", str(tmp_path / name), "--nproc",
                       str(nproc), "--no-progress")
        assert done.returncode == 0, done.stderr[-3000:]
    assert _max_gap(_weights(tmp_path / "one"), _weights(tmp_path / "fsdp")) < 1e-5
    adapters = [load_file(_sft_dir(tmp_path / n) / "adapter.safetensors") for n in ("one", "fsdp")]
    assert _max_gap(*adapters) < 1e-5
    assert _predictions(tmp_path / "fsdp") == _predictions(tmp_path / "one")


def test_a_lora_stage_paused_at_a_rung_is_scored_merged_and_continues_exactly(cfg, tmp_path):
    from harness.config.selection import Rung, SelectionSplit
    from harness.runs.pipeline import PausedRun
    straight = run(cfg, tmp_path / "a", progress=False)
    rung = Rung(1, 0.5, SelectionSplit(benchmarks=["synth-color"], synthetic_per_skill=3))
    paused = run(cfg, tmp_path / "b", progress=False, rung=rung)
    assert isinstance(paused, PausedRun) and paused.rung["step"] == 3
    finished = run(cfg, tmp_path / "b", progress=False)
    assert finished.metrics == straight.metrics
    wa, wb = (load_file(_sft_dir(tmp_path / w) / "weights.safetensors") for w in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
