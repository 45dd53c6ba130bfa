"""What one `ablate` subcommand is: its name and line of --help, the function adding its
arguments and the function running it, side by side in the command's module, so that the
table in `harness.cli.app` builds the parser and dispatches without a branch per command."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]   # the exit code
    loads_models: bool = True   # False: it reads records only, model libraries stay unloaded


def wide():
    """Print pandas tables at a terminal's full width, with every column."""
    import pandas as pd
    return pd.option_context("display.width", 250, "display.max_columns", 50,
                             "display.max_colwidth", 60)
