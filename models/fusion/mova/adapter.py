"""MoVA's MoV-Adapter (Zong et al., 2024, Sec. 3.3): the base encoder's tokens take in the
routed experts' knowledge through per-expert cross-attention, weighted by a gate that reads
the question and the image.

One block, with X the base tokens [B, N, C], E_i expert i's tokens (each expert's layers
resized to `expert_grid` and concatenated on channels, then projected to C):

    A_i = CrossAttn_i(LN(X), E_i)                          expert knowledge extractor
    w   = softmax over the routed experts of W_g [mean(X), mean(T)]   (T: the question's
          token embeddings, projected to C; `gating: uniform` gives every routed expert 1/k)
    X  <- X + sum_i w_i A_i
    X  <- X + SelfAttn(LN(X));  X <- X + MLP(LN(X))

`depth` blocks are stacked (MoVA uses 2). The router (models/fusion/mova/routers.py) picks the
experts once per sample, from the first block's gate or a label file, and every block uses
that choice. A sample routed to no expert keeps its base tokens (plus the self-attention
block).

With `router: llm` (MoVA's context-aware routing), the LLM is the router: it sees the base
encoder's tokens alone (`pass_tokens`, through the same projector), the instruction and the
experts' `cards`, and names the experts; the multimodal LM asks it before answering and hands
the choice in through the text context."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.fields import grid_side, ranged
from core.identity import ADDED_OPTION
from models.experts.base import ExpertConfig, VisionExpert
from models.fusion.base import BuildContext, FeatureSpec, Fusion, FusionOptionError, TextContext
from models.fusion.mova.router_lora import RouterLoRAOptions, RoutingLoRA
from models.fusion.mova.routers import ROUTERS, UNLABELED, RoutingInputs, load_routing_labels
from models.fusion.mova.routing_text import DEFAULT_CARDS, routing_corpus

FALLBACKS = ("all", "none")
LLM_ROUTING = "llm_routing"   # the pass before answering of `router: llm`


@dataclass(frozen=True)
class MoVAOptions:
    base: str | None = None          # the base encoder; None = the first expert
    depth: int = ranged(2, ge=1)     # adapter blocks
    heads: int = ranged(4, ge=1)
    mlp_ratio: float = ranged(4.0, gt=0)
    gating: str = "learned"          # learned | uniform
    router: str = "all"              # all | random | topk | dynamic | oracle | llm
    k: int = ranged(3, ge=1)         # random / topk / dynamic: experts per sample (at most)
    threshold: float | None = ranged(None, gt=0, le=1)  # dynamic: gate probability (1/E)
    labels: str | None = None        # oracle, llm: routing-label JSON {sample id: [experts]}
    unlabeled: str = "all"           # oracle, llm in training, a sample the file lacks:
                                     # all | none | error
    labels_sha256: str | None = None  # set by the harness: `labels`' content hash (identity)
    expert_grid: int | None = grid_side(None, ge=1)  # experts' tokens on it; None: the base's
    # llm router: each routed expert's model card (the harness fills in DEFAULT_CARDS), the
    # experts used when the router's answer names none, the routing answer's token budget,
    # and the routing LoRA on the LLM
    cards: dict[str, str] = field(default_factory=dict, metadata=ADDED_OPTION)
    fallback: str = field(default="all", metadata=ADDED_OPTION)
    route_tokens: int = ranged(24, ge=1, metadata=ADDED_OPTION)
    router_lora: RouterLoRAOptions = field(default_factory=RouterLoRAOptions,
                                           metadata=ADDED_OPTION)


GATINGS = ("learned", "uniform")


class MoVABlock(nn.Module):
    def __init__(self, width: int, expert_widths: list[int], text_width: int, heads: int,
                 mlp_ratio: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.expert_in = nn.ModuleList(nn.Linear(c, width) for c in expert_widths)
        self.cross = nn.ModuleList(nn.MultiheadAttention(width, heads, batch_first=True)
                                   for _ in expert_widths)
        self.text_in = nn.Linear(text_width, width)
        self.gate = nn.Linear(2 * width, len(expert_widths))
        self.norm_self = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def gate_logits(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """[B, E] from the pooled image tokens and the pooled (projected) question."""
        return self.gate(torch.cat([x.mean(1), self.text_in(text)], dim=-1))

    def forward(self, x: torch.Tensor, experts: list[torch.Tensor], weights: torch.Tensor
                ) -> torch.Tensor:
        q = self.norm(x)
        for i, (proj, attn) in enumerate(zip(self.expert_in, self.cross)):
            kv = proj(experts[i])
            x = x + weights[:, i, None, None] * attn(q, kv, kv, need_weights=False)[0]
        h = self.norm_self(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm_mlp(x))


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the experts with mask 1; all zeros for a sample with none."""
    weights = logits.masked_fill(mask == 0, float("-inf")).softmax(-1)
    return torch.nan_to_num(weights, nan=0.0)


class MoVAAdapter(Fusion):
    Options = MoVAOptions
    file_options = ("labels",)

    def __init__(self, inputs: list[FeatureSpec], options: MoVAOptions,
                 context: BuildContext | None = None):
        super().__init__(inputs)
        context = context or BuildContext()
        names = list(dict.fromkeys(s.expert for s in inputs))
        self.base_name = options.base or names[0]
        if self.base_name not in names:
            raise FusionOptionError("base", f"no expert named '{self.base_name}'; experts: "
                                    + ", ".join(names))
        base_specs = [s for s in inputs if s.expert == self.base_name]
        self.expert_names = [n for n in names if n != self.base_name]
        if not self.expert_names:
            raise FusionOptionError("", "mova routes between experts besides the base encoder; "
                                    f"the model has only '{self.base_name}'")
        if len(base_specs) != 1:
            raise FusionOptionError("base", f"the base encoder '{self.base_name}' must give one "
                                    f"layer, it gives {len(base_specs)}")
        if options.gating not in GATINGS:
            raise FusionOptionError("gating", f"unknown gating '{options.gating}'; allowed: "
                                    + ", ".join(GATINGS))
        if options.router not in ROUTERS:
            raise FusionOptionError("router", f"unknown router '{options.router}'; allowed: "
                                    + ", ".join(ROUTERS.names()))
        if options.depth < 1 or options.k < 1:
            raise FusionOptionError("depth", "mova needs depth >= 1 and k >= 1")
        if context.text_width is None:
            raise ValueError("mova's gate reads the question: build it with the LM's width")
        self.options = options
        self.base = base_specs[0]
        width = self.base.channels
        if width % options.heads:
            raise FusionOptionError("heads", f"mova: {options.heads} heads do not divide the "
                                    f"base width {width}")
        self.grid = ((options.expert_grid, options.expert_grid) if options.expert_grid
                     else self.base.grid)
        self.base_index = inputs.index(self.base)
        self.expert_inputs = [[inputs.index(s) for s in inputs if s.expert == n]
                              for n in self.expert_names]
        widths = [sum(inputs[i].channels for i in idx) for idx in self.expert_inputs]
        self.blocks = nn.ModuleList(MoVABlock(width, widths, context.text_width, options.heads,
                                              options.mlp_ratio)
                                    for _ in range(options.depth))
        router_args = dict(k=options.k, threshold=options.threshold)
        if options.router == "llm":
            unknown = sorted(set(options.cards) - set(self.expert_names))
            if unknown:
                raise FusionOptionError("cards", f"cards for {unknown}, which are not routed "
                                        f"experts; routed: {', '.join(self.expert_names)}")
            missing = [n for n in self.expert_names if n not in options.cards]
            if missing:
                raise FusionOptionError("cards", f"router 'llm' needs a model card for every "
                                        f"routed expert; missing: {', '.join(missing)}")
            if options.fallback not in FALLBACKS:
                raise FusionOptionError("fallback", f"unknown fallback '{options.fallback}'; "
                                        f"allowed: {', '.join(FALLBACKS)}")
        if options.router in ("oracle", "llm"):
            if not options.labels:
                raise FusionOptionError("labels", f"router '{options.router}' needs `labels`: "
                                        "a routing-label JSON (ablate routing-labels writes "
                                        "one)")
            try:
                labels = (load_routing_labels(options.labels, self.expert_names)
                          if context.read_files or Path(options.labels).is_file() else {})
            except ValueError as exc:
                raise FusionOptionError("labels", str(exc)) from None
            if options.unlabeled not in UNLABELED:
                raise FusionOptionError("unlabeled", f"unknown choice '{options.unlabeled}'; "
                                        f"allowed: {', '.join(UNLABELED)}")
            router_args.update(labels=labels, source=options.labels,
                               unlabeled=options.unlabeled)
        self.router = ROUTERS.get(options.router)(**router_args)
        self.last_routing: torch.Tensor | None = None   # [B, E] of the latest forward

    @property
    def num_tokens(self) -> int:
        return self.base.grid[0] * self.base.grid[1]

    @property
    def channels(self) -> int:
        return self.base.channels

    def expert_tokens(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for idx in self.expert_inputs:
            parts = [maps[i] if tuple(maps[i].shape[-2:]) == self.grid else
                     F.interpolate(maps[i], size=self.grid, mode="bilinear",
                                   align_corners=False) for i in idx]
            out.append(torch.cat(parts, dim=1).flatten(2).transpose(1, 2))
        return out

    @staticmethod
    def pooled_text(text: TextContext | None, batch: int, like: torch.Tensor,
                    width: int) -> torch.Tensor:
        if text is None:   # no question (cost probes): the gate sees an empty prompt
            return like.new_zeros(batch, width)
        mask = text.mask.to(text.embeddings.dtype).unsqueeze(-1)
        return (text.embeddings * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    @classmethod
    def pass_of(cls, options: MoVAOptions | None) -> str | None:
        """`router: llm`: the LLM names the experts before it answers."""
        return LLM_ROUTING if options is not None and options.router == "llm" else None

    @property
    def before_answer(self) -> str | None:
        return self.pass_of(self.options)

    @classmethod
    def complete_options(cls, options: MoVAOptions, experts: list[ExpertConfig]
                         ) -> MoVAOptions:
        """An LLM router's model cards completed from DEFAULT_CARDS (by expert name, then
        family), so the text the router reads is in the resolved config and its key."""
        if cls.pass_of(options) is None:
            return options
        base = options.base or experts[0].key
        cards = dict(options.cards)
        for expert in experts:
            if expert.key == base or expert.key in cards:
                continue
            card = DEFAULT_CARDS.get(expert.key) or DEFAULT_CARDS.get(expert.id)
            if card is None:
                raise FusionOptionError(f"cards.{expert.key}", f"no default model card for "
                                        f"expert '{expert.key}' (family {expert.id}); write "
                                        f"one: cards: {{{expert.key}: 'what it sees'}}. "
                                        "Defaults exist for: " + ", ".join(DEFAULT_CARDS))
            cards[expert.key] = card
        ordered = {e.key: cards[e.key] for e in experts if e.key in cards}
        ordered.update({k: v for k, v in cards.items() if k not in ordered})  # unknown: the
        return dataclasses.replace(options, cards=ordered)                   # build names them

    @classmethod
    def text_corpus(cls, options: MoVAOptions) -> list[str]:
        return routing_corpus(options)

    @classmethod
    def rehearsal_files(cls, options: MoVAOptions | None, experts: list[str]
                        ) -> dict[str, tuple[str, list[str]]]:
        """Routing labels for the rehearsal's own samples (the real ones name other ids)."""
        if options is None or not options.labels:
            return {}
        base = options.base or experts[0]
        return {"labels": ("routing_labels", [e for e in experts if e != base])}

    def pass_adapter(self, llm: nn.Module) -> RoutingLoRA | None:
        """The routing LoRA, on while the LLM routes."""
        return RoutingLoRA(llm, self.options.router_lora) if self.before_answer else None

    def pass_tokens(self, experts: dict[str, VisionExpert], pixels: dict[str, torch.Tensor]
                    ) -> torch.Tensor:
        """[B, N, C] the base encoder's tokens alone (no expert runs): what the LLM router
        sees of the image."""
        out = experts[self.base_name](pixels[self.base_name])
        return out.maps[self.base.layer].flatten(2).transpose(1, 2)

    def fallback_mask(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        fill = 1.0 if self.options.fallback == "all" else 0.0
        return like.new_full((batch, len(self.expert_names)), fill)

    def fuse(self, maps, thumbs, text=None):
        x = maps[self.base_index].flatten(2).transpose(1, 2)
        experts = self.expert_tokens(maps)
        b = x.shape[0]
        pooled = self.pooled_text(text, b, x, self.blocks[0].text_in.in_features)
        logits = self.blocks[0].gate_logits(x, pooled)
        mask = self.router(RoutingInputs(logits.softmax(-1),
                                         text.sample_ids if text is not None else None,
                                         self.expert_names,
                                         text.given if text is not None else None))
        self.last_routing = mask.detach()
        for i, block in enumerate(self.blocks):
            if self.options.gating == "uniform":
                weights = mask / mask.sum(-1, keepdim=True).clamp_min(1.0)
            else:
                weights = masked_softmax(logits if i == 0 else block.gate_logits(x, pooled),
                                         mask)
            x = block(x, experts, weights)
        return x
