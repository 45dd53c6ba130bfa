"""Benchmarks by id, one module each, found by their presence: every module of this package
but `registry` holds one benchmark (its record, the loader of its official files with its
prompt, and the writer of a small copy of those files), or one family of them (`synthetic`),
and importing this package imports them all, so a new benchmark is one new file here.

`FIXTURE_WRITERS` is read off the registry once every module has registered: benchmark id ->
the writer of its small files in the official layout (rehearsals and tests)."""
from __future__ import annotations

import importlib
import pkgutil

from harness.evaluation.benchmarks.registry import BENCHMARKS, FixtureWriter

# a module of this package that holds no benchmark
_NOT_A_BENCHMARK = {"registry"}

BENCHMARK_MODULES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                                 if m.name not in _NOT_A_BENCHMARK))
for _name in BENCHMARK_MODULES:
    importlib.import_module(f"{__name__}.{_name}")

FIXTURE_WRITERS: dict[str, FixtureWriter] = {
    e.name: e.builder.fixture for e in BENCHMARKS.entries() if e.builder.fixture is not None}

__all__ = ["BENCHMARKS", "BENCHMARK_MODULES", "FIXTURE_WRITERS"]
