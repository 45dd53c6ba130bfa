"""Experiment specs: a base run plus axes, zips, exclusions and named variants, expanded into
validated, content-hashed run configs (see harness.specs.expand for the file format)."""
from harness.specs.expand import ExperimentSpec, PlannedRun, load_spec

__all__ = ["ExperimentSpec", "PlannedRun", "load_spec"]
