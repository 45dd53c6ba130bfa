"""What each run of a spec is doing now, read from its run directory and its job: the live
table `ablate run` follows and `ablate status` prints.

States: DONE, RUNNING (a live process holds the run's lock), STARTING (its job is up but has
not taken the lock yet), QUEUED (waiting in Slurm or in the local dispatcher), FAILED and
INTERRUPTED (the run directory says so, with the reason), LOST (the run was started or
queued but no process or job is behind it any more, e.g. killed), PAUSED (a successive-
halving search stopped its last stage at a rung; the reason says where and, for a candidate
the search dropped, by how much it trailed), NEW (never submitted). A run that is not DONE
and not in flight is what `ablate run` submits (a paused one continues from its
checkpoint)."""
from __future__ import annotations

import dataclasses
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.evaluation.scores import average, read_scores
from harness.runs.data_changes import data_note, recorded_runs
from harness.runs.rundir import RunDir
from harness.specs import ExperimentSpec, PlannedRun

IN_FLIGHT = {"RUNNING", "STARTING", "QUEUED"}
FINAL = {"DONE", "FAILED", "INTERRUPTED", "LOST", "PAUSED"}
SUBMITTABLE = {"NEW", "FAILED", "INTERRUPTED", "LOST", "PAUSED"}


@dataclass
class RunView:
    run: PlannedRun
    run_dir: RunDir
    state: str
    detail: str = ""
    job_id: str | None = None
    log: str | None = None
    reason: str | None = None
    notices: list[str] = dataclasses.field(default_factory=list)   # failed checks


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a finished child not yet reaped is a zombie, not a live job
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def slurm_queue() -> dict[str, str]:
    """Job id (array tasks as 123_4) -> Slurm state, for this user's queued and running jobs."""
    if shutil.which("squeue") is None:
        return {}
    proc = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"],
                          capture_output=True, text=True, timeout=30)
    out = {}
    for line in proc.stdout.splitlines():
        job, state, reason = (line.split("|") + ["", ""])[:3]
        waiting = state == "PENDING" and reason not in ("", "None", "(null)")
        out[job.strip()] = f"{state} ({reason})" if waiting else state
    return out


def _stage_log_ends(stage_dir: Path) -> tuple[bytes, list[bytes]] | None:
    """The first line of a stage's metrics.jsonl (the start record, with the total) and the
    lines of its last 4 KiB (the newest steps), or None when it cannot be read: only the two
    ends of a long log are read, however long the stage."""
    try:
        with open(stage_dir / "metrics.jsonl", "rb") as f:
            first = f.readline()
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            return first, f.read().splitlines()
    except OSError:
        return None


def _record(line: bytes) -> dict:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _progress(status: dict) -> str:
    """"stage step/total" from the stage's metrics.jsonl."""
    stage_dir = status.get("stage_dir")
    if not stage_dir:
        return "preparing"
    if (Path(stage_dir) / "result.json").exists():
        return f"{status.get('stage')} done, evaluating"
    ends = _stage_log_ends(Path(stage_dir))
    if ends is None:
        return status.get("stage", "")
    first, tail = ends
    step = next((r["step"] for r in map(_record, reversed(tail)) if "step" in r), 0)
    return f"{status.get('stage')} {step}/{_record(first).get('total') or '?'}"


def heartbeat(status: dict) -> str:
    """One line on a running stage for a log nobody watches: step/total, the latest loss, the
    mean seconds per step over the newest steps logged, and the time left at that pace."""
    stage_dir = status.get("stage_dir")
    ends = _stage_log_ends(Path(stage_dir)) if stage_dir else None
    if ends is None:
        return _progress(status)
    first, tail = ends
    steps = [r for r in map(_record, tail) if "loss" in r and "step" in r]
    total = _record(first).get("total")
    if not steps:
        return _progress(status)
    last = steps[-1]
    times = [r["step_time"] for r in steps[-20:] if isinstance(r.get("step_time"), (int, float))]
    pace = sum(times) / len(times) if times else None
    parts = [f"{status.get('stage')} step {last['step']}/{total or '?'}",
             f"loss {last['loss']:.4g}"]
    if pace:
        parts.append(f"{pace:.2f} s/step")
        if total:
            left = max(0, total - last["step"]) * pace
            parts.append(f"ETA {int(left // 3600)}h{int(left % 3600 // 60):02d}m")
    return ", ".join(parts)


def _score(run_dir: RunDir) -> str:
    try:
        scores = read_scores(run_dir.path)
    except (OSError, json.JSONDecodeError, KeyError):
        return ""
    avg = average(scores) if scores else None
    return f"avg {100 * avg:.1f}" if avg is not None else ""


def _job(run_dir: RunDir) -> dict:
    f = run_dir.path / "job.json"
    try:
        return json.loads(f.read_text()) if f.exists() else {}
    except json.JSONDecodeError:
        return {}


def _job_in_flight(job: dict, queue: dict[str, str] | None) -> tuple[str, str] | None:
    """(state, detail) while the run's job is queued or up, else None."""
    job_id = job.get("job_id")
    if job.get("executor") == "slurm" and job_id:
        slurm_state = (queue or {}).get(job_id)
        if slurm_state:
            return ("QUEUED" if slurm_state.startswith("PENDING") else "STARTING",
                    slurm_state.lower())
    elif job.get("executor") == "local" and job.get("host") == socket.gethostname():
        if job_id and pid_alive(int(job_id)):
            return "STARTING", ""
        if not job_id and pid_alive(job.get("dispatcher_pid")):
            return "QUEUED", "waiting for a free slot"
    return None


def view_run(run: PlannedRun, workdir: Path, queue: dict[str, str] | None = None,
             job: dict | None = None) -> RunView:
    run_dir = RunDir(workdir / "runs" / run.key)
    status = run_dir.status()
    state = status["state"]
    job = _job(run_dir) if job is None else job
    v = RunView(run, run_dir, state, job_id=job.get("job_id"),
                log=job.get("stderr") or job.get("dispatcher_log"), reason=status.get("reason"),
                notices=list(status.get("notices", [])))
    busy = run_dir.busy
    flight = None if busy else _job_in_flight(job, queue)
    if state == "DONE":
        # trained and evaluated; in flight until its job has written the MLflow records
        if busy or flight:
            v.state, v.detail = ("RUNNING" if busy else flight[0]), "recording results"
        else:
            v.detail = _score(run_dir)
        return v
    if busy:
        v.state, v.detail = "RUNNING", _progress(status)
    elif flight:
        v.state, v.detail = flight
    elif state in ("RUNNING", "NEW") and job:
        v.state = "LOST"
        v.reason = ("its job ended without finishing the run (killed, or crashed before "
                    "writing a status); submitting again resumes from the last checkpoint")
    return v


def view_runs(runs: list[PlannedRun], workdir: Path, explain: bool = True) -> list[RunView]:
    """`explain`: a NEW run of a config that ran before over other data says which source
    changed (harness.runs.data_changes), as `plan` and `status` show it."""
    workdir = Path(workdir).resolve()
    jobs = [_job(RunDir(workdir / "runs" / r.key)) for r in runs]
    queue = slurm_queue() if any(j.get("executor") == "slurm" for j in jobs) else {}
    views = [view_run(r, workdir, queue, j) for r, j in zip(runs, jobs)]
    new = [v for v in views if v.state == "NEW"]
    if explain and new:
        recorded = recorded_runs(workdir)
        for v in new:
            v.reason = data_note(v.run.config, recorded)
    return views


def view_spec(spec: ExperimentSpec, workdir: Path, explain: bool = True) -> list[RunView]:
    return view_runs(spec.runs, workdir, explain)


def render(spec: ExperimentSpec, views: list[RunView]) -> str:
    import pandas as pd
    rows = []
    for i, v in enumerate(views):
        row = {"#": i}
        row.update(v.run.labels)
        row.update({"run": v.run.key, "state": v.state, "progress": v.detail,
                    "job": v.job_id or ""})
        rows.append(row)
    table = pd.DataFrame(rows).set_index("#").to_string()
    counts = {}
    for v in views:
        counts[v.state] = counts.get(v.state, 0) + 1
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    lines = [f"{spec.name}: {len(views)} runs: {summary}", table]
    for i, v in enumerate(views):
        if v.state in ("FAILED", "LOST", "INTERRUPTED", "PAUSED") or (v.state == "NEW"
                                                                      and v.reason):
            lines.append(f"  #{i} {v.state}: {v.reason or 'no reason recorded'}")
            if v.log:
                lines.append(f"      log: {v.log}")
        # a checkpoint or stage weights that failed their check, and what was used instead
        lines += [f"  #{i} notice: {n}" for n in v.notices]
        if v.state == "DONE" and not _mirrored(v.run_dir):
            failures = v.run_dir.tracking_failures()
            if failures:
                lines.append(f"  #{i} not in MLflow yet: {len(failures)} tracking call(s) "
                             f"failed during the run (last: {failures[-1]}); `ablate run` "
                             "back-fills it")
    return "\n".join(lines)


def _mirrored(run_dir: RunDir) -> bool:
    """Some tracking store holds the run's final records (harness.tracking.mirror)."""
    try:
        record = run_dir.read_json("tracking.json")
    except (OSError, json.JSONDecodeError):
        return False
    return any(isinstance(e, dict) and e.get("complete") for e in record.values())


def follow(spec: ExperimentSpec, workdir: Path, interval_s: float = 2.0,
           stream=None, heartbeat_s: float = 300.0) -> list[RunView]:
    """Redraw the table until no run is in flight (on a terminal), or print each change of
    state (otherwise, e.g. in a log file) and, every `heartbeat_s`, a heartbeat line per
    running run (step, loss, pace, ETA), so a log of a days-long stage is never silent for
    hours. Returns the final views."""
    stream = stream or sys.stdout
    tty = stream.isatty()
    drawn, last, beats = 0, {}, {}
    while True:
        views = view_spec(spec, workdir, explain=False)
        if tty:
            text = render(spec, views)
            if drawn:
                stream.write(f"\x1b[{drawn}F\x1b[J")
            stream.write(text + "\n")
            drawn = text.count("\n") + 1
        else:
            for v in views:
                now = (v.state, v.detail if v.state != "RUNNING" else v.detail.split(" ")[0])
                stamp = time.strftime('%H:%M:%S')
                if last.get(v.run.key) != now:
                    last[v.run.key] = now
                    beats[v.run.key] = time.monotonic()
                    stream.write(f"{stamp} {v.run.name}: {v.state} {v.detail}".rstrip() + "\n")
                elif (v.state == "RUNNING"
                      and time.monotonic() - beats.get(v.run.key, 0.0) >= heartbeat_s):
                    beats[v.run.key] = time.monotonic()
                    stream.write(f"{stamp} {v.run.name}: RUNNING "
                                 f"{heartbeat(v.run_dir.status())}\n")
        stream.flush()
        if not any(v.state in IN_FLIGHT for v in views):
            return views
        time.sleep(interval_s)
