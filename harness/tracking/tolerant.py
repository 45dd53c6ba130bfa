"""A training job outlives its tracker. The run directory is the record of a run; MLflow is a
mirror of it. When the tracking store is unreachable (a restarted `mlflow server`, a network
blip longer than the store's retries), the job logs the failure into the run directory and
goes on training; the next `ablate run` finds the finished run unmirrored and back-fills it
(harness.scheduler.submit). Without this, a multi-day run died with its tracker."""
from __future__ import annotations

import logging
import time
import traceback

from harness.config.run_config import RunConfig
from harness.runs.pipeline import RunHooks
from harness.runs.rundir import RunDir

log = logging.getLogger(__name__)


class TolerantHooks(RunHooks):
    """Calls `inner`'s hooks; a hook that fails (after the store's own retries) is recorded in
    the run directory's tracking.log and on stderr, never raised into the training job."""

    def __init__(self, inner: RunHooks, uri: str):
        self.inner, self.uri = inner, uri

    def _call(self, hook: str, run_dir: RunDir, *args) -> None:
        try:
            getattr(self.inner, hook)(*args)
        except Exception as exc:   # any store failure: the run directory stays the record
            why = (str(exc).splitlines() or [""])[0][:300]
            line = (f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {hook}: tracking store {self.uri} "
                    f"failed ({type(exc).__name__}: {why}); the run goes on and the next "
                    "`ablate run` back-fills it")
            log.warning("%s\n%s", line, traceback.format_exc(limit=2))
            try:
                run_dir.note_tracking_failure(line)
            except OSError:
                pass   # a full disk is the pipeline's to report, not the tracker's

    def started(self, cfg: RunConfig, run_dir: RunDir) -> None:
        self._call("started", run_dir, cfg, run_dir)

    def finished(self, cfg: RunConfig, run_dir: RunDir) -> None:
        self._call("finished", run_dir, cfg, run_dir)

    def rescored(self, cfg: RunConfig, run_dir: RunDir, what: list) -> None:
        self._call("rescored", run_dir, cfg, run_dir, what)

    def stopped(self, cfg: RunConfig, run_dir: RunDir, state: str, reason: str) -> None:
        self._call("stopped", run_dir, cfg, run_dir, state, reason)
