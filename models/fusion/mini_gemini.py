"""Mini-Gemini's patch info mining (Li et al., 2024, Sec. 3.2) and its deformable variant.

The low-resolution expert's tokens are the queries and the output keeps their count and
width: T_V = Q + Softmax(phi(Q) phi(K)^T / sqrt(d)) phi(V), with phi = LayerNorm + Linear for
queries, keys and values. In `patch_info_mining` each query attends only to the
high-resolution features inside its own window: with 576 queries (24x24) over a 192x192 map
every query sees the 8x8 = 64 positions it covers. `deformable_mining` replaces the fixed
window with learned sampling: each query predicts `points` offsets around its reference point
(its cell's centre on the high-resolution map) and attention weights over them, the values
are read at those locations by bilinear interpolation (zero outside the map), and their
weighted sum goes through an output Linear before the residual add.

The high-resolution side is every layer of the other expert(s), each bilinearly resized to the
largest of their grids and concatenated on channels (Mini-Gemini combines ConvNeXt stages
this way)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from core.fields import ranged
from models.fusion.base import BuildContext, FeatureSpec, Fusion, FusionOptionError


@dataclass(frozen=True)
class PatchInfoMiningOptions:
    """value_norm `own`: the values get a LayerNorm of their own, as Mini-Gemini's
    (its value projector is LayerNorm + Linear beside the key projector's); `shared` keys'."""
    queries: str | None = None   # the low-resolution expert; None = the first expert
    width: int | None = ranged(None, ge=1)   # attention width d; None = the query width
    value_norm: Literal["own", "shared"] = "own"


@dataclass(frozen=True)
class DeformableMiningOptions:
    queries: str | None = None
    width: int | None = ranged(None, ge=1)
    points: int = ranged(4, ge=1)            # sampling points per query and head
    heads: int = ranged(1, ge=1)


def split_queries_keys(inputs: list[FeatureSpec], queries: str | None
                       ) -> tuple[FeatureSpec, list[FeatureSpec]]:
    names = list(dict.fromkeys(s.expert for s in inputs))
    query_name = queries or names[0]
    if query_name not in names:
        raise FusionOptionError("queries", f"no expert named '{query_name}'; experts: "
                                + ", ".join(names))
    query_specs = [s for s in inputs if s.expert == query_name]
    keys = [s for s in inputs if s.expert != query_name]
    if len(query_specs) != 1:
        raise FusionOptionError("queries", f"the query expert '{query_name}' must give one "
                                f"layer, it gives {len(query_specs)}")
    if not keys:
        raise FusionOptionError("", "patch info mining needs a high-resolution expert besides "
                                f"the query expert '{query_name}'")
    return query_specs[0], keys


class _Mining(Fusion):
    """Shared: the query/key split, the key map assembly and the phi projections."""

    def __init__(self, inputs: list[FeatureSpec], queries: str | None, width: int | None):
        super().__init__(inputs)
        self.query, self.keys = split_queries_keys(inputs, queries)
        self.key_grid = max((s.grid for s in self.keys), key=lambda g: g[0] * g[1])
        self.query_width = self.query.channels
        key_width = sum(s.channels for s in self.keys)
        self.dim = width or self.query_width
        self.norm_q = nn.LayerNorm(self.query_width)
        self.norm_k = nn.LayerNorm(key_width)
        self.to_q = nn.Linear(self.query_width, self.dim)
        self.to_k = nn.Linear(key_width, self.dim)
        self.to_v = nn.Linear(key_width, self.query_width)
        self.query_index = inputs.index(self.query)
        self.key_index = [inputs.index(s) for s in self.keys]

    @property
    def num_tokens(self) -> int:
        return self.query.grid[0] * self.query.grid[1]

    @property
    def channels(self) -> int:
        return self.query_width

    def key_map(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """[B, C_k, Hk, Wk]: every key layer on the largest key grid, on channels."""
        parts = []
        for i in self.key_index:
            m = maps[i]
            if tuple(m.shape[-2:]) != self.key_grid:
                m = F.interpolate(m, size=self.key_grid, mode="bilinear", align_corners=False)
            parts.append(m)
        return torch.cat(parts, dim=1)


class PatchInfoMining(_Mining):
    Options = PatchInfoMiningOptions

    def __init__(self, inputs: list[FeatureSpec], options: PatchInfoMiningOptions,
                 context: BuildContext | None = None):
        super().__init__(inputs, options.queries, options.width)
        self.norm_v = (nn.LayerNorm(sum(s.channels for s in self.keys))
                       if options.value_norm == "own" else None)
        (qh, qw), (kh, kw) = self.query.grid, self.key_grid
        if kh % qh or kw % qw:
            raise FusionOptionError("", f"patch info mining: the {qh}x{qw} query grid "
                                    f"does not tile the {kh}x{kw} high-resolution map into "
                                    f"whole windows; use resolutions whose grids divide")
        self.window = (kh // qh, kw // qw)

    @property
    def keys_per_query(self) -> int:
        return self.window[0] * self.window[1]

    def fuse(self, maps, thumbs, text=None):
        q_map, k_map = maps[self.query_index], self.key_map(maps)
        b = q_map.shape[0]
        (qh, qw), (wh, ww) = self.query.grid, self.window
        queries = q_map.flatten(2).transpose(1, 2)                       # [B, N, Cq]
        # [B, Ck, qh*wh, qw*ww] -> [B, N, wh*ww, Ck]: the window under each query, row-major
        windows = (k_map.reshape(b, -1, qh, wh, qw, ww).permute(0, 2, 4, 3, 5, 1)
                   .reshape(b, qh * qw, wh * ww, -1))
        q = self.to_q(self.norm_q(queries))                              # [B, N, d]
        norm_v = self.norm_v if self.norm_v is not None else self.norm_k
        k, v = self.to_k(self.norm_k(windows)), self.to_v(norm_v(windows))      # [B, N, M, .]
        scores = torch.einsum("bnd,bnmd->bnm", q, k) / math.sqrt(self.dim)
        return queries + torch.einsum("bnm,bnmc->bnc", scores.softmax(-1), v)


class DeformableMining(_Mining):
    Options = DeformableMiningOptions

    def __init__(self, inputs: list[FeatureSpec], options: DeformableMiningOptions,
                 context: BuildContext | None = None):
        super().__init__(inputs, options.queries, options.width)
        if options.points < 1 or options.heads < 1:
            raise FusionOptionError("points", "deformable mining needs points >= 1 and "
                                    "heads >= 1")
        if self.query_width % options.heads:
            raise FusionOptionError("heads", f"deformable mining: {options.heads} heads do not "
                                    f"divide the query width {self.query_width}")
        self.heads, self.points = options.heads, options.points
        self.offsets = nn.Linear(self.dim, self.heads * self.points * 2)
        self.weights = nn.Linear(self.dim, self.heads * self.points)
        self.out = nn.Linear(self.query_width, self.query_width)
        nn.init.zeros_(self.offsets.weight)
        nn.init.zeros_(self.weights.weight)
        nn.init.zeros_(self.weights.bias)
        with torch.no_grad():
            self.offsets.bias.copy_(self.initial_offsets().flatten())

    def initial_offsets(self) -> torch.Tensor:
        """[heads, points, 2] offsets in key-map pixels (x, y): each head's points on a ring
        of growing radius, up to half the query's cell, turned per head and point, so the
        points start spread over the cell instead of on top of each other."""
        (qh, qw), (kh, kw) = self.query.grid, self.key_grid
        half_cell = 0.5 * max(kh / qh, kw / qw)
        out = torch.zeros(self.heads, self.points, 2)
        for h in range(self.heads):
            for p in range(self.points):
                angle = 2 * math.pi * (h * self.points + p) / (self.heads * self.points)
                radius = half_cell * (p + 1) / self.points
                out[h, p, 0] = radius * math.cos(angle)
                out[h, p, 1] = radius * math.sin(angle)
        return out

    def reference_points(self, device) -> torch.Tensor:
        """[N, 2] each query cell's centre as (x, y) in [0, 1], row-major."""
        qh, qw = self.query.grid
        ys = (torch.arange(qh, device=device, dtype=torch.float32) + 0.5) / qh
        xs = (torch.arange(qw, device=device, dtype=torch.float32) + 0.5) / qw
        return torch.stack([xs.repeat(qh), ys.repeat_interleave(qw)], dim=-1)

    def fuse(self, maps, thumbs, text=None):
        q_map, k_map = maps[self.query_index], self.key_map(maps)
        b = q_map.shape[0]
        kh, kw = self.key_grid
        heads, points, n = self.heads, self.points, self.num_tokens
        queries = q_map.flatten(2).transpose(1, 2)                           # [B, N, Cq]
        q = self.to_q(self.norm_q(queries))
        offsets = self.offsets(q).view(b, n, heads, points, 2)
        weights = self.weights(q).view(b, n, heads, points).softmax(-1)
        scale = torch.tensor([kw, kh], device=q.device, dtype=q.dtype)
        where = self.reference_points(q.device).to(q.dtype)[None, :, None, None] + offsets / scale
        values = self.to_v(self.norm_k(k_map.flatten(2).transpose(1, 2)))    # [B, Hk*Wk, Cq]
        per_head = self.query_width // heads
        values = (values.view(b, kh, kw, heads, per_head).permute(0, 3, 4, 1, 2)
                  .reshape(b * heads, per_head, kh, kw))
        grid = (2 * where - 1).permute(0, 2, 1, 3, 4).reshape(b * heads, n, points, 2)
        sampled = F.grid_sample(values, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)                        # [B*h, c, N, P]
        w = weights.permute(0, 2, 1, 3).reshape(b * heads, 1, n, points)
        mixed = (sampled * w).sum(-1).view(b, heads * per_head, n).transpose(1, 2)
        return queries + self.out(mixed)
