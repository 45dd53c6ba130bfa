"""Answer scorers by id. Each takes predictions, reference answers and each question's
metadata and returns named metrics plus a per-question score in [0, 1], so reports can
bootstrap over questions. Importing this package registers every scorer."""
from harness.evaluation.scoring import answers, closed_form, text_metrics  # noqa: F401
from harness.evaluation.scoring.properties import is_closed_form
from harness.evaluation.scoring.registry import SCORERS, Scorer

__all__ = ["SCORERS", "Scorer", "is_closed_form"]
