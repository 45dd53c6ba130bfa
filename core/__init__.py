"""The few rules every layer shares, importing nothing of the project: registries of named
builders, user-facing errors, config field ranges, run identity (content hashes), atomic file
writes and the names of MLflow records. `models`, `analysis` and `harness` all build on it."""
