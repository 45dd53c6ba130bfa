"""Spec expansion: grid product, zipped axes, exclusions, named variants, name-addressed
override paths, and errors that name the spec file's line and field before anything runs."""
import textwrap

import pytest

from core.errors import ConfigError
from harness.specs import load_spec
from harness.specs.paths import PathError, canonical, overlaps

BASE = """\
name: base
seed: 0
data:
  synthetic: {seed: 1, image_size: 32, train_per_skill: 4, eval_per_skill: 2, captions: 8,
              text_only: 2, skills: [color]}
model:
  experts:
    - {id: clip-vit, preset: tiny, resolution: 32, layers: [-1], freeze: false}
    - {id: convnext, preset: tiny, resolution: 32, layers: [3]}
  fusion: {id: channel_concat, grid: 2}
  llm: {id: tiny-llama, hidden_size: 32, layers: 1, heads: 2, intermediate_size: 64,
        vocab_size: 300}
stages:
  - {name: align, data: align, template: plain, train: [projector], lr: 1.0e-3, steps: 2,
     batch_size: 2}
  - {name: sft, data: sft, train: [projector, llm, experts], lr: 1.0e-3, steps: 2,
     batch_size: 2}
eval: {benchmarks: [synth-color], batch_size: 4, max_new_tokens: 2}
"""


def write_spec(tmp_path, text: str):
    (tmp_path / "base.yaml").write_text(BASE)
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_zip_exclude_and_variants(tmp_path):
    spec = load_spec(write_spec(tmp_path, """\
        name: g
        base: base.yaml
        axes:
          fusion:
            path: model.fusion
            values: {concat: {id: channel_concat, grid: 2}, append: {id: sequence_append}}
          lr: {path: "stages[sft].lr", values: [1.0e-3, 3.0e-4]}
          res: {path: "model.experts[convnext].resolution", values: [32, 64]}
          steps: {path: "stages[sft].steps", values: [2, 4]}
        zip: [[res, steps]]
        exclude: [{fusion: append, lr: 3.0e-4}]
        variants:
          - {name: a}
          - {name: b, set: {seed: 7}}
        """))
    assert spec.axes == ["variant", "fusion", "lr", "res"[:3], "steps"]
    # 2 variants x (2 fusion x 2 lr - 1 excluded) x 2 zipped = 12
    assert len(spec.runs) == 12
    assert len({r.key for r in spec.runs}) == 12
    for r in spec.runs:
        cfg = r.config
        assert cfg.stages[1].lr == float(r.labels["lr"])
        assert cfg.model.experts[1].resolution == int(r.labels["res"])
        assert cfg.stages[1].steps == {"32": 2, "64": 4}[r.labels["res"]]  # zipped
        assert cfg.seed == (7 if r.labels["variant"] == "b" else 0)
        assert not (r.labels["fusion"] == "append" and r.labels["lr"] == "0.0003")
        assert cfg.name == r.name and r.name.startswith("g[variant=")
    # the name is not part of the identity
    assert spec.runs[0].key == spec.runs[0].config.key


def test_inline_base_and_override_sets(tmp_path):
    base = textwrap.indent(BASE, "  ")
    spec = load_spec(write_spec(tmp_path, "name: s\nbase:\n" + base + textwrap.dedent("""\
        axes:
          experts:
            values:
              frozen: {"model.experts[clip-vit].freeze": true}
              tuned: {"model.experts[clip-vit].freeze": false, "stages[sft].lrs": {experts: 1.0e-4}}
        """)))
    frozen, tuned = spec.runs
    assert frozen.config.model.experts[0].freeze is True
    assert tuned.config.stages[1].lrs == {"experts": 1.0e-4}


def test_relative_data_paths_follow_the_file_that_wrote_them(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.json").write_text(  # files are parsed when a spec loads
        '[{"id": "a", "conversations": [{"from": "human", "value": "hi"}, '
        '{"from": "gpt", "value": "yo"}]}]')
    spec = load_spec(write_spec(tmp_path, """\
        name: s
        base: base.yaml
        axes:
          data:
            values:
              real: {data.synthetic: null, data.align: {json: d/x.json, images: d},
                     data.sft: {json: d/x.json, images: d}, data.eval: {json: d/x.json, images: d}}
        """))
    assert spec.runs[0].config.data.align.json == str(tmp_path / "d" / "x.json")


BAD = [
    # (spec body after name/base, field, message)
    ("axes: {lr: {path: \"stages[sft].lr\", valuez: [1]}}", "axes.lr.valuez", "unknown field"),
    ("axes: {lr: {path: \"stages[sft].lr\", values: [fast]}}", "stages[1].lr",
     "expected a number"),
    ("axes: {d: {path: model.dropout, values: [0.1]}}", "model.dropout", "unknown field"),
    ("axes: {e: {path: \"model.experts[convnext].id\", values: [convnex]}}",
     "model.experts[1].id", "Did you mean: convnext"),
    ("axes: {f: {path: model.fusion, values: {x: {id: sequence_apend}}}}", "model.fusion.id",
     "sequence_append"),
    ("axes: {s: {path: \"stages[pretrain].lr\", values: [1]}}", "axes.s.values[0]",
     "no item named 'pretrain'"),
    ("axes:\n  a: {path: model.fusion, values: {x: {id: sequence_append}}}\n"
     "  b: {path: model.fusion.grid, values: [2]}", "axes.b.values[0]",
     "conflicting overrides"),
    ("axes: {lr: {path: \"stages[sft].lr\", values: [1.0e-3]}}\n"
     "exclude: [{lr: 1.0e-3}]", "exclude", "the grid is empty"),
    ("axes: {lr: {path: \"stages[sft].lr\", values: [1.0e-3]}}\n"
     "exclude: [{lrr: 1.0e-3}]", "exclude[0].lrr", "unknown axis"),
    ("axes: {lr: {path: \"stages[sft].lr\", values: []}}", "axes.lr.values",
     "at least one value"),
    ("axes:\n  a: {path: seed, values: [1, 2]}\n  b: {path: \"stages[sft].steps\", values: [2]}\n"
     "zip: [[a, b]]", "zip[0]", "same number of values"),
    ("axes: {a: {path: model.fusion, values: [{id: sequence_append}]}}", "axes.a.values[0]",
     "need labels"),
    ("axes: {a: {path: eval.batch_size, values: [4, 8]}}\nvariants: [{name: v}, {name: v}]",
     "variants[1].name", "used twice"),
]


@pytest.mark.parametrize("body,field,message", BAD)
def test_bad_spec_names_file_line_and_field(tmp_path, body, field, message):
    path = write_spec(tmp_path, "name: s\nbase: base.yaml\n" + body + "\n")
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert err.value.field == field, str(err.value)
    assert message in str(err.value)
    assert err.value.file == str(path) or field.startswith(("stages", "model"))
    assert err.value.line is not None


def test_errors_in_overridden_values_point_at_the_spec_line(tmp_path):
    path = write_spec(tmp_path, """\
        name: s
        base: base.yaml
        axes:
          lr:
            path: "stages[sft].lr"
            values: [1.0e-3, fast]
        """)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert (err.value.file, err.value.line) == (str(path), 6)


def test_errors_in_untouched_base_fields_point_at_the_base_file(tmp_path):
    path = write_spec(tmp_path, "name: s\nbase: base.yaml\naxes: {a: {path: seed, values: [1]}}\n")
    (tmp_path / "base.yaml").write_text(BASE.replace("layers: [3]", "layers: [9]"))
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert err.value.file == str(tmp_path / "base.yaml")
    assert (err.value.field, err.value.line) == ("model.experts[1]", 9)


def test_identical_runs_are_rejected(tmp_path):
    path = write_spec(tmp_path, """\
        name: s
        base: base.yaml
        axes: {a: {path: "stages[sft].lr", values: {x: 1.0e-3, y: 0.001}}}
        """)
    with pytest.raises(ConfigError, match="resolve to the same config"):
        load_spec(path)


def test_malformed_yaml(tmp_path):
    path = write_spec(tmp_path, "name: s\nbase: base.yaml\naxes: {a: [1, 2}\n")
    with pytest.raises(ConfigError, match="malformed YAML") as err:
        load_spec(path)
    assert err.value.line == 3


def test_paths():
    data = {"stages": [{"name": "align"}, {"name": "sft", "lr": 1}],
            "model": {"experts": [{"id": "clip-vit"}, {"id": "sam", "name": "sam-h"}]}}
    assert canonical("stages[sft].lr", data) == "stages[1].lr"
    assert canonical("model.experts[sam-h].layers", data) == "model.experts[1].layers"
    assert canonical("model.experts[-1]", data) == "model.experts[1]"
    assert canonical("stages[0].lrs.experts", data) == "stages[0].lrs.experts"
    for bad in ("stages[x].lr", "stages[5]", "model..x", "stages.lr[0]"):
        with pytest.raises(PathError):
            canonical(bad, data)
    assert overlaps("model.fusion", "model.fusion.grid")
    assert overlaps("stages[1]", "stages[1].lr")
    assert not overlaps("stages[1].lr", "stages[1].lrs")
