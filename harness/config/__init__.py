"""Run configs: their types and identity (run_config), reading and validating YAML into them
(load), and the YAML binder with file:line errors (yamlio, schema)."""
