"""Records -> tables and plots: the run records (run directories, MLflow) as one typed frame
(records), the statistics behind the numbers (stats), paper-layout tables (tables, greedy),
published tables beside ours (reference), five output formats (render), figures (plots) and
`ablate report` (report). Depends only on the records, never on the training code; the spec
is read only to know the runs and their order."""
