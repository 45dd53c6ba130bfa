"""MoVA (Zong et al., 2024) in one place: the MoV-Adapter fusion (`adapter`), its routers
(`routers`: which experts each sample uses), the text of its context-aware LLM router
(`routing_text`: model cards, the routing question and answer, parsing what the LLM says) and
that router's LoRA on the LLM (`router_lora`). The harness side of the LLM router's pass
before answering is registered under LLM_ROUTING in harness.evaluation.passes.llm_routing."""
from __future__ import annotations

from models.fusion.mova.adapter import LLM_ROUTING, MoVAAdapter, MoVAOptions

__all__ = ["LLM_ROUTING", "MoVAAdapter", "MoVAOptions"]
