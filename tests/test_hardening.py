"""Inputs that used to crash, hang or race, each now a clear error before anything runs
(file, line, field, allowed values; exit 2; no run directory, records or jobs) or safe: the
cases an outside check found and their neighbours. Ranges live in the schema
(core.fields.ranged), so every numeric field is checked the same way."""
from __future__ import annotations

import json
import multiprocessing
import random
import time
from pathlib import Path

import pytest

from core.errors import ConfigError
from harness.cli import main
from harness.specs.run_file import load_run_config

BASE = Path(__file__).parent.parent / "experiments" / "tiny" / "two_experts.yaml"


def mutate(tmp_path, old: str, new: str, name: str = "cfg.yaml") -> Path:
    text = BASE.read_text()
    assert old in text, old
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    return path


RANGES = [
    ("lr: 1.0e-3,\n     steps: 60", "lr: -1.0e-3,\n     steps: 60", "stages[0].lr",
     "must be > 0, got -0.001"),
    ("lrs: {experts: 3.0e-4}", "lrs: {experts: -3.0e-4}", "stages[1].lrs", "must be > 0"),
    ("fusion: {id: channel_concat, grid: 8}", "fusion: {id: channel_concat, grid: 0}",
     "model.fusion.grid", "must be >= 1, got 0"),
    ("fusion: {id: channel_concat, grid: 8}", "fusion: {id: channel_concat, grid: -4}",
     "model.fusion.grid", "must be >= 1, got -4"),
    ("train: [projector, fusion], lr", "train: [], lr", "stages[0].train",
     "needs at least 1 item"),
    ("steps: 60, batch_size: 32", "steps: 60, batch_size: 0", "stages[0].batch_size",
     "must be >= 1"),
    ("steps: 60, batch_size: 32", "steps: 0, batch_size: 32", "stages[0].steps",
     "must be >= 1"),
    ("steps: 60, batch_size: 32", "steps: 60, batch_size: 32, warmup_ratio: 1.5",
     "stages[0].warmup_ratio", "must be <= 1"),
    ("steps: 60, batch_size: 32", "steps: 60, batch_size: 32, weight_decay: -0.1",
     "stages[0].weight_decay", "must be >= 0"),
    ("resolution: 64, layers: [-1]", "resolution: 0, layers: [-1]", "model.experts[0].resolution",
     "must be >= 1"),
    ("resolution: 64, layers: [-1]", "resolution: 64, layers: []", "model.experts[0].layers",
     "needs at least 1 item"),
    ("resolution: 64, layers: [-1]", "resolution: 64, layers: [-1], lr: 0",
     "model.experts[0].lr", "must be > 0"),
    ("resolution: 64, layers: [-1]", "resolution: 64, layers: [-1], tiling: {rows: 0}",
     "model.experts[0].tiling.rows", "must be >= 1"),
    ("llm: {id: tiny-llama}", "llm: {id: tiny-llama, layers: 0}", "model.llm.layers",
     "must be >= 1"),
    ("  before_training: true", "  before_training: true\n  batch_size: 0", "eval.batch_size",
     "must be >= 1"),
    ("  before_training: true", "  before_training: true\n  max_new_tokens: -1",
     "eval.max_new_tokens", "must be >= 1"),
    ("train_per_skill: 400", "train_per_skill: -5", "data.synthetic.train_per_skill",
     "must be >= 1"),
    ("fusion: {id: channel_concat, grid: 8}", "fusion: {id: mova, k: 0}", "model.fusion.k",
     "must be >= 1"),
    ("fusion: {id: channel_concat, grid: 8}", "fusion: {id: dense_connector, alpha: 0}",
     "model.fusion.alpha", "must be >= 1"),
    ("max_length", "max_length", "", ""),   # placeholder removed below
]
RANGES = [c for c in RANGES if c[2]]


@pytest.mark.parametrize("old,new,field,message", RANGES, ids=[c[2] for c in RANGES])
def test_out_of_range_fields_are_named_with_their_line(tmp_path, old, new, field, message):
    path = mutate(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert err.value.field == field, str(err.value)
    assert message in str(err.value) and err.value.line is not None


def test_negative_lr_stops_train_before_a_run_directory(tmp_path, capsys):
    path = mutate(tmp_path, "lr: 1.0e-3,\n     steps: 60", "lr: -1.0e-3,\n     steps: 60")
    work = tmp_path / "work"
    assert main(["train", str(path), "--workdir", str(work)]) == 2
    assert "stages[0].lr: must be > 0" in capsys.readouterr().err
    assert not (work / "runs").exists()


def _spec(tmp_path, axes: str, extra: str = "") -> Path:
    (tmp_path / "base.yaml").write_text(BASE.read_text())
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: big\nbase: base.yaml\n{extra}axes:\n{axes}")
    return path


def test_a_huge_grid_is_counted_and_refused_at_once(tmp_path, capsys):
    values = [", ".join(str(10 * i + v) for v in range(10)) for i in range(10)]
    axes = "".join(f"  a{i}: {{path: seed, values: [{v}]}}\n" for i, v in enumerate(values))
    started = time.time()
    assert main(["plan", str(_spec(tmp_path, axes)), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert time.time() - started < 30
    assert "10,000,000,000 combinations" in err and "max_runs" in err
    assert "spec.yaml" in err


def test_max_runs_raises_the_limit(tmp_path, capsys):
    axes = "  lr: {path: \"stages[sft].lr\", values: [1.0e-3, 3.0e-4, 1.0e-4]}\n"
    assert main(["plan", str(_spec(tmp_path, axes, "max_runs: 2\n")), "--workdir",
                 str(tmp_path / "w")]) == 2
    assert "3 combinations" in capsys.readouterr().err
    assert main(["plan", str(_spec(tmp_path, axes, "max_runs: 3\n")), "--workdir",
                 str(tmp_path / "w")]) == 0


def test_yaml_python_tag_is_a_config_error_and_runs_nothing(tmp_path, capsys):
    path = tmp_path / "tag.yaml"
    path.write_text("name: x\nseed: !!python/name:os.system\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tag.yaml:2" in err and "unsupported YAML tag" in err and "Traceback" not in err


def test_workdir_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(SystemExit) as exit_:
        main(["plan", str(BASE), "--workdir", str(f)])
    assert exit_.value.code == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_cuda_without_a_gpu_is_refused_before_anything(tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    path = mutate(tmp_path, "seed: 0\n", "seed: 0\ndevice: cuda\n")
    work = tmp_path / "work"
    assert main(["train", str(path), "--workdir", str(work)]) == 2
    assert "device: cuda, but this machine has no GPU" in capsys.readouterr().err
    (tmp_path / "base.yaml").write_text(path.read_text())
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: gpu\nbase: base.yaml\n")
    assert main(["run", str(spec), "--workdir", str(work), "--executor", "local"]) == 2
    assert "no GPU" in capsys.readouterr().err
    assert not (work / "runs").exists() and not (work / "mlflow.db").exists()


def test_unknown_expert_in_the_base_is_blamed_on_the_base(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text(BASE.read_text().replace("{id: clip-vit, preset", "{id: clip-vitt, preset"))
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: blame\nbase: base.yaml\naxes:\n"
                    "  vision: {path: \"model.experts[clip-vit].freeze\", values: [true, false]}\n")
    assert main(["plan", str(spec), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "base.yaml:9: model.experts[0].id: unknown expert id 'clip-vitt'" in err
    assert "Did you mean: clip-vit" in err


# --- data files read before anything runs ------------------------------------------------------
def _real_data_config(tmp_path, sft_text: str) -> Path:
    from harness.rehearsal.generated_data import write_align
    align, images = write_align(tmp_path / "data", 8, random.Random(0))
    sft = tmp_path / "data" / "sft.json"
    sft.write_text(sft_text)
    text = BASE.read_text().replace(
        "  synthetic: {seed: 0, image_size: 64, train_per_skill: 400, eval_per_skill: 50}\n",
        f"  align: {{json: {align}, images: {images}}}\n"
        f"  sft: {{json: {sft}, images: {images}}}\n")
    synthetic = ("  benchmarks: [synth-color, synth-shape, synth-position, synth-count, "
                 "synth-pope, synth-chart,\n               synth-text]")
    text = text.replace(synthetic, "  benchmarks: [pope]\n  sources: {pope: {questions: "
                                   "pope/coco, images: pope/val2014}}")
    from harness.evaluation.benchmarks.pope import write_fixture as pope
    pope(tmp_path / "pope")
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("sft_text,message", [
    ('[{"id": 1,', "sft.json:1: malformed JSON"),
    ('{"conversations": []}', "expected a JSON list of records, got a dict"),
    ('[{"id": "a", "conversations": [{"from": "human", "value": "hi"}]}]',
     "turn 0 (human) has no gpt reply"),
])
def test_malformed_llava_json_is_a_config_error_before_any_run(tmp_path, capsys, sft_text,
                                                               message):
    path = _real_data_config(tmp_path, sft_text)
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert err.value.field == "data.sft.json" and message in str(err.value)
    work = tmp_path / "work"
    assert main(["train", str(path), "--workdir", str(work)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not (work / "runs").exists()


def test_stated_samples_are_checked_when_the_file_is_there(tmp_path):
    good = json.dumps([{"id": "a", "conversations": [{"from": "human", "value": "hi"},
                                                     {"from": "gpt", "value": "yo"}]}])
    path = _real_data_config(tmp_path, good)
    path.write_text(path.read_text().replace("sft.json, images:", "sft.json, samples: 2, "
                                                                  "images:"))
    with pytest.raises(ConfigError, match="states 2 records; .* has 1"):
        load_run_config(path)


# --- first use of shared files ------------------------------------------------------------------
def _open(uri: str, queue) -> None:
    try:
        from harness.tracking.store import open_store
        queue.put(open_store(uri).experiment("race", None))
    except Exception as exc:   # reported to the test
        queue.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_first_use_of_the_sqlite_store(tmp_path):
    """Three processes opening a fresh MLflow SQLite store and creating the same experiment at
    once (two `ablate run`s of one spec on a new work directory): one store, one experiment,
    no error."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_open, args=(uri, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert len(set(results)) == 1 and str(results[0]).isdigit(), results


