"""MoVA's routing labels: the selection rule on known losses, and the whole loop on tiny runs
(base-only and single-expert runs -> `ablate routing-labels` -> a MoVA run routed by them)."""
import json

import pytest

from harness.cli import main
from harness.downstream.routing_labels import choose_experts
from tests.tiny import tiny_run_yaml

CLIP = "{id: clip-vit, preset: tiny, resolution: 32, layers: [-1]}"
SAM = "{id: sam, preset: tiny, resolution: 32, layers: [-1]}"
CONVNEXT = "{id: convnext, preset: tiny, resolution: 32, layers: [3]}"


def test_choose_experts_keeps_helpers_best_first_at_most_k():
    base = {"a": 2.0, "b": 1.0, "c": 3.0}
    with_expert = {"sam": {"a": 1.5, "b": 1.2, "c": 2.0},
                   "convnext": {"a": 1.0, "b": 1.1, "c": 2.9},
                   "pix2struct": {"a": 1.9, "b": 0.5, "c": 1.0}}
    labels = choose_experts(base, with_expert, max_experts=2)
    assert labels == {"a": ["convnext", "sam"], "b": ["pix2struct"],
                      "c": ["pix2struct", "sam"]}
    assert choose_experts(base, with_expert, margin=0.6)["a"] == ["convnext"]


def _config(tmp_path, name, experts, fusion):
    path = tmp_path / f"{name}.yaml"
    path.write_text(tiny_run_yaml(name, experts=experts, fusion=fusion))
    return path


@pytest.mark.long   # 20 s: the MoVA router's long acceptance covers routed runs too
@pytest.mark.slow
def test_labels_from_tiny_runs_drive_an_oracle_routed_mova_run(tmp_path, capsys):
    work = tmp_path / "work"
    runs = {"base": _config(tmp_path, "base", [CLIP], "{id: sequence_append}"),
            "sam": _config(tmp_path, "with_sam", [CLIP, SAM], "{id: sequence_append}"),
            "convnext": _config(tmp_path, "with_convnext", [CLIP, CONVNEXT],
                                "{id: sequence_append}")}
    assert main(["train", *map(str, runs.values()), "--workdir", str(work),
                 "--no-progress"]) == 0
    capsys.readouterr()
    from harness.specs.run_file import load_run_config
    dirs = {n: work / "runs" / load_run_config(p).key for n, p in runs.items()}
    labels_path = tmp_path / "labels.json"
    assert main(["routing-labels", "--base", str(dirs["base"]), "--expert",
                 f"sam={dirs['sam']}", "--expert", f"convnext={dirs['convnext']}",
                 "--out", str(labels_path), "--data", "sft"]) == 0
    assert "samples per expert" in capsys.readouterr().out
    sft_ids = [r["id"] for r in json.loads(next(work.glob("data/*/sft.json")).read_text())
               if r.get("image")]
    labels = json.loads(labels_path.read_text())
    assert sorted(labels) == sorted(sft_ids)
    assert all(set(v) <= {"sam", "convnext"} and len(v) <= 3 for v in labels.values())
    # eval samples are labelled the same way; the oracle needs every id it meets
    eval_labels = tmp_path / "eval_labels.json"
    assert main(["routing-labels", "--base", str(dirs["base"]), "--expert",
                 f"sam={dirs['sam']}", "--expert", f"convnext={dirs['convnext']}",
                 "--out", str(eval_labels), "--data", "eval"]) == 0
    merged = tmp_path / "all_labels.json"
    merged.write_text(json.dumps({**labels, **json.loads(eval_labels.read_text())}))
    mova = _config(tmp_path, "mova", [CLIP, SAM, CONVNEXT],
                   f"{{id: mova, depth: 1, router: oracle, labels: {merged}}}")
    assert main(["train", str(mova), "--workdir", str(work), "--no-progress"]) == 0
    key = load_run_config(mova).key
    cost = json.loads((work / "runs" / key / "cost.json").read_text())
    assert cost["fusion_added_parameters"] > 0


def test_routing_labels_refuses_an_unfinished_run(tmp_path, capsys):
    (tmp_path / "runs" / "abc").mkdir(parents=True)
    assert main(["routing-labels", "--base", str(tmp_path / "runs" / "abc"), "--expert",
                 f"sam={tmp_path}", "--out", str(tmp_path / "l.json")]) == 2
    assert "not a finished run directory" in capsys.readouterr().err


def test_labels_file_is_pinned_by_content(tmp_path):
    from harness.specs.run_file import load_run_config
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"s": ["sam"]}))
    fusion = "{id: mova, router: oracle, labels: labels.json}"   # relative to the config
    path = _config(tmp_path, "oracle", [CLIP, SAM], fusion)
    first = load_run_config(path)
    assert first.model.fusion.options.labels == str(labels)
    labels.write_text(json.dumps({"s": []}))
    assert load_run_config(path).key != first.key
    labels.unlink()
    from core.errors import ConfigError
    with pytest.raises(ConfigError, match="file not found") as err:
        load_run_config(path)
    assert err.value.field == "model.fusion.labels"
