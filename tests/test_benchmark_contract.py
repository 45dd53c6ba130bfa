"""Every registered benchmark keeps its contract, one test per registry entry (timm's habit),
so a benchmark module missing a part fails here by its name. A real benchmark writes its
fixture in the official layout, counts and loads it through its loader into questions with
the image placeholder and an existing image, closed exactly when its scorer is closed-form,
scores the known right answers as all right and reports its headline; a synthetic one has no
files and scores its skill's right answers as all right. Each module of the benchmarks
package registers at least one benchmark."""
from __future__ import annotations

import dataclasses
import importlib
import random
from collections import Counter
from pathlib import Path

import pytest

from harness.data.synthetic import SKILLS
from harness.evaluation.benchmarks import BENCHMARK_MODULES, BENCHMARKS, FIXTURE_WRITERS
from harness.evaluation.benchmarks.registry import Benchmark
from harness.evaluation.generate import Prediction, score
from harness.evaluation.scoring import SCORERS, is_closed_form
from harness.search.evidence import PER_QUESTION_MEANS
from models.templates import IMAGE_PLACEHOLDER

REAL = [n for n in BENCHMARKS.names() if BENCHMARKS.get(n).needs_source]
SYNTHETIC = [n for n in BENCHMARKS.names() if not BENCHMARKS.get(n).needs_source]


def _right_answer(references: list[str]) -> str:
    """The reference most annotators gave (VQA accuracy gives full credit to it only)."""
    return Counter(references).most_common(1)[0][0]


def _headline_of_right_answers(bench: Benchmark, questions: list[tuple[str, str, list[str],
                                                                        dict]]) -> dict:
    preds = [Prediction(qid, bench.name, prompt, _right_answer(refs), refs, meta)
             for qid, prompt, refs, meta in questions]
    metrics, per_question = score(preds, {bench.name: [q[0] for q in questions]})
    assert set(per_question[bench.name].values()) == {1.0}, \
        f"{bench.name}: right answers scored {per_question[bench.name]}"
    head = bench.headline(metrics[bench.name])
    assert head["metric"] == bench.main_metric and head["unit"] == bench.unit
    assert head["protocol"] and len(head["revision"]) == 16
    if bench.unit == "fraction":
        assert head["value"] == 1.0
    else:
        assert head["value"] > 0
    # half of them answered wrong: a headline the evidence rule of halving rungs pairs
    # question by question must be the mean of the per-question scores
    # (harness.search.evidence.PER_QUESTION_MEANS)
    mixed = [dataclasses.replace(p, prediction=p.prediction if i % 2 else "zq none of these")
             for i, p in enumerate(preds)]
    metrics, per_question = score(mixed, {bench.name: [q[0] for q in questions]})
    if bench.main_metric in PER_QUESTION_MEANS:
        scores = list(per_question[bench.name].values())
        assert metrics[bench.name][bench.main_metric] == pytest.approx(sum(scores) / len(scores))
    return head


@pytest.mark.parametrize("name", REAL)
def test_a_real_benchmark_loads_its_fixture_and_scores_right_answers(name, tmp_path):
    bench = BENCHMARKS.get(name)
    assert bench.format and bench.loader is not None
    assert bench.fixture is not None, f"benchmark '{name}' has no fixture writer"
    assert FIXTURE_WRITERS[name] is bench.fixture
    questions, images = bench.fixture(tmp_path / name)
    count = bench.check(questions, images)
    loaded = bench.load(questions, images, tmp_path / "cache")
    assert count == len(loaded) > 0
    for conv in loaded:
        assert conv.extra["benchmark"] == name and bench.select([conv]) == [conv]
        assert conv.turns[0][0].startswith(f"{IMAGE_PLACEHOLDER}\n")
        assert Path(conv.image).is_file()
        assert conv.extra["answers"]
    # closed: every question carries its allowed answers and each reference is one of them
    assert bench.closed == is_closed_form(SCORERS.get(bench.scorer))
    for conv in loaded:
        choices = conv.extra["choices"]
        if bench.closed:
            assert choices and conv.extra["answers"][0].lower() in {c.lower() for c in choices}
        else:
            assert choices is None
    _headline_of_right_answers(bench, [(c.id, c.turns[0][0], c.extra["answers"],
                                        c.extra["meta"]) for c in loaded])


@pytest.mark.parametrize("name", SYNTHETIC)
def test_a_synthetic_benchmark_scores_its_skills_right_answers(name):
    bench = BENCHMARKS.get(name)
    assert bench.loader is None and bench.fixture is None and not bench.closed
    skill = next(s for s in SKILLS.values() if s.benchmark == name)
    assert skill.scorer == bench.scorer and skill.family == bench.family
    rng = random.Random(0)
    scenes = [skill.render(rng, 64) for _ in range(4)]
    _headline_of_right_answers(bench, [(f"q{i}", s.question, [s.answer], {})
                                       for i, s in enumerate(scenes)])


@pytest.mark.parametrize("module", BENCHMARK_MODULES)
def test_each_benchmark_module_registers_a_benchmark(module):
    """Found by its presence, a module holds what it registers (one benchmark, or a tuple of
    them), and the registry holds that very benchmark."""
    values = vars(importlib.import_module(f"harness.evaluation.benchmarks.{module}")).values()
    held = [b for v in values for b in (v if isinstance(v, tuple) else (v,))
            if isinstance(b, Benchmark)]
    assert held, f"harness/evaluation/benchmarks/{module}.py registers no benchmark"
    assert all(BENCHMARKS.get(b.name) is b for b in held)
