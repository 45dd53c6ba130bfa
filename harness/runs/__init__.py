"""The lifecycle of one run: its directory and locks (rundir), the staged pipeline that trains
and evaluates it (pipeline), its cost record (cost), reading a finished run back (rebuild)
and the results table of finished runs (results)."""
