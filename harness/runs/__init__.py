"""The lifecycle of one run: its directory and locks (rundir), the run around its lock
(pipeline) and the run in progress as an object (trainer), its stages' keys and reuse
(stages), what it reads first (inputs), what it returns (outcome), why it failed (failures),
its cost record (cost), reading a finished run back (rebuild) and the results table of
finished runs (results)."""
