"""Answers that do not depend on how we batch (issue 30): a trained tiny run answers every
question with the same text whatever the evaluation's batch size (1 or 16), its number of ranks
(1 or 2, gloo) or the order of its questions, in greedy generation (synthetic benchmarks and
GQA's file format) and in likelihood scoring (POPE's file format). A shuffled order that puts
prompts of every length, with and without an image, into one batch is what stresses the left
padding, the attention mask and the position ids of batched generation.

The run is trained once (seconds) and then only evaluated again: the stages are reused, so
every comparison is of the same weights."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.data.batching import Collator, to_device
from harness.data.llava import Conversation, load_llava_json
from harness.evaluation.benchmarks import FIXTURE_WRITERS as WRITERS
from harness.evaluation.generate import choose_by_likelihood, collect_questions, generate
from harness.runs.pipeline import run
from harness.runs.rebuild import load_trained_run
from harness.specs.run_file import load_run_config
from tests.tiny import tiny_run_yaml

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ["synth-color", "synth-shape", "synth-count", "synth-pope", "gqa"]


def _run_yaml(root: Path, batch_size: int) -> Path:
    """The tiny run with four synthetic skills, GQA and POPE files; trained just enough
    (120 steps at a high rate) that its answers differ from question to question."""
    eval_yaml = f"""\
eval:
  benchmarks: [{", ".join(GENERATED)}, pope]
  batch_size: {batch_size}
  max_new_tokens: 4
  likelihood: [pope]
  sources:
    gqa: {{questions: {root}/gqa/testdev_balanced_questions.json, images: {root}/gqa/images}}
    pope: {{questions: {root}/pope/coco, images: {root}/pope/val2014}}
"""
    path = root / f"batch{batch_size}.yaml"
    path.write_text(tiny_run_yaml("batching", sft_steps=120, sft_batch=8,
                                  sft_checkpoint_every=1000, sft_lr="1.0e-2",
                                  skills="color, shape, count, existence", eval_per_skill=5,
                                  eval_yaml=eval_yaml))
    return path


def _answers(run_dir: Path) -> list[tuple[str, str, str, str]]:
    """(benchmark, question id, method, answer text) of each line of predictions.jsonl."""
    return [(p["benchmark"], p["id"], p["method"], p["prediction"])
            for p in map(json.loads, (run_dir / "predictions.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(folder with the configs, the workdir, the run evaluated one question at a time)."""
    root = tmp_path_factory.mktemp("batching")
    WRITERS["gqa"](root / "gqa")
    WRITERS["pope"](root / "pope")
    cfg = load_run_config(_run_yaml(root, 1))
    result = run(cfg, root / "work", progress=False)
    return root, root / "work", result.path


def test_the_trained_answers_differ_from_question_to_question(trained):
    """Otherwise equal answers across batchings would prove nothing: a model that answers
    every question alike cannot show a row answered with another row's input."""
    answers = _answers(trained[2])
    generated = [a for b, _, _, a in answers if b in GENERATED]
    assert len(generated) == 22 and len(set(generated)) >= 4, generated
    assert sum(a != "" for a in generated) >= 15, generated
    for name in GENERATED:   # within a batch of one benchmark too
        mine = [a for b, _, _, a in answers if b == name]
        assert len(set(mine)) >= (2 if name in ("synth-pope", "gqa") else 1), (name, mine)
    assert {m for b, _, m, _ in answers if b == "pope"} == {"likelihood"}


def test_batch_16_gives_the_answers_of_batch_1(trained):
    root, work, one = trained
    result = run(load_run_config(_run_yaml(root, 16)), work, progress=False)
    assert all(s["reused"] for s in json.loads((result.path / "stages.json").read_text()))
    assert _answers(result.path) == _answers(one)


def test_two_ranks_give_the_answers_of_one(trained):
    """Two gloo processes, each answering its half of every benchmark in batches of 16, from
    a copy of the workdir (its trained stages; hardware is not part of a run's key, so the
    same config in the same workdir would only reread the finished run)."""
    root, work, one = trained
    two = root / "two-ranks"
    shutil.copytree(work, two, ignore=lambda folder, names: ["runs"] if folder == str(work)
                    else [])
    done = subprocess.run([sys.executable, "-m", "harness.cli", "train",
                           str(_run_yaml(root, 16)), "--workdir", str(two), "--nproc", "2",
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (two / "runs").iterdir()
    assert json.loads((run_dir / "cost.json").read_text())["ranks"] == 2
    assert all(s["reused"] for s in json.loads((run_dir / "stages.json").read_text()))
    assert _answers(run_dir) == _answers(one)


@pytest.fixture(scope="module")
def rebuilt(trained):
    """(the finished run rebuilt from its directory, its questions by benchmark)."""
    _, work, one = trained
    again = load_trained_run(one)
    cfg = again.config
    return again, collect_questions(cfg.eval.benchmarks, load_llava_json(*again.data.eval),
                                    cfg.eval.sources, work / "cache" / "benchmarks")


def test_shuffled_mixed_batches_generate_the_answers_of_one_at_a_time(trained, rebuilt):
    """Every generated question and two text-only ones, shuffled into batches of 16 and of
    5 (prompts of different lengths, with and without an image, in one left-padded batch),
    against one question at a time: the same answers, and first-token logits that differ by
    rounding only."""
    again, questions = rebuilt
    tokenizer, template = again.tokenizer, again.eval_template()
    prompts = Collator(tokenizer, template, again.transforms(), again.data.eval[1],
                       for_generation=True)
    cpu = torch.device("cpu")
    mixed = [q for name in GENERATED for q in questions[name]] + [
        Conversation("text-3", None, [("What number comes after 3?", "4")], {}),
        Conversation("text-7", None, [("What number comes after 7? Answer with a single "
                                       "word.", "8")], {})]
    shuffled = random.Random(0).sample(mixed, len(mixed))

    def prompt_batch(chunk: list[Conversation]) -> dict:
        return to_device(prompts([Conversation(q.id, q.image, [(q.turns[0][0], "")], q.extra)
                                  for q in chunk]), cpu)

    first = prompt_batch(shuffled[:16])
    assert len(set(first["attention_mask"].sum(1).tolist())) > 3   # lengths really differ
    assert set(first["has_image"].tolist()) == {True, False}

    def first_logits(order: list[Conversation], batch_size: int) -> dict[str, torch.Tensor]:
        out = {}
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            b = prompt_batch(chunk)
            out.update(zip([q.id for q in chunk], again.model.next_token_logits(
                b["input_ids"], b["attention_mask"], b["pixels"], b["has_image"],
                b["sample_ids"])))
        return out

    # A row's logits may move by rounding with the rows batched beside it (CPU kernels block
    # a batch of 16 otherwise than one of 1), never by what those rows hold: the gap is
    # rounding-sized (measured: 3e-6) and far below every greedy choice's margin (0.45)
    single, batched = first_logits(mixed, 1), first_logits(shuffled, 16)
    gap = max((single[i] - batched[i]).abs().max().item() for i in single)
    top = torch.stack(list(single.values())).topk(2, dim=1).values
    margin = (top[:, 0] - top[:, 1]).min().item()
    assert gap < 1e-4 and gap < margin / 100, (gap, margin)

    def generated(order: list[Conversation], batch_size: int) -> dict[str, str]:
        # one benchmark name for all: generate batches within a benchmark, and these batches
        # are meant to mix every benchmark's prompts (the budget is the run's for all five)
        preds = generate(again.model, tokenizer, prompts, {"synth-color": order}, batch_size,
                         again.config.eval.max_new_tokens, template.stop_id(tokenizer), cpu,
                         progress=False)
        return {p.id: p.prediction for p in preds}

    alone = generated(mixed, 1)
    assert {k: v for k, v in alone.items() if not k.startswith("text-")} == {
        i: a for b, i, _, a in _answers(trained[2]) if b in GENERATED}
    assert generated(shuffled, 16) == alone
    assert generated(shuffled, 5) == alone


def test_shuffled_likelihood_batches_choose_the_answers_of_one_at_a_time(rebuilt):
    """POPE and the synthetic questions (each benchmark's answers as its choices, so the
    chosen answers vary) scored by likelihood, shuffled in batches of 7 against 1."""
    again, questions = rebuilt
    scoring = Collator(again.tokenizer, again.eval_template(), again.transforms(),
                       again.data.eval[1])
    closed = {"pope": questions["pope"]}
    for name in GENERATED[:4]:
        choices = sorted({a for q in questions[name] for a in q.extra["answers"]})
        closed[name] = [dataclasses.replace(q, extra={**q.extra, "choices": choices})
                        for q in questions[name]]

    def chosen(order: dict[str, list[Conversation]], batch_size: int) -> dict:
        preds = choose_by_likelihood(again.model, scoring, order, batch_size,
                                     torch.device("cpu"), progress=False)
        return {(p.benchmark, p.id): p.prediction for p in preds}

    by_one = chosen(closed, 1)
    assert len(set(by_one.values())) >= 4, by_one
    rng = random.Random(1)
    assert chosen({n: rng.sample(q, len(q)) for n, q in closed.items()}, 7) == by_one
