"""spec -> runs -> jobs -> records: config loading and validation, data, the staged training
pipeline, evaluation, run directories and the `ablate` command line."""
