"""Scoring a finished run again from the predictions it stored, when the code that scores a
benchmark has changed since (its revision, harness.evaluation.revision, differs from the one
the run's scores.json records, or the run predates revisions). Nothing is generated again and
no model is built: the answers are the run's, only their scoring is today's.

The earlier files are kept, unchanged, in the run's superseded/<time>/ folder and the change
is logged in its metrics.jsonl, so a number that moved can always be traced. The new files
are each written atomically, scores.json last: scores.json's revision is what marks the run
as scored by today's code, so a re-scoring cut short is simply done again next time.

Callers hold the run's lock (`rescore_run`), or let `rescore_finished` take it."""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import DataError
from core.files import atomic_write_text, file_lock
from harness.evaluation.benchmarks import BENCHMARKS
from harness.evaluation.scores import headlines, read_scores

TAGS = ("", "_untrained")   # the trained run's scoring, and the one before training
SUPERSEDED = "superseded"


@dataclass
class Rescored:
    """One scoring of a run's predictions again: each benchmark's headline before and after."""
    run: Path
    name: str
    tag: str
    before: dict[str, dict]
    after: dict[str, dict]
    kept: Path                # the folder holding the files it replaced

    def lines(self) -> list[str]:
        when = " (before training)" if self.tag else ""
        out = []
        for bench, new in self.after.items():
            old = self.before[bench]
            out.append(f"{self.name} ({self.run.name}){when}: {bench} scored again from its "
                       f"predictions with '{new['protocol']}' (revision "
                       f"{old.get('revision') or 'unrecorded'} -> {new['revision']}): "
                       f"{_shown(old)} -> {_shown(new)}")
        out.append(f"  the earlier scores are kept in {self.kept}")
        return out


def _shown(headline: dict) -> str:
    value = headline["value"]
    return f"{value:.1f}" if headline["unit"] == "points" else f"{100 * value:.1f}%"


def stale(run_path: Path, tag: str = "") -> list[str]:
    """The benchmarks of the run's scores{tag}.json that today's code would score
    differently: recorded under another revision, or under none. A benchmark no longer
    registered has no current revision and is left as it is."""
    scores = read_scores(run_path, tag) or {}
    return [b for b, h in scores.items()
            if b in BENCHMARKS and h.get("revision") != BENCHMARKS.get(b).revision]


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc})") from None


def read_predictions(path: Path, benchmarks: list[str]) -> list:
    """The stored predictions of `benchmarks`, in the order the run wrote them."""
    from harness.evaluation.generate import Prediction
    names = {f.name for f in dataclasses.fields(Prediction)}
    if not path.exists():
        raise DataError(f"{path}: missing; the run's answers are needed to score it again")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if record.get("benchmark") in benchmarks:
                out.append(Prediction(**{k: v for k, v in record.items() if k in names}))
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise DataError(f"{path}:{n}: not a prediction record ({exc})") from None
    return out


def _keep(run_path: Path, tag: str) -> Path:
    """Copy the files about to be replaced into a new superseded/<UTC time><tag> folder."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = run_path / SUPERSEDED / f"{stamp}{tag}"
    n = 1
    while folder.exists():   # scored again twice within a second
        n += 1
        folder = run_path / SUPERSEDED / f"{stamp}{tag}-{n}"
    folder.mkdir(parents=True)
    for stem in ("metrics", "scores", "per_question"):
        source = run_path / f"{stem}{tag}.json"
        if source.exists():
            shutil.copy2(source, folder / source.name)
    return folder


def rescore(run_path: Path, tag: str = "") -> Rescored | None:
    """Score the run's stale benchmarks (of scores{tag}.json) again from predictions{tag}.jsonl
    with today's scorers; None when none is stale. The caller holds the run's lock."""
    from harness.evaluation.generate import score
    run_path = Path(run_path)
    benchmarks = stale(run_path, tag)
    if not benchmarks:
        return None
    source = run_path / f"predictions{tag}.jsonl"
    predictions = read_predictions(source, benchmarks)
    expected: dict[str, list[str]] = {b: [] for b in benchmarks}
    for p in predictions:
        expected[p.benchmark].append(p.id)
    try:
        metrics, per_question = score(predictions, expected)
    except RuntimeError as exc:   # a benchmark without answers, or one answered twice
        raise DataError(f"{source}: cannot be scored again: {exc}") from None
    before = read_scores(run_path, tag) or {}
    after = headlines(metrics)
    kept = _keep(run_path, tag)
    all_metrics = {**_read_json(run_path / f"metrics{tag}.json"), **metrics}
    all_per_question = {**_read_json(run_path / f"per_question{tag}.json"), **per_question}
    for name, value in ((f"metrics{tag}.json", all_metrics),
                        (f"per_question{tag}.json", all_per_question),
                        (f"scores{tag}.json", {**before, **after})):   # the marker: last
        atomic_write_text(run_path / name, json.dumps(value, indent=1, default=str))
    with open(run_path / "metrics.jsonl", "a") as log:   # the run's log (RunDir.log)
        log.write(json.dumps({"event": "rescore", "tag": tag, "kept": str(kept),
                              "time": time.time(),
                              "benchmarks": {b: {"before": before.get(b), "after": after[b]}
                                             for b in benchmarks}}) + "\n")
    config = _read_json(run_path / "config.json")
    return Rescored(run_path, config.get("name", run_path.name), tag,
                    {b: before[b] for b in benchmarks}, after, kept)


def _done(run_path: Path) -> bool:
    try:
        return _read_json(run_path / "status.json").get("state") == "DONE"
    except DataError:
        return False


def rescore_run(run_path: Path) -> list[Rescored]:
    """A finished run's scorings (trained, and before training where it has one) whose code
    has changed, scored again; the caller holds the run's lock."""
    run_path = Path(run_path)
    if not _done(run_path):
        return []
    return [r for tag in TAGS if (r := rescore(run_path, tag)) is not None]


def rescore_finished(run_paths: list[Path]) -> tuple[list[Rescored], list[str]]:
    """Every finished run among `run_paths` scored again where its scoring is stale, each
    under its run's lock; returns what was re-scored and, per run that could not be, why
    (its earlier scores stand)."""
    done, problems = [], []
    for path in map(Path, run_paths):
        try:
            if not _done(path) or not any(stale(path, tag) for tag in TAGS):
                continue   # the cheap check first: most runs are current
            with file_lock(path / ".lock"):   # RunDir.lock_path (RunDir itself loads torch)
                done += rescore_run(path)
        except (DataError, ValueError) as exc:   # ValueError: a scores file that is not JSON
            problems.append(f"{path.name}: not scored again, its earlier scores stand: {exc}")
    return done, problems
