"""Bad input: a clear message naming file, line and field; exit code 2; nothing started and
no run directory left behind."""
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from core.errors import ConfigError
from core.registry import ChoiceRegistry
from harness.cli import main
from harness.config.schema import bind
from harness.config.yamlio import load_yaml
from harness.specs.run_file import load_run_config

BASE = Path(__file__).parent.parent / "experiments" / "tiny" / "two_experts.yaml"


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def mutate(tmp_path, old: str, new: str) -> Path:
    text = BASE.read_text()
    assert old in text, old
    return write(tmp_path, text.replace(old, new, 1))


CASES = [
    ("{id: clip-vit, preset", "{id: clip-vitt, preset", "model.experts[0].id",
     "Did you mean: clip-vit"),
    ("fusion: {id: channel_concat", "fusion: {id: channel_concatt", "model.fusion.id",
     "channel_concat"),
    ("llm: {id: tiny-llama}", "llm: {id: tiny-lama}", "model.llm.id", "tiny-llama"),
    ("resolution: 64, layers: [-1]", "resolution: 60, layers: [-1]", "model.experts[0]",
     "cannot take resolution 60"),
    ("layers: [3]", "layers: [7]", "model.experts[1]", "layer index 7"),
    ("projector: mlp2x_gelu", "projector: mlp2x_gelu\n  dropout: 0.1", "model.dropout",
     "unknown field"),
    ("seed: 0\n", "seed: zero\n", "seed", "expected an integer"),
    ("synth-color, synth-shape", "synth-colour, synth-shape", "eval.benchmarks[0]",
     "synth-color"),
    ("train: [projector, fusion], lr", "train: [projector, vision], lr", "stages[0].train[1]",
     "unknown module group"),
    # the expert whose resample method cannot reach the fusion's grid is the one named
    ("fusion: {id: channel_concat, grid: 8}", "fusion: {id: channel_concat, grid: 3}",
     "model.experts[1]", "average pooling"),
    # checked against the strategy registry (harness.training.strategies), auto besides
    ("seed: 0\n", "seed: 0\nparallel: {strategy: zero3}\n", "parallel.strategy",
     "got 'zero3'; allowed values: 'auto', 'ddp', 'fsdp', 'single'"),
]


@pytest.mark.parametrize("old,new,field,message", CASES)
def test_bad_field_is_named_with_its_line(tmp_path, old, new, field, message):
    if "grid: 3" in new:  # make the grid mismatch an avgpool one
        new_text = BASE.read_text().replace(old, new).replace("layers: [3]",
                                                              "layers: [3], resample: avgpool")
        path = write(tmp_path, new_text)
    else:
        path = mutate(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert err.value.field == field, str(err.value)
    assert message in str(err.value)
    assert err.value.line is not None and str(path) in str(err.value)


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\nmodel: {experts: [\n")
    with pytest.raises(ConfigError, match="malformed YAML") as err:
        load_run_config(path)
    assert err.value.line is not None


def test_missing_data_file_is_reported(tmp_path):
    text = BASE.read_text().replace(
        "synthetic: {seed: 0, image_size: 64, train_per_skill: 400, eval_per_skill: 50}",
        "align: {json: nowhere/align.json, images: nowhere}\n"
        "  sft: {json: nowhere/sft.json, images: nowhere}\n"
        "  eval: {json: nowhere/eval.json, images: nowhere}")
    with pytest.raises(ConfigError, match="file not found") as err:
        load_run_config(write(tmp_path, text))
    assert err.value.field == "data.align.json"


def test_thumbnail_tiling_cannot_be_channel_concatenated(tmp_path):
    path = mutate(tmp_path, "resolution: 64, layers: [-1], freeze: false}",
                  "resolution: 32, layers: [-1], freeze: false, "
                  "tiling: {rows: 2, cols: 2, thumbnail: true}}")
    with pytest.raises(ConfigError, match="thumbnail") as err:
        load_run_config(path)
    assert err.value.field == "model.experts[0]"


def test_cli_exits_2_and_leaves_no_run_directory(tmp_path, capsys):
    path = mutate(tmp_path, "{id: clip-vit, preset", "{id: clip-vitt, preset")
    workdir = tmp_path / "work"
    assert main(["train", str(path), "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.experts[0].id" in err
    assert not workdir.exists()


def test_cli_validate_and_list(capsys):
    assert main(["validate", str(BASE)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["list", "experts"]) == 0
    out = capsys.readouterr().out
    assert "pix2struct" in out and "presets:" in out


def test_slurm_profile_whose_limit_leaves_no_room_for_the_requeue_signal(tmp_path):
    from harness.config.profiles import load_profile
    path = tmp_path / "p.yaml"
    path.write_text("partition: debug\ntime_min: 1\nsignal_delay_s: 20\n")
    with pytest.raises(ConfigError) as err:
        load_profile(path, check_cluster=False)
    assert err.value.file == str(path) and "signal_delay_s + 90" in str(err.value)


# An id-keyed union of its own, as models.model_config.FusionSpec is over the fusion registry: the
# binder reads it through the registry's options types, not through anything fusion-specific.
@dataclass(frozen=True)
class WideOptions:
    width: int = 4


@dataclass(frozen=True)
class DeepOptions:
    layers: int = 2


class Wide:
    Options = WideOptions


class Deep:
    Options = DeepOptions


SHAPES = ChoiceRegistry("shape", lambda shape: shape.Options)
SHAPES.register("wide")(Wide)
SHAPES.register("deep")(Deep)


@dataclass(frozen=True)
class ShapeSpec:
    choices: ClassVar[ChoiceRegistry] = SHAPES
    id: str
    options: Any = None


@dataclass(frozen=True)
class Holder:
    shape: ShapeSpec


@pytest.mark.parametrize("text,field,message", [
    ("shape: {id: deep, width: 5}\n", "shape.width", "unknown field; allowed fields: layers"),
    ("shape: {id: wid}\n", "shape.id", "unknown shape id 'wid'. Did you mean: wide"),
    ("shape: {layers: 5}\n", "shape", "expected a mapping with an `id`; allowed ids: deep, wide"),
    ("shape: {id: deep, layers: deep}\n", "shape.layers", "expected an integer"),
])
def test_an_id_picks_the_options_type_its_fields_are_read_into(tmp_path, text, field, message):
    path = tmp_path / "shape.yaml"
    path.write_text("shape: {id: deep, layers: 5}\n")
    src = load_yaml(path)
    assert bind(Holder, src.data, src, "").shape == ShapeSpec("deep", DeepOptions(5))
    path.write_text(text)
    src = load_yaml(path)
    with pytest.raises(ConfigError) as err:
        bind(Holder, src.data, src, "")
    assert (err.value.field, err.value.line, err.value.file) == (field, 1, str(path))
    assert message in str(err.value)
