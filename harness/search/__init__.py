"""Greedy expert-addition search (Eagle's round-robin selection): a search spec, the round
loop over the scheduler, optional Optuna tuning per arm, and the lineage/candidate tables."""
from harness.search.greedy import GreedySearch, candidate_table, lineage_table
from harness.search.search_spec import SearchSpec, is_search_spec, load_search_spec

__all__ = ["GreedySearch", "SearchSpec", "candidate_table", "is_search_spec", "lineage_table",
           "load_search_spec"]
