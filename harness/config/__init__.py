"""Run configs: their types and identity (run_config; the model's own types are
models.model_config), Slurm profiles, a rung's selection, and the YAML binder with file:line errors
(yamlio, schema). Reading and validating a run file is harness.specs.run_file."""
