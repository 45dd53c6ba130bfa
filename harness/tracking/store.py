"""Where records go: the embedded default is a SQLite file in the work directory; at scale,
`--tracking-uri http://host:port` points every job at one shared `mlflow server`.

The submitting process checks the store is reachable and creates the spec's experiment
before any job starts, so jobs never race on creating it and a bad URI fails with nothing
submitted. Every call retries on the transient errors many concurrent writers cause (a
locked SQLite file, a busy server)."""
from __future__ import annotations

import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from core.errors import HarnessError
from core.record_names import quiet

T = TypeVar("T")
TRANSIENT = ("database is locked", "database table is locked", "connection", "timed out",
             "temporarily unavailable", "503", "502", "504", "429", "deadlock")


def retry(fn: Callable[[], T], budget_s: float = 120.0) -> T:
    """Call `fn`, retrying transient store errors with jittered backoff for up to budget_s."""
    deadline, delay = time.monotonic() + budget_s, 0.2
    while True:
        try:
            return fn()
        except Exception as exc:  # MLflow wraps driver and HTTP errors in several types
            text = str(exc).lower()
            if not any(t in text for t in TRANSIENT) or time.monotonic() > deadline:
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before anything is submitted, when the store cannot be used."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                if resp.status != 200:
                    raise HarnessError(f"--tracking-uri {uri}: {url} answered {resp.status}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HarnessError(f"--tracking-uri {uri}: cannot reach the MLflow server "
                               f"({reason}); start it with `mlflow server --host HOST --port "
                               "PORT`, or leave --tracking-uri out for the SQLite file in the "
                               "work directory") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise HarnessError(f"--tracking-uri {uri}: folder {folder} does not exist")


@dataclass
class TrackingStore:
    uri: str
    client: object   # mlflow.tracking.MlflowClient

    def experiment(self, name: str, artifact_root: Path | None) -> str:
        """The experiment's id, created if missing (by the submitting process only)."""
        def get_or_create() -> str:
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            location = artifact_root.resolve().as_uri() if artifact_root else None
            try:
                return self.client.create_experiment(name, artifact_location=location)
            except Exception:
                found = self.client.get_experiment_by_name(name)  # created meanwhile
                if found is None:
                    raise
                return found.experiment_id
        return retry(get_or_create)


def open_store(uri: str) -> TrackingStore:
    """The store's client. A SQLite store is created (its tables) under a lock beside it, so
    two `ablate run`s started at once on a fresh work directory do not both create it."""
    from mlflow.tracking import MlflowClient
    quiet()
    if not uri.startswith("sqlite:///"):
        return TrackingStore(uri, MlflowClient(tracking_uri=uri))
    from core.files import file_lock
    db = Path(uri.removeprefix("sqlite:///"))
    with file_lock(db.with_name(db.name + ".lock")):   # the first client creates the tables
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    return TrackingStore(uri, client)
