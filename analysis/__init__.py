"""Records -> tables and plots. Depends only on the run records (run directories, MLflow),
never on training code. The paper-layout reports arrive with the report issue; the terminal
summary of `ablate train` lives in harness.summary until then."""
