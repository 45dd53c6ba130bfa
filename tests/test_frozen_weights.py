"""Frozen Linear and Conv weights held in the compute dtype while a stage trains under bf16
autocast: the same training, bit for bit, in less memory; the loaded weights are back after
the stage; a tied weight and a module that trains keep theirs; two FSDP ranks train with
them (mixed dtypes in one sharded group)."""
from __future__ import annotations

import glob
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from harness.cli import main
from harness.training.frozen import frozen_bytes, held_in, lowerable
from tests.test_distributed import _ablate
from tests.tiny import tiny_run_yaml

# four families: a tuned CLIP ViT (HF), SAM's windowed ViT, EVA-02 (timm) and Pix2Struct
# (variable-resolution patches) frozen; align freezes all four and the fp32 LLM
EXPERTS = ["{id: clip-vit, preset: tiny, resolution: 32, layers: [-1], freeze: false}",
           "{id: sam, preset: tiny, resolution: 32, layers: [-1], resample: unshuffle}",
           "{id: eva02, preset: tiny, resolution: 32, layers: [-1]}",
           "{id: pix2struct, preset: tiny, resolution: 32, layers: [-1]}"]


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight            # tied, as many LMs' output layer
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.LayerNorm(8)
        self.proj = nn.Linear(8, 8)
        for p in self.parameters():
            p.requires_grad_(False)
        self.proj.weight.requires_grad_(True)           # bias frozen, weight trains


def test_only_frozen_untied_linear_and_conv_weights_are_held_low_and_come_back():
    toy = _Toy()
    picked = {id(p) for p in lowerable(toy)}
    assert picked == {id(toy.conv.weight), id(toy.conv.bias)}
    before = {n: p.detach().clone() for n, p in toy.named_parameters()}
    objects = {n: p for n, p in toy.named_parameters()}
    with held_in(toy, torch.bfloat16, restore=True):
        assert toy.conv.weight.dtype == torch.bfloat16
        assert toy.embed.weight.dtype == toy.norm.weight.dtype == toy.proj.bias.dtype \
            == torch.float32
        assert frozen_bytes(toy)["bfloat16"] == 2 * (8 * 3 * 3 * 3 + 8)
    for n, p in toy.named_parameters():
        assert p is objects[n] and p.dtype == torch.float32 and torch.equal(p, before[n]), n


def _config(folder: Path, name: str, parallel: str, experts: list[str] = EXPERTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(tiny_run_yaml("frozen", sft_steps=3, experts=experts)
                    + f"precision: bf16\nparallel: {parallel}\n")
    return path


def _stage(work: Path, stage: str) -> tuple[dict, dict]:
    (folder,) = glob.glob(str(work / "stages" / f"{stage}-*"))
    start = json.loads((Path(folder) / "metrics.jsonl").read_text().splitlines()[0])
    return load_file(str(Path(folder) / "weights.safetensors")), start


def _predictions(work: Path) -> list[str]:
    (run,) = (work / "runs").iterdir()
    return [json.loads(line)["prediction"]
            for line in (run / "predictions.jsonl").read_text().splitlines()]


def test_held_in_bf16_the_stages_train_bit_for_bit_as_in_fp32_in_less_memory(tmp_path):
    for name in ("compute", "as_loaded"):
        path = _config(tmp_path / "cfg", name, f"{{frozen_weights: {name}}}")
        assert main(["train", str(path), "--workdir", str(tmp_path / name),
                     "--no-progress"]) == 0
    for stage in ("align", "sft"):
        low, low_start = _stage(tmp_path / "compute", stage)
        loaded, loaded_start = _stage(tmp_path / "as_loaded", stage)
        assert low.keys() == loaded.keys()
        assert all(torch.equal(low[k], loaded[k]) for k in low), stage
        held, kept = low_start["frozen_bytes"], loaded_start["frozen_bytes"]
        assert set(kept) == {"float32"} and held.get("bfloat16", 0) > 0, (held, kept)
        # nearly every frozen byte is a Linear or Conv weight: close to half the memory
        assert sum(held.values()) < 0.6 * sum(kept.values()), (stage, held, kept)
    assert _predictions(tmp_path / "compute") == _predictions(tmp_path / "as_loaded")


def test_two_fsdp_ranks_train_with_frozen_weights_held_in_bf16_as_in_fp32(tmp_path):
    """FSDP2 shards groups that hold bf16 frozen weights beside fp32 trainable ones (the
    copy it trains is made in host memory on a GPU); the same weights, bit for bit, as two
    ranks holding them in fp32."""
    work = {}
    for name in ("compute", "as_loaded"):
        path = _config(tmp_path / "cfg", name, f"{{strategy: fsdp, frozen_weights: {name}}}",
                       EXPERTS[:2])
        work[name] = tmp_path / name
        done = _ablate("train", str(path), "--workdir", str(work[name]), "--nproc", "2",
                       "--no-progress")
        assert done.returncode == 0, done.stderr[-3000:]
    low, start = _stage(work["compute"], "sft")
    loaded, _ = _stage(work["as_loaded"], "sft")
    assert (start["strategy"], start["ranks"]) == ("fsdp", 2)
    assert start["frozen_bytes"].get("bfloat16", 0) > 0
    assert low.keys() == loaded.keys()
    assert all(torch.equal(low[k], loaded[k]) for k in low)
    assert _predictions(work["compute"]) == _predictions(work["as_loaded"])
