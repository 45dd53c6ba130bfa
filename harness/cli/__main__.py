"""`python -m harness.cli`: the `ablate` command without its installed script."""
import sys

from harness.cli.app import main

sys.exit(main())
