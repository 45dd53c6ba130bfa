"""MoVA's routers: which experts each sample uses (Zong et al., 2024, Sec. 3.2 and the routing
ablations). A router returns a [B, E] 0/1 mask over the non-base experts; the MoV-Adapter's
gate then weighs the chosen ones.

- `all`: every expert (plain mixture, no routing);
- `random`: k experts drawn per sample (torch's RNG, so a seeded run repeats);
- `topk`: the k experts the first adapter block's gate scores highest (fixed K);
- `dynamic`: the experts whose gate probability is at least `threshold` (default 1/E, above
  uniform), at least one and at most k (dynamic K);
- `oracle`: the experts a routing-label file lists for the sample id (see
  harness/downstream/routing_labels.py, which builds that file from per-sample losses); a sample the
  file does not list gets `unlabeled`: every expert (`all`, as MoVA's alignment stage uses
  them all), none, or an error;
- `llm`: MoVA's context-aware router: the LLM itself, with its routing LoRA, names the experts
  (router_lora.py, routing_text.py beside this module). The evaluation asks it first and
  hands its choice in (`given`); training batches, which are not asked, follow the routing
  labels as `oracle` does (the labels are what the router is trained to say).

Selection never carries gradient: the gate that weighs the selected experts does."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from core.registry import Registry


@dataclass(frozen=True)
class RoutingInputs:
    gate_probs: torch.Tensor          # [B, E] the first block's gate over all experts
    sample_ids: list[str] | None
    experts: list[str]
    given: torch.Tensor | None = None   # [B, E] a choice made before the forward (llm router)


Router = Callable[[RoutingInputs], torch.Tensor]
ROUTERS: Registry[Callable[..., Router]] = Registry("router")


@ROUTERS.register("all", "every expert for every sample")
def route_all(**_) -> Router:
    return lambda x: torch.ones_like(x.gate_probs)


@ROUTERS.register("random", "k experts drawn at random per sample")
def route_random(k: int, **_) -> Router:
    def route(x: RoutingInputs) -> torch.Tensor:
        b, e = x.gate_probs.shape
        draws = torch.rand(b, e).argsort(dim=1)[:, :min(k, e)].to(x.gate_probs.device)
        return torch.zeros_like(x.gate_probs).scatter_(1, draws, 1.0)
    return route


@ROUTERS.register("topk", "the k experts the gate scores highest (fixed K)")
def route_topk(k: int, **_) -> Router:
    def route(x: RoutingInputs) -> torch.Tensor:
        top = x.gate_probs.detach().topk(min(k, x.gate_probs.shape[1]), dim=1).indices
        return torch.zeros_like(x.gate_probs).scatter_(1, top, 1.0)
    return route


@ROUTERS.register("dynamic", "experts above a gate-probability threshold, 1..k (dynamic K)")
def route_dynamic(k: int, threshold: float | None = None, **_) -> Router:
    def route(x: RoutingInputs) -> torch.Tensor:
        probs = x.gate_probs.detach()
        bar = threshold if threshold is not None else 1.0 / probs.shape[1]
        keep = probs >= bar
        best = probs.argmax(dim=1, keepdim=True)
        keep.scatter_(1, best, True)                     # at least one
        ranked = probs.masked_fill(~keep, -1.0)          # at most k, never one not kept
        top = ranked.topk(min(k, probs.shape[1]), dim=1).indices
        return torch.zeros_like(probs).scatter_(1, top, 1.0) * keep.to(probs.dtype)
    return route


def load_routing_labels(path: str | Path, experts: list[str]) -> dict[str, list[str]]:
    """{sample id: [expert names]}; names must be experts of the model."""
    path = Path(path)
    try:
        labels = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"routing labels {path}: {exc}") from None
    if not isinstance(labels, dict):
        raise ValueError(f"routing labels {path}: expected an object {{sample id: [experts]}}")
    for sid, names in labels.items():
        unknown = [n for n in names if n not in experts] if isinstance(names, list) else names
        if unknown:
            raise ValueError(f"routing labels {path}: sample {sid!r} names {unknown}, not "
                             f"among the routed experts {experts}")
    return labels


UNLABELED = ("all", "none", "error")


@ROUTERS.register("oracle", "experts listed per sample id in a routing-label file")
def route_oracle(labels: dict[str, list[str]], source: str = "", unlabeled: str = "all",
                 **_) -> Router:
    def route(x: RoutingInputs) -> torch.Tensor:
        if x.sample_ids is None:
            raise RuntimeError("oracle routing needs the samples' ids")
        mask = torch.zeros_like(x.gate_probs)
        for i, sid in enumerate(x.sample_ids):
            if sid in labels:
                for name in labels[sid]:
                    mask[i, x.experts.index(name)] = 1.0
            elif unlabeled == "all":
                mask[i] = 1.0
            elif unlabeled == "error":
                raise KeyError(f"routing labels {source} have no entry for sample {sid!r}")
        return mask
    return route


@ROUTERS.register("llm", "the LLM with its routing LoRA names the experts (MoVA's router)")
def route_llm(labels: dict[str, list[str]], source: str = "", unlabeled: str = "all",
              **_) -> Router:
    by_labels = route_oracle(labels, source, unlabeled)

    def route(x: RoutingInputs) -> torch.Tensor:
        if x.given is not None:
            return x.given.to(x.gate_probs.dtype)
        return by_labels(x)
    return route
