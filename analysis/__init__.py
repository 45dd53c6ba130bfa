"""Records -> tables and plots: a submitted spec's manifest (manifest), the run records (run
directories, MLflow) as one typed frame (records), the statistics behind the numbers (stats),
paper-layout tables (tables, lineage), published tables beside ours (reference), five output
formats (render), figures (plots) and `ablate report` (report). Imports only `core`: a report
needs the records, never the spec's data or the training code."""
