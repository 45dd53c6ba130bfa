"""The pass before answering of MoVA's context-aware router (Zong et al., 2024, Sec. 3.2),
registered as `llm_routing` (models.fusion.mova.LLM_ROUTING, a MoVA fusion's `router: llm`):
before a batch is answered, the model, in its pass (base encoder tokens, routing LoRA on), is
asked the routing question and names the experts; its answer is parsed into the [B, E] choice
the answering pass uses. Each decision goes into its prediction; the router's accuracy against
the routing labels of the held-out questions, and what the pass costs (seconds, and FLOPs
counted by torch's FlopCounterMode on the first batch), go to the run's routing.json and
cost.json. A `task: route` stage trains it on the routing turns
(harness.data.routing_turns)."""
from __future__ import annotations

import contextlib
import math
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.config.run_config import StageConfig
from harness.data.batching import Collator, to_device
from harness.data.llava import Conversation
from harness.data.routing_turns import route_stage_data, routing_prompts
from harness.evaluation.passes.registry import PASSES, AnswerPass, PassLog
from models.fusion.mova.adapter import LLM_ROUTING
from models.fusion.mova.routers import load_routing_labels
from models.fusion.mova.routing_text import parse_routing
from models.multimodal import MultimodalLM


def route(model: MultimodalLM, tokenizer, collate: Collator, records: list[Conversation],
          device: torch.device, stop_id: int, log: PassLog | None = None
          ) -> tuple[torch.Tensor, list[dict]]:
    """The experts the router names for each record: the [B, E] choice (the fusion's
    fallback where it names none) and one decision record per sample."""
    fusion = model.fusion
    names = fusion.expert_names
    prompts = to_device(collate.as_prompts()(routing_prompts(records, fusion.options.cards)),
                        device)
    count = log is not None and log.counted_flops is None
    counter = FlopCounterMode(display=False) if count else None
    started = time.perf_counter()
    with model.in_pass(), counter if counter is not None else contextlib.nullcontext():
        tokens = model.generate(prompts["input_ids"], prompts["attention_mask"],
                                prompts["pixels"], prompts["has_image"],
                                fusion.options.route_tokens, stop_id,
                                sample_ids=prompts["sample_ids"])
    if log is not None:
        log.seconds += time.perf_counter() - started
        log.questions += len(records)
        log.tokens_generated += sum(len(t) for t in tokens)
        if counter is not None:
            log.counted_flops = int(counter.get_total_flops())
            log.counted_questions = len(records)
    mask = torch.zeros(len(records), len(names), device=device)
    fallback = fusion.fallback_mask(len(records), mask)
    decisions = []
    for i, toks in enumerate(tokens):
        said = tokenizer.decode(toks, skip_special_tokens=True).strip()
        parsed = parse_routing(said, names)
        if parsed.said_none:
            mask[i] = fallback[i]
        for name in parsed.experts:
            mask[i, names.index(name)] = 1.0
        decisions.append({"answer": said, "experts": parsed.experts,
                          "used": [n for n, m in zip(names, mask[i].tolist()) if m],
                          "unknown": parsed.unknown, "fallback": parsed.said_none})
    return mask, decisions


def routing_metrics(predictions: list, labels: dict[str, list[str]], experts: list[str]
                    ) -> dict:
    """The router against the routing labels of the questions they list (held out: the
    questions are not training records), with chance: the exact-match rate of a router that
    knew how many experts each label lists and drew that many at random."""
    routed = [p for p in predictions if p.routing is not None]
    labeled = [p for p in routed if p.id in labels]
    tp = fp = fn = exact = 0
    chance = 0.0
    for p in labeled:
        said, truth = set(p.routing["experts"]), set(labels[p.id])
        tp += len(said & truth)
        fp += len(said - truth)
        fn += len(truth - said)
        exact += said == truth
        chance += 1.0 / math.comb(len(experts), len(truth))
    n = len(labeled)
    return {"questions": len(routed), "labeled": n,
            "exact_match": exact / n if n else None,
            "chance_exact_match": chance / n if n else None,
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "unknown_names": sum(p.routing["unknown"] for p in routed),
            "fallbacks": sum(bool(p.routing["fallback"]) for p in routed),
            # the experts each question was answered with (the fallback's where none named)
            "mean_experts_used": (sum(len(p.routing["used"]) for p in routed) / len(routed)
                                  if routed else None),
            "used": {e: sum(e in p.routing["used"] for p in routed) for e in experts}}


def scored(model: MultimodalLM, predictions: list) -> dict:
    """The router against the labels of the questions it routed."""
    names = model.fusion.expert_names
    return routing_metrics(predictions, load_routing_labels(model.fusion.options.labels, names),
                           names)


def check_route_stages(stages: list[StageConfig], routed: bool) -> tuple[str, str] | None:
    """MoVA's LLM router is trained by `task: route` stages, which train only it; a model
    routing by the LLM needs one (an untrained router would pick experts at random)."""
    route_stages = [i for i, s in enumerate(stages) if s.enabled and s.task == "route"]
    for i, stage in enumerate(stages):
        if not stage.enabled:
            continue
        if stage.task == "route":
            if not routed:
                return (f"stages[{i}].task", "a route stage trains MoVA's LLM router; this "
                        "model's fusion has no `router: llm`")
            if stage.train != ["router"] or stage.per_expert or stage.lora is not None:
                return (f"stages[{i}].train", "a route stage trains the routing LoRA alone: "
                        "train: [router], no per_expert, no lora")
        elif "router" in stage.train or "router" in stage.lrs:
            return f"stages[{i}].train", "only a `task: route` stage trains the router"
    if routed and not route_stages:
        return ("stages", "model.fusion.router llm needs a stage with `task: route`, "
                "train: [router], to train the router on the routing labels")
    return None


PASSES.register(LLM_ROUTING, "MoVA's LLM router names each question's experts")(
    AnswerPass(ask=route, metrics=scored, stage_data=route_stage_data, task="route",
               record="routing", check_stages=check_route_stages))
