"""MLflow records: one MLflow experiment per spec, one MLflow run per harness run, mirrored
from the run directory (which stays the source of truth)."""
from harness.tracking.mirror import MlflowMirror
from harness.tracking.store import TrackingStore, default_uri, open_store

__all__ = ["MlflowMirror", "TrackingStore", "default_uri", "open_store"]
