"""`ablate`: the command line. Each subcommand is one line of --help; user errors (bad config,
missing data, unknown ids) print one clear line and exit 2 before any work starts. Each
command is one `Command` (its arguments beside its body) in a module of this package; `app`
holds the table in --help's order and the entry point (`ablate`, `python -m harness.cli`)."""
from harness.cli.app import main, quiet_libraries
from harness.cli.reporting import report_manifest

__all__ = ["main", "quiet_libraries", "report_manifest"]
