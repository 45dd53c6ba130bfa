"""Bad input found before anything is written or trained, and nothing written outside the work
directory: names that become paths (a spec's, a stage's, an expert's, an MMBench `index`),
YAML that would hang or run code (alias bombs, tags), benchmark files that used to fail only
at scoring, a batch micro_batch does not split under the inline executor, a search with an
unreachable tracker, and Ctrl-C of an inline run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.contained import OutsideWorkdir, inside, name_problem
from core.errors import ConfigError
from harness.cli import main
from harness.evaluation.benchmarks import BENCHMARKS
from harness.evaluation.benchmarks import FIXTURE_WRITERS as WRITERS
from harness.evaluation.questions import BenchmarkFileError
from harness.specs.run_file import load_run_config
from tests.tiny import tiny_run_yaml

ROOT = Path(__file__).parent.parent
BAD_NAMES = ["../../escaped", "/tmp/escaped-abs", "a/b", "..", "with space", "dot.ted", ""]


def _spec(tmp_path: Path, name: str = "safe", run_yaml: str | None = None,
          extra: str = "") -> Path:
    d = tmp_path / "spec"
    d.mkdir(exist_ok=True)
    (d / "base.yaml").write_text(run_yaml or tiny_run_yaml(sft_steps=2))
    path = d / "spec.yaml"
    path.write_text(f"name: {json.dumps(name)}\nbase: base.yaml\n"
                    "axes: {seed: {path: seed, values: [3]}}\n" + extra)
    return path


def _nothing_written(workdir: Path) -> None:
    assert not workdir.exists() or not any(workdir.iterdir()), sorted(workdir.rglob("*"))


# --- names that become paths -----------------------------------------------------------------

@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_spec_name_that_is_not_a_plain_name_is_refused_with_its_line(tmp_path, capsys, name):
    path = _spec(tmp_path, name)
    workdir = tmp_path / "work"
    assert main(["plan", str(path), "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1: name: " in err and "[A-Za-z0-9]" in err, err
    assert main(["run", str(path), "--workdir", str(workdir), "--executor", "inline"]) == 2
    _nothing_written(workdir)
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped-abs.json").exists()


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/escaped-abs", "st.age"])
def test_a_stage_name_that_is_not_a_plain_name_is_refused(tmp_path, capsys, name):
    path = tmp_path / "run.yaml"
    path.write_text(tiny_run_yaml(sft_steps=2).replace("{name: sft,",
                                                       f"{{name: {json.dumps(name)},"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:" in err and "stages[1].name:" in err and "cannot name" in err, err


@pytest.mark.parametrize("name", ["../../escaped", "/abs", "clip.v2", "a+b"])
def test_an_expert_name_that_is_not_a_plain_name_is_a_validation_error(tmp_path, capsys, name):
    """`clip.v2` used to be a KeyError traceback (experts.NAME module groups split at the
    dot); now it is refused like any other bad name."""
    path = tmp_path / "run.yaml"
    path.write_text(tiny_run_yaml(sft_steps=2).replace(
        "{id: clip-vit,", f"{{name: {json.dumps(name)}, id: clip-vit,"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model.experts[0].name:" in err and "Traceback" not in err, err
    with pytest.raises(ConfigError) as exc:
        load_run_config(path)
    line = path.read_text().splitlines().index(next(
        ln for ln in path.read_text().splitlines() if "id: clip-vit" in ln)) + 1
    assert exc.value.line == line and exc.value.field == "model.experts[0].name"


def test_a_search_name_and_expert_key_are_checked_before_anything_is_written(tmp_path, capsys):
    from tests.test_search import write_search
    workdir = tmp_path / "work"
    path = write_search(tmp_path, name="s", edit=("name: s", 'name: "../../escaped"'))
    assert main(["search", str(path), "--workdir", str(workdir)]) == 2
    assert "name: " in capsys.readouterr().err
    path = write_search(tmp_path, name="s2", edit=("    b: {id", '    "b.x": {id'))
    assert main(["search", str(path), "--workdir", str(workdir)]) == 2
    assert "search.experts.b.x: 'b.x' cannot name" in capsys.readouterr().err
    _nothing_written(workdir)
    assert not (tmp_path / "escaped").exists()


def test_inside_keeps_every_written_path_in_its_folder(tmp_path):
    root = tmp_path / "work"
    assert inside(root, "specs/x.json") == root / "specs" / "x.json"
    assert inside(root, root / "a" / ".." / "b") == root / "b"
    for bad in ("../x", "/etc/passwd", "a/../../x", str(tmp_path / "workx")):
        with pytest.raises(OutsideWorkdir):
            inside(root, bad)
    assert name_problem("clip-vit_2") is None
    assert all(name_problem(n) for n in BAD_NAMES)


def test_the_manifest_path_refuses_a_name_read_back_unchecked(tmp_path):
    """A name that reached the writer without the schema (a hand-edited manifest, an old
    record) is stopped where the path is made."""
    from analysis.report_manifest import manifest_path
    with pytest.raises(OutsideWorkdir):
        manifest_path(tmp_path, "../../escaped")


def _mmbench_with_index(tmp_path: Path, index: str) -> Path:
    tsv, _ = WRITERS["mmbench_dev"](tmp_path / "mmb")
    lines = tsv.read_text().splitlines()
    cells = lines[1].split("\t")
    cells[0] = index
    lines[1] = "\t".join(cells)
    tsv.write_text("\n".join(lines) + "\n")
    return tsv


@pytest.mark.parametrize("index", ["../../escaped", "/tmp/escaped-abs", "１２", "12/x", " 12"])
def test_an_mmbench_index_that_is_not_digits_never_names_a_file(tmp_path, index):
    """The index names the file the row's image is decoded to; a path in it is refused at
    validation and at load, and nothing is written."""
    tsv = _mmbench_with_index(tmp_path, index)
    cache = tmp_path / "work" / "cache"
    with pytest.raises(BenchmarkFileError) as exc:
        BENCHMARKS.get("mmbench_dev").questions(tsv, None, cache)
    assert f"{tsv}: line 2" in str(exc.value) and "ASCII digits" in str(exc.value)
    with pytest.raises(BenchmarkFileError):
        BENCHMARKS.get("mmbench_dev").check(tsv, None)
    assert not cache.exists() and not (tmp_path / "escaped.img").exists()


def test_checking_mmbench_writes_no_image(tmp_path):
    tsv, _ = WRITERS["mmbench_dev"](tmp_path / "mmb")
    before = sorted(tmp_path.rglob("*"))
    assert BENCHMARKS.get("mmbench_dev").check(tsv, None) == 9
    assert sorted(tmp_path.rglob("*")) == before


# --- YAML --------------------------------------------------------------------------------------

def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_once(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text("name: x\n" + _bomb())
    started = time.monotonic()
    assert main(["validate", str(path)]) == 2
    assert time.monotonic() - started < 2.0
    err = capsys.readouterr().err
    assert f"{path}: YAML aliases expand" in err and "billion laughs" in err, err


def test_a_recursive_alias_and_modest_aliases(tmp_path):
    from harness.config.yamlio import load_yaml
    path = tmp_path / "rec.yaml"
    path.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="recursive anchor"):
        load_yaml(path)
    path.write_text("x: &x {b: 1, c: [2, 3]}\ny: *x\n")   # an ordinary alias still reads
    assert load_yaml(path).data == {"x": {"b": 1, "c": [2, 3]}, "y": {"b": 1, "c": [2, 3]}}


@pytest.mark.parametrize("value,line", [
    ("seed: !!python/name:os.system\n", 2),                       # a scalar
    ("seed: 0\nstages: !!python/list [1]\n", 3),                  # a list
    ("seed: 0\nmodel: !!python/object/apply:os.system {}\n", 3),  # a mapping
    ("seed: 0\nmodel: !custom\n  a: 1\n", 3),                     # a local tag
    ("seed: !!str 0\n", 2),                                       # even a standard one
])
def test_every_yaml_tag_is_refused_with_its_line(tmp_path, capsys, value, line):
    path = tmp_path / "tag.yaml"
    path.write_text("name: x\n" + value)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"tag.yaml:{line}: unsupported YAML tag" in err and "Traceback" not in err, err


# --- benchmark files, named at validate and plan ---------------------------------------------

def _gqa_text(records: str) -> str:
    return "{" + records + "}"


GQA_REC = '"{qid}": {{"imageId": "n1", "question": "q?", "answer": "a"}}'


def _bad_gqa(root: Path, case: str) -> None:
    WRITERS["gqa"](root)
    qfile = root / "testdev_balanced_questions.json"
    if case == "repeated key":
        qfile.write_text(_gqa_text(", ".join([GQA_REC.format(qid=201), GQA_REC.format(qid=201)])))
    elif case == "no questions":
        qfile.write_text("{}")
    elif case == "missing field":
        qfile.write_text(_gqa_text('"7": {"imageId": "n1", "question": "q?"}'))
    elif case == "empty file":
        qfile.write_text("")


GQA_CASES = {"repeated key": "key '201': given twice",
             "no questions": "no GQA testdev-balanced questions",
             "missing field": "question 7: missing field 'answer'",
             "empty file": "the file is empty"}

GQA_EVAL = """\
eval:
  benchmarks: [synth-color, gqa]
  sources:
    gqa: {questions: gqa/testdev_balanced_questions.json, images: gqa/images}
"""
EVAL_LINE = ("eval: {benchmarks: [synth-color, synth-pope], batch_size: 8, max_new_tokens: 3,\n"
             "       before_training: false}\n")


def _with_eval(text: str, eval_yaml: str) -> str:
    assert EVAL_LINE in text
    return text.replace(EVAL_LINE, eval_yaml)


@pytest.mark.parametrize("case", list(GQA_CASES))
def test_a_bad_gqa_file_is_named_at_validate_and_plan(tmp_path, capsys, case):
    _bad_gqa(tmp_path / "spec" / "gqa", case)
    run_yaml = _with_eval(tiny_run_yaml(sft_steps=2), GQA_EVAL)
    spec = _spec(tmp_path, run_yaml=run_yaml)
    qfile = tmp_path / "spec" / "gqa" / "testdev_balanced_questions.json"
    assert main(["validate", str(spec.parent / "base.yaml")]) == 2
    err = capsys.readouterr().err
    assert "eval.sources.gqa.questions" in err and f"{qfile}:" in err, err
    assert GQA_CASES[case] in err, err
    workdir = tmp_path / "work"
    assert main(["plan", str(spec), "--workdir", str(workdir)]) == 2   # files here: checked
    assert GQA_CASES[case] in capsys.readouterr().err
    _nothing_written(workdir)


def test_a_halving_searchs_held_out_benchmark_file_is_checked_too(tmp_path):
    from tests.test_search import write_search
    good, images = WRITERS["gqa"](tmp_path / "gqa")
    _bad_gqa(tmp_path / "held_out", "repeated key")
    held_out = tmp_path / "held_out" / "testdev_balanced_questions.json"
    path = write_search(tmp_path, name="h", edit=(
        "seeds: [0]", "seeds: [0]\n  halving:\n    rungs: [0.5]\n    selection:\n"
                      "      benchmarks: [gqa]\n      sources:\n"
                      f"        gqa: {{questions: {held_out}, images: {images}}}"))
    path.write_text(path.read_text().replace("synth-pope: {max: 1, weight: 2}",
                                             "gqa: {max: 1}"))
    base = path.parent / "base.yaml"
    base.write_text(_with_eval(base.read_text(), GQA_EVAL.replace(
        "gqa/testdev_balanced_questions.json", str(good)).replace("gqa/images", str(images))))
    from harness.search import load_search_spec
    with pytest.raises(ConfigError) as exc:
        load_search_spec(path)
    assert exc.value.field == "search.halving.selection.sources.gqa.questions", exc.value
    assert "key '201': given twice" in exc.value.message


TEXTVQA_EVAL = """\
eval:
  benchmarks: [synth-color, textvqa]
  sources:
    textvqa: {questions: tv/TextVQA_0.5.1_val.json, images: tv/train_images}
"""


@pytest.mark.parametrize("data,message", [
    ([], "no TextVQA"),
    ([{"question_id": 1, "image_id": "t1", "question": "a?", "answers": ["x"]},
      {"question_id": 1, "image_id": "t2", "question": "b?", "answers": ["y"]}],
     "question id '1': given twice"),
])
def test_textvqa_without_questions_or_with_a_repeated_id_is_named(tmp_path, capsys, data,
                                                                  message):
    qfile, _ = WRITERS["textvqa"](tmp_path / "tv")
    qfile.write_text(json.dumps({"dataset_name": "textvqa", "data": data}))
    path = tmp_path / "run.yaml"
    path.write_text(_with_eval(tiny_run_yaml(sft_steps=2), TEXTVQA_EVAL))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{qfile}:" in err and message in err, err


def test_a_repeated_pope_question_and_an_empty_split_are_named(tmp_path):
    qdir, images = WRITERS["pope"](tmp_path / "pope")
    split = qdir / "coco_pope_popular.json"
    first = split.read_text().splitlines()[0]
    split.write_text(first + "\n" + first + "\n")
    with pytest.raises(BenchmarkFileError, match="given twice"):
        BENCHMARKS.get("pope").check(qdir, images)
    split.write_text("")
    with pytest.raises(BenchmarkFileError, match="coco_pope_popular.json: no POPE questions"):
        BENCHMARKS.get("pope").check(qdir, images)


def test_good_benchmark_files_pass_validation_and_count(tmp_path):
    qfile, images = WRITERS["gqa"](tmp_path / "gqa")
    assert BENCHMARKS.get("gqa").check(qfile, images) == 2
    qdir, images = WRITERS["pope"](tmp_path / "pope")
    assert BENCHMARKS.get("pope").check(qdir, images) == 12


# --- every check before anything is written --------------------------------------------------

def test_a_batch_micro_batch_does_not_split_writes_nothing_inline(tmp_path, capsys):
    """batch_size 4 does not split into micro-batches of 3: refused when the spec is read,
    so the inline executor creates no run directory and no MLflow run."""
    run_yaml = tiny_run_yaml(sft_steps=2) + "parallel: {micro_batch: 3}\n"
    spec = _spec(tmp_path, run_yaml=run_yaml)
    workdir = tmp_path / "work"
    assert main(["run", str(spec), "--workdir", str(workdir), "--executor", "inline"]) == 2
    err = capsys.readouterr().err
    assert "parallel.micro_batch:" in err and "allowed parallel.micro_batch: 1, 2, 4" in err, err
    _nothing_written(workdir)


def test_a_batch_the_jobs_ranks_do_not_split_is_refused_before_any_write(tmp_path, capsys,
                                                                        slurm_cluster):
    """One rank splits batch_size 4, so the spec is valid; a Slurm job of 3 tasks does not,
    which the submission's preflight finds before it writes the manifest or a run folder."""
    profile = tmp_path / "three.yaml"
    profile.write_text(Path(slurm_cluster).read_text() + "tasks_per_node: 3\n")
    spec = _spec(tmp_path)
    workdir = tmp_path / "work"
    assert main(["run", str(spec), "--workdir", str(workdir), "--executor", "slurm",
                 "--profile", str(profile), "--no-follow"]) == 2
    err = capsys.readouterr().err
    assert "parallel.micro_batch" in err and "does not divide over 3 ranks" in err, err
    _nothing_written(workdir)


def test_a_search_with_an_unreachable_tracker_writes_nothing(tmp_path, capsys):
    from tests.test_search import write_search
    path = write_search(tmp_path, name="s")
    workdir = tmp_path / "work"
    assert main(["search", str(path), "--workdir", str(workdir), "--executor", "inline",
                 "--tracking-uri", "http://127.0.0.1:9"]) == 2
    assert "cannot reach the MLflow server" in capsys.readouterr().err
    assert not (workdir / "searches").exists() and not (workdir / "specs").exists()
    _nothing_written(workdir)


# --- Ctrl-C -------------------------------------------------------------------------------------

def test_ctrl_c_of_an_inline_run_is_one_line_and_exit_130(tmp_path):
    spec = _spec(tmp_path, run_yaml=tiny_run_yaml(sft_steps=100_000, sft_checkpoint_every=50))
    workdir = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(spec),
                             "--workdir", str(workdir), "--executor", "inline"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:   # until the run trains its last stage
            statuses = list((workdir / "runs").glob("*/status.json"))
            if statuses and '"stage": "sft"' in statuses[0].read_text():
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.5)
        else:
            pytest.fail("the run never reached its sft stage")
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    assert "interrupted" in err
    status = json.loads(statuses[0].read_text())
    assert status["state"] == "INTERRUPTED", status
