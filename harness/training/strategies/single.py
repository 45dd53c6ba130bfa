"""`single`: one process, the model as is."""
from __future__ import annotations

from harness.training.strategies.base import Strategy
from harness.training.strategies.registry import STRATEGIES


@STRATEGIES.register("single", "one process, the model as is")
class Single(Strategy):
    name = "single"
    spans_ranks = False

    def wrap(self, model):
        return model
