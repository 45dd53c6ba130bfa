"""Loaders for the official local file layouts of the real benchmarks, by id. A loader takes
the question file (or folder) and the image folder a user downloaded, checks every record and
image, and returns Questions with LLaVA-1.5's prompts; it never touches the network.
Importing this package registers every loader."""
from harness.evaluation.formats import choice, mme, open_ended, pope  # noqa: F401
from harness.evaluation.formats.registry import LOADERS, Loader

__all__ = ["LOADERS", "Loader"]
