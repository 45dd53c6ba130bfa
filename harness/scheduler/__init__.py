"""Jobs: executors (inline, local, slurm) behind one registry, the submitit entry point that
runs one harness run, and the live view of a spec's runs."""
