"""Every registered training strategy keeps the contract the loop relies on (timm's habit of
one test per registry entry): on the tiny model, in one process, it prepares the model, steps,
checkpoints, and resumes from its checkpoint to the weights of an uninterrupted stage. A
strategy that spans ranks runs in a one-process gloo group (its wrapper needs a process
group), so DDP and FSDP2 are exercised here, not collapsed to `single` as `choose` does on one
rank. The plan's side of the seam (how it shards state) is checked beside it."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from harness.data.batching import Collator, expert_transforms
from harness.data.llava import load_llava_json
from harness.data.synthetic import corpus, ensure_synthetic
from harness.specs.run_file import load_run_config
from harness.training import StageInterrupted
from harness.training.distributed import World
from harness.training.kernels import seed_kernels
from harness.training.launch import free_port
from harness.training.loop import StageRun
from harness.training.strategies import STRATEGIES, pick
from models.builder import build_model
from models.templates import TEMPLATES, template_corpus
from tests.tiny import tiny_run_yaml

STEPS = 2


class _Folder:
    """A stage folder as training sees it (harness.training.loop.StageFolder)."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def log(self, **metrics) -> None:
        with (self.path / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(metrics) + "\n")

    def metrics_log(self) -> list[dict]:
        log = self.path / "metrics.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def notice(self, message: str) -> None:
        raise AssertionError(f"unexpected notice: {message}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(run config, its sft stage, the built model, the stage's records and collator)."""
    folder = tmp_path_factory.mktemp("strategy_contract")
    (folder / "run.yaml").write_text(tiny_run_yaml("contract", sft_steps=STEPS))
    cfg = load_run_config(folder / "run.yaml")
    stage = cfg.stages[-1]                                # projector, LLM and CLIP train
    root = ensure_synthetic(cfg.data.synthetic, folder / "data")
    model, llm = build_model(cfg.model, cfg.seed, folder / "llm",
                             corpus(cfg.data.synthetic) + template_corpus())
    records = load_llava_json(root / "sft.json", root / "images")
    collate = Collator(llm.tokenizer, TEMPLATES.get(stage.template),
                       expert_transforms(model.experts, cfg.data.image_aspect_ratio),
                       root / "images")
    return cfg, stage, model, records, collate


@pytest.fixture(scope="module")
def one_rank_group():
    """A gloo process group of this process alone, for the wrappers that need one."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


def _train(tiny, name: str, folder: Path, stop_after: int | None = None):
    """The stage on a fresh copy of the tiny model with strategy `name` on one rank."""
    cfg, stage, model, records, collate = tiny
    seed_kernels(cfg.seed)
    world = World.single(torch.device("cpu"))
    strategy = STRATEGIES.get(name)(world, reshard=True)
    return StageRun(copy.deepcopy(model), stage, records, collate, _Folder(folder), cfg.seed,
                    world, cfg.parallel, stop_after=stop_after, progress=False,
                    strategy=strategy).run()


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_prepares_steps_checkpoints_and_resumes(name, tiny, one_rank_group, tmp_path):
    whole = _train(tiny, name, tmp_path / "whole")
    assert (whole.steps, whole.strategy) == (STEPS, name)
    with pytest.raises(StageInterrupted):
        _train(tiny, name, tmp_path / "resumed", stop_after=1)
    assert (tmp_path / "resumed" / "checkpoint").is_dir(), "no checkpoint after the first step"
    resumed = _train(tiny, name, tmp_path / "resumed")
    starts = [m for m in _Folder(tmp_path / "resumed").metrics_log()
              if m.get("event") == "start"]
    assert [m["step"] for m in starts] == [0, 1], starts   # the second run resumed at step 1
    assert resumed.weights.keys() == whole.weights.keys() and whole.weights
    for key, value in whole.weights.items():
        torch.testing.assert_close(resumed.weights[key], value, msg=key)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_declares_how_it_shards_state_for_the_plan(name):
    strategy = STRATEGIES.get(name)
    assert strategy.name == name
    assert strategy.state_shards(1) == 1
    assert strategy.state_shards(8) in (1, 8)
    if strategy.spans_ranks:   # what the plan and training pick for a request on 8 ranks
        assert pick(name, 8, 10) is strategy
    assert pick(name, 1, 10).name == "single"   # one rank: nothing to spread
