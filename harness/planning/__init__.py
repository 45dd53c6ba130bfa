"""Before anything runs: FLOPs, memory and GPU-hour estimates of a stage (estimate) and the
plan table of a spec against a cluster profile (plan)."""
