"""Why a run failed, in words its status can carry: a full disk named as such, and a failing
rank's own traceback rather than rank 0's view of a peer vanishing from a collective; and a
failing rank's wait for rank 0 to record the end."""
from __future__ import annotations

import contextlib
import errno
import time

from core.errors import HarnessError
from harness.runs.rundir import RunDir


def await_main_record(run_dir: RunDir, wait_s: float = 60.0) -> None:
    """A failing rank other than 0, its traceback written and its groups aborted, waits (at
    most `wait_s`) for rank 0 to record the run's end: under Slurm's --kill-on-bad-exit this
    rank's exit kills rank 0, which would otherwise leave the run RUNNING (then LOST)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if run_dir.read_json("status.json").get("state") != "RUNNING":
                return
        time.sleep(0.2)


def disk_full(exc: BaseException) -> OSError | None:
    """The out-of-space error (ENOSPC, or EDQUOT: a quota, as on cluster scratch) behind
    `exc`: itself, its cause or context, or one rank's failure inside DCP's
    CheckpointException; None if there is none."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        failures = getattr(e, "failures", None)   # DCP's: rank -> (exception, its stack)
        todo += [e.__cause__, e.__context__,
                 *(f[0] for f in (failures.values() if isinstance(failures, dict) else ())
                   if isinstance(f, tuple) and f and isinstance(f[0], BaseException))]
    return None


def failure_reason(run_dir: RunDir, exc: BaseException, wait_s: float = 3.0) -> str:
    """Rank 0's exception, and the traceback a failing rank left (rank 0 often only sees
    its peer vanish from a collective): the other ranks' own words are the cause."""
    full = disk_full(exc)
    if full is not None:   # the cause, and what to do, instead of a write's traceback
        return (f"disk full ({full.strerror}) while writing {full.filename or 'a record'}: "
                "the last complete checkpoint and records are intact; free space (or quota) "
                "and run again to resume")
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, HarnessError):
        return reason
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not list(run_dir.path.glob("rank-*.error")):
        time.sleep(0.2)
    for path in sorted(run_dir.path.glob("rank-*.error")):
        text = path.read_text().strip()
        last = text.splitlines()[-1] if text else ""
        reason += f"; {path.stem}: {last} (traceback in {path})\n{text}"
    return reason
