"""MLflow records: one MLflow experiment per spec, one MLflow run per harness run, mirrored
from the run directory (which stays the source of truth). `mirror` writes them (it needs the
pipeline), `store` opens the store, `names` says how records are named; import the module
you need, so that readers of records never load the training code."""
