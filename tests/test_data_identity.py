"""A run is its data's content: an edited answer in the fine-tuning JSON (same path, same
record count) makes a new key and the run is not DONE, with `status` naming the source; the
same data moved to another path keeps the key and the finished stages; a 0-byte, truncated or
non-image file is named by check-data (and by training, with its record) before it costs a
stage; a fingerprint cache hit does not read the file again."""
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from core.errors import ConfigError, DataError
from harness.cli import main
from harness.config.run_config import SyntheticData
from harness.data import fingerprints
from harness.data.batching import Collator
from harness.data.fingerprints import FingerprintCache
from harness.data.llava import Conversation
from harness.data.synthetic import ensure_synthetic
from harness.runs.data_changes import recorded_runs
from harness.runs.pipeline import run
from harness.runs.rundir import RunDir
from harness.runs.stages import stage_dir_name, stage_keys
from harness.scheduler.states import view_spec
from harness.specs import load_spec
from harness.specs.check_data import check_spec_data
from harness.specs.run_file import load_run_config
from tests.tiny import tiny_run_yaml


@pytest.fixture(autouse=True)
def _fresh_fingerprint_cache():
    """The CLI points the fingerprint cache at its work directory; each test starts apart."""
    fingerprints.use_workdir(None)
    yield
    fingerprints.use_workdir(None)


GENERATED = SyntheticData(seed=1, image_size=32, train_per_skill=8, eval_per_skill=3,
                          captions=16, text_only=4, skills=["color", "existence"])


def _data(tmp_path: Path, where: str = "scratch") -> Path:
    """LLaVA-format files and images (the synthetic generator writes the real format)."""
    generated = ensure_synthetic(GENERATED, tmp_path / "generated")
    folder = tmp_path / where / "data"
    shutil.copytree(generated, folder)
    return folder


def _run_file(tmp_path: Path, data: Path, name: str = "real", **tiny) -> Path:
    """tests/tiny.py's run with its data read from `data`'s files instead of generated."""
    block = "data:\n" + "".join(f"  {p}: {{json: {data}/{p}.json, images: {data}/images}}\n"
                                for p in ("align", "sft", "eval"))
    text = re.sub(r"data:\n  synthetic: \{.*?\}\n", block, tiny_run_yaml(name, **tiny),
                  flags=re.S)
    assert "synthetic" not in text
    path = tmp_path / f"{name}-{data.parent.name}.yaml"
    path.write_text(text)
    return path


def _spec(tmp_path: Path, base: Path) -> Path:
    path = tmp_path / f"spec-{base.stem}.yaml"
    path.write_text(f"name: identity\nbase: {base}\n")
    return path


def _edit_one_answer(json_path: Path) -> None:
    records = json.loads(json_path.read_text())
    n = len(records)
    turn = next(t for r in records for t in r["conversations"] if t["from"] == "gpt")
    turn["value"] = turn["value"] + " (corrected)"
    json_path.write_text(json.dumps(records))
    assert len(json.loads(json_path.read_text())) == n   # same path, same record count


def test_an_edited_answer_makes_a_new_key_and_status_names_the_source(tmp_path, capsys):
    data = _data(tmp_path)
    base = _run_file(tmp_path, data)
    work = tmp_path / "work"
    before = load_run_config(base)
    run(before, work, progress=False)
    recorded = json.loads((work / "runs" / before.key / "sources.json").read_text())
    assert recorded["sources"]["sft json"]["path"] == str(data / "sft.json")

    _edit_one_answer(data / "sft.json")
    after = load_run_config(base)
    assert after.key != before.key
    assert not RunDir(work / "runs" / after.key).done
    # the align stage read nothing that changed: it is still the same stage
    assert stage_keys(after)[0] == stage_keys(before)[0]
    assert stage_keys(after)[1] != stage_keys(before)[1]

    spec = load_spec(_spec(tmp_path, base))
    (view,) = view_spec(spec, work)
    assert view.state == "NEW"
    assert view.reason == f"data changed since run {before.key} (DONE): sft json"
    assert main(["status", str(_spec(tmp_path, base)), "--workdir", str(work)]) == 0
    assert "data changed since run" in capsys.readouterr().out
    assert main(["plan", str(_spec(tmp_path, base)), "--workdir", str(work)]) == 0
    assert f"#0: data changed since run {before.key} (DONE): sft json" in \
        capsys.readouterr().out


def test_the_same_data_moved_keeps_the_key_and_its_stages(tmp_path):
    scratch = _data(tmp_path, "scratch")
    work = tmp_path / "work"
    first = load_run_config(_run_file(tmp_path, scratch))
    result = run(first, work, progress=False)
    project = tmp_path / "project" / "data"
    project.parent.mkdir()
    shutil.move(scratch, project)   # moved from scratch to project storage
    moved = load_run_config(_run_file(tmp_path, project))
    assert moved.data.sft.json != first.data.sft.json
    assert moved.key == first.key
    assert stage_keys(moved) == stage_keys(first)
    again = run(moved, work, progress=False)   # DONE: nothing trains
    assert again.path == result.path
    # a run that differs after its first stage reuses that stage from the moved data
    other = load_run_config(_run_file(tmp_path, project, name="other", sft_lr="3.0e-4"))
    align_name, _, align_key = stage_keys(other)[0]
    assert align_key == stage_keys(first)[0][2]
    assert RunDir(work / "stages" / stage_dir_name(align_name, None, align_key)).done


def test_data_edited_after_submission_is_refused_by_the_job(tmp_path):
    data = _data(tmp_path)
    cfg = load_run_config(_run_file(tmp_path, data))
    _edit_one_answer(data / "sft.json")
    with pytest.raises(DataError, match=r"data changed since run \w+ was planned: sft json"):
        run(cfg, tmp_path / "work", progress=False)
    assert not (tmp_path / "work" / "stages").exists()   # nothing trained


def test_a_run_keyed_before_fingerprints_is_explained(tmp_path):
    data = _data(tmp_path)
    cfg = load_run_config(_run_file(tmp_path, data))
    old = RunDir(tmp_path / "work" / "runs" / "0123456789abcdef")   # keyed by paths
    plain = cfg.to_dict()
    for part in ("align", "sft", "eval"):
        plain["data"][part].pop("content")
    old.write_json("config.json", plain)
    old.set_status("DONE")
    (view,) = view_spec(load_spec(_spec(tmp_path, _run_file(tmp_path, data))), tmp_path / "work")
    assert view.state == "NEW"
    assert "run 0123456789abcdef (DONE) has this config but was keyed by its data's paths" \
        in view.reason
    assert list(recorded_runs(tmp_path / "work")) == [cfg.lineage]


def test_synthetic_runs_keep_their_keys():
    """Runs on generated data have no files to fingerprint: their keys are as before."""
    import yaml

    from core.identity import content_hash
    from harness.config.run_config import identity_form
    from harness.config.yamlio import Located
    from harness.specs.run_file import parse_run_config
    cfg = parse_run_config(Located(yaml.safe_load(tiny_run_yaml()), {}, "tiny.yaml"))
    plain = cfg.to_dict()
    assert identity_form(plain) == {k: v for k, v in plain.items()
                                    if k not in ("name", "parallel")}
    assert cfg.key == content_hash({k: v for k, v in plain.items()
                                    if k not in ("name", "parallel")})


BROKEN = {
    "empty": b"",
    "truncated": None,           # the first half of a real PNG
    "not-an-image": b"these are not the pixels you are looking for\n" * 20,
}


def _break_images(data: Path) -> dict[str, str]:
    """Three of the sft data's images replaced by a 0-byte, a truncated and a non-image file;
    kind -> record id."""
    records = json.loads((data / "sft.json").read_text())
    with_images = [r for r in records if r.get("image")]
    out = {}
    for (kind, content), record in zip(BROKEN.items(), with_images):
        path = data / "images" / record["image"]
        if content is None:
            whole = path.read_bytes()
            content = whole[: len(whole) // 2]
        path.write_bytes(content)
        out[kind] = record["id"]
    return out


def test_check_data_names_every_bad_image_before_training(tmp_path, capsys):
    data = _data(tmp_path)
    broken = _break_images(data)
    base = _run_file(tmp_path, data)
    spec = _spec(tmp_path, base)
    work = tmp_path / "work"
    code = main(["check-data", str(spec), "--workdir", str(work), "--workers", "2"])
    out = capsys.readouterr().out
    assert code == 1
    for kind, rid in broken.items():
        line = next(line for line in out.splitlines() if f"(id {rid!r})" in line)
        assert {"empty": "0 bytes", "truncated": "does not decode",
                "not-an-image": "does not decode"}[kind] in line
    assert "decoded now" in out
    # the verdict is kept by the image set's fingerprint: the second check decodes nothing
    assert main(["check-data", str(spec), "--workdir", str(work)]) == 1
    assert "checked before, same fingerprint" in capsys.readouterr().out
    # plan --check-data runs it too
    assert main(["plan", str(spec), "--workdir", str(work), "--check-data"]) == 1
    assert "3 of" in capsys.readouterr().out


def test_check_data_decodes_in_a_process_pool(tmp_path, monkeypatch):
    from harness.data import image_check
    data = _data(tmp_path)
    broken = _break_images(data)
    cfg = load_run_config(_run_file(tmp_path, data))
    monkeypatch.setattr(image_check, "IN_PROCESS_BELOW", 2)   # a handful of tiny images
    pools = []
    real_pool = image_check.ProcessPoolExecutor
    monkeypatch.setattr(image_check, "ProcessPoolExecutor",
                        lambda *a, **k: pools.append(a) or real_pool(*a, **k))
    report = check_spec_data([cfg], workers=2, progress=False)
    assert pools and pools[0][0] == 2
    found = {b.id for c in report.checks for b in c.bad}
    assert set(broken.values()) <= found
    assert report.bad == len(found)


def test_a_bad_image_at_training_names_its_record_and_file(tmp_path):
    data = _data(tmp_path)
    broken = _break_images(data)
    records = {r["id"]: r for r in json.loads((data / "sft.json").read_text())}
    rid = broken["truncated"]
    collate = Collator(None, None, {}, data / "images")
    sample = Conversation(rid, records[rid]["image"], [("q", "a")])
    with pytest.raises(DataError) as err:
        collate.images([sample])
    assert f"record id {rid!r}" in str(err.value)
    assert str(data / "images" / records[rid]["image"]) in str(err.value)


def test_bad_images_skip_trains_without_them_and_counts_them(tmp_path):
    data = _data(tmp_path)
    broken = _break_images(data)
    path = _run_file(tmp_path, data)
    path.write_text(path.read_text().replace("data:\n", "data:\n  bad_images: skip\n", 1))
    cfg = load_run_config(path)
    work = tmp_path / "work"
    result = run(cfg, work, progress=False)
    stages = json.loads((result.path / "stages.json").read_text())
    sft = next(s for s in stages if s["name"] == "sft")
    assert sft["skipped_bad_images"] == len(broken)
    align = next(s for s in stages if s["name"] == "align")
    assert align["skipped_bad_images"] == 0   # align.json names other images


def test_a_missing_image_is_named_at_validation(tmp_path):
    data = _data(tmp_path)
    records = json.loads((data / "sft.json").read_text())
    record = next(r for r in records if r.get("image"))
    (data / "images" / record["image"]).unlink()
    with pytest.raises(ConfigError) as err:
        load_run_config(_run_file(tmp_path, data))
    message = str(err.value)
    assert "data.align.images" in message or "data.sft.images" in message
    assert f"(id {record['id']!r}): image not found: {data / 'images' / record['image']}" \
        in message


def test_a_cache_hit_does_not_read_the_file_again(tmp_path, monkeypatch):
    data = _data(tmp_path)
    work = tmp_path / "work"
    reads = []
    digest = fingerprints._digest_file
    monkeypatch.setattr(fingerprints, "_digest_file", lambda p: reads.append(p) or digest(p))
    first = FingerprintCache(work).file_hash(data / "sft.json")
    assert len(reads) == 1
    assert (work / fingerprints.CACHE_FILE).is_file()
    # a later plan (a fresh process: a new cache object reading the cache file)
    again = FingerprintCache(work)
    assert again.file_hash(data / "sft.json") == first
    assert len(reads) == 1
    # through a symlink (the same real path) it is the same entry
    (tmp_path / "link.json").symlink_to(data / "sft.json")
    assert again.file_hash(tmp_path / "link.json") == first and len(reads) == 1
    # a changed file (size or mtime) is read again
    _edit_one_answer(data / "sft.json")
    assert FingerprintCache(work).file_hash(data / "sft.json") != first
    assert len(reads) == 2
    # same size, new mtime: read again
    stat = os.stat(data / "sft.json")
    os.utime(data / "sft.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    FingerprintCache(work).file_hash(data / "sft.json")
    assert len(reads) == 3


def _benchmark_run(tmp_path: Path, files: Path) -> Path:
    """tests/tiny.py's run evaluated on GQA (a question file) and POPE (a question folder),
    their files in the official layouts (harness.evaluation.benchmarks) under `files`."""
    from harness.evaluation.benchmarks import FIXTURE_WRITERS as WRITERS
    gqa = WRITERS["gqa"](files / "gqa")
    pope = WRITERS["pope"](files / "pope")
    eval_yaml = ("eval:\n  benchmarks: [gqa, pope]\n  batch_size: 8\n  max_new_tokens: 3\n"
                 "  sources:\n"
                 f"    gqa: {{questions: {gqa[0]}, images: {gqa[1]}}}\n"
                 f"    pope: {{questions: {pope[0]}, images: {pope[1]}}}\n")
    path = tmp_path / f"bench-{files.name}.yaml"
    path.write_text(tiny_run_yaml("bench", eval_yaml=eval_yaml))
    return path


def test_benchmark_files_enter_the_key_by_content(tmp_path):
    from harness.runs.data_changes import write_sources
    base = _benchmark_run(tmp_path, tmp_path / "scratch")
    before = load_run_config(base)
    assert set(before.eval.sources["pope"].content) == {"questions", "images"}
    work = tmp_path / "work"
    recorded = RunDir(work / "runs" / before.key)   # a finished run of it, as run() records
    write_sources(recorded, before)
    recorded.set_status("DONE")

    # the same files elsewhere: the same run
    shutil.copytree(tmp_path / "scratch", tmp_path / "project")
    assert load_run_config(_benchmark_run(tmp_path, tmp_path / "project")).key == before.key

    # one GQA answer edited: a new run; training is unaffected (stages are kept)
    questions = Path(before.eval.sources["gqa"].questions)
    data = json.loads(questions.read_text())
    data["201"]["answer"] = "blue"
    questions.write_text(json.dumps(data))
    edited = load_run_config(base)
    assert edited.key != before.key and stage_keys(edited) == stage_keys(before)
    spec = _spec(tmp_path, base)
    (view,) = view_spec(load_spec(spec), work)
    assert view.reason == f"data changed since run {before.key} (DONE): benchmark gqa questions"

    # a POPE image replaced by other bytes of the same size: the image sample sees it
    image = next(Path(before.eval.sources["pope"].images).iterdir())
    raw = bytearray(image.read_bytes())
    raw[-1] ^= 0xFF
    image.write_bytes(bytes(raw))
    (view,) = view_spec(load_spec(spec), work)
    assert view.reason.endswith("benchmark gqa questions, benchmark pope images")


def test_a_second_plan_reads_no_data_file(tmp_path, monkeypatch, capsys):
    """The JSON's hash and its image names come from the work directory's cache: a plan in a
    fresh process (a fresh cache object) hashes and parses nothing; it stats the images."""
    from harness.data import llava
    data = _data(tmp_path)
    spec = _spec(tmp_path, _run_file(tmp_path, data))
    work = tmp_path / "work"
    assert main(["plan", str(spec), "--workdir", str(work)]) == 0
    first = capsys.readouterr().out
    fingerprints.use_workdir(None)   # as a new process starts

    def no_read(*_):
        raise AssertionError("a data file was read again")
    monkeypatch.setattr(fingerprints, "_digest_file", no_read)
    monkeypatch.setattr(llava, "read_llava_records", no_read)
    assert main(["plan", str(spec), "--workdir", str(work)]) == 0
    assert capsys.readouterr().out == first


@pytest.mark.parametrize("workers", [0, 1])
def test_a_bad_image_fails_the_stage_naming_record_and_file(tmp_path, workers):
    """Without check-data, the stage that reaches the image fails with its record and file in
    the run's status, not a PIL traceback (nor a loader worker's)."""
    data = _data(tmp_path)
    broken = _break_images(data)
    path = _run_file(tmp_path, data)
    path.write_text(path.read_text() + f"parallel: {{loader_workers: {workers}}}\n")
    cfg = load_run_config(path)
    work = tmp_path / "work"
    with pytest.raises(DataError):
        run(cfg, work, progress=False)
    status = RunDir(work / "runs" / cfg.key).status()
    assert status["state"] == "FAILED"
    assert "the image does not decode" in status["reason"]
    assert any(f"record id {rid!r}" in status["reason"] for rid in broken.values())
    assert "Traceback" not in status["reason"]


def test_rehearse_checks_the_specs_own_data(tmp_path):
    import io

    from harness.rehearsal.run import check_real_data
    data = _data(tmp_path)
    broken = _break_images(data)
    stream = io.StringIO()
    problems = check_real_data([load_run_config(_run_file(tmp_path, data))], stream)
    assert all(any(f"(id {rid!r})" in line for line in problems) for rid in broken.values())
    assert "do not decode" in stream.getvalue()
