"""Evaluation: benchmarks (where questions come from), generation (batched greedy decoding)
and scoring, as separate steps; scoring checks every expected question was answered."""
