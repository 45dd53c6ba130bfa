"""spec -> runs -> jobs -> records, in packages layered bottom to top (docs/architecture.md):
config, data, evaluation / training, spec, runs, tracking / downstream, scheduler, planning /
search, rehearsal, and the `ablate` command line (cli). The model itself is built by
models.builder."""
