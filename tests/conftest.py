"""Shared fixtures: quiet libraries, a per-test work directory."""
import logging
import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
logging.getLogger().setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def _quiet_transformers():
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
