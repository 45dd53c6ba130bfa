"""`ablate rehearse`: every run of a full-scale spec, end to end on a CPU in minutes, through
the same code path as the real run with only its sizes changed (geometry, shrink, data)."""
from harness.rehearsal.run import RehearsalResult, rehearse

__all__ = ["RehearsalResult", "rehearse"]
