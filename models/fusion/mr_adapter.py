"""LLaVA-HR's mixture-of-resolution adapter (Luo et al., 2024, Sec. 4.2): a high-resolution
convolutional path injected into a low-resolution ViT while it runs.

The ViT has L blocks; after blocks L/4, L/2 and 3L/4 the ConvNeXt's stages 1, 2 and 3 are
added into the ViT's patch tokens F_l (the class token passes unchanged):

    f_h = resize(P_h(GELU(Conv1x1(F_h))))         P_h zero-initialised, resized to the ViT grid
    f_l = P_l(DWConv7x7(F_l))                     P_l zero-initialised
    g   = tanh(W2 GELU(W1 [GAP(f_l), GAP(f_h)]))  one scalar per image
    F_l <- F_l + f_l + g * f_h

so at initialisation the ViT computes exactly what it computed alone. The visual tokens are
the sum of linear projections of both paths' final features: the ViT's last layer and the
ConvNeXt's last stage resized to the ViT grid. The ViT's last layer is the last of its
configured `layers` (LLaVA-HR uses the penultimate, -2); the ConvNeXt serves its last four
stages whatever its `layers` say."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.fields import ranged
from models.experts.base import BlockwiseViT, VisionExpert
from models.fusion.base import BuildContext, FeatureSpec, Fusion, FusionOptionError

INJECTIONS = 3   # after L/4, L/2, 3L/4
STAGES = INJECTIONS + 1


@dataclass(frozen=True)
class MRAdapterOptions:
    vit: str | None = None          # the low-resolution ViT; None = the one that runs blockwise
    convnet: str | None = None      # the high-resolution ConvNet; None = the other expert
    width: int | None = ranged(None, ge=1)        # output width; None = the ViT's
    gate_hidden: int | None = ranged(None, ge=1)  # W1's width; None = a quarter of the ViT's


def injection_blocks(depth: int) -> list[int]:
    """Blocks after which the high-res path is added: L/4, L/2, 3L/4 (rounded down)."""
    return [max(1, depth * j // STAGES) for j in range(1, STAGES)]


def _roles(options: MRAdapterOptions, experts: Mapping[str, VisionExpert]
           ) -> tuple[str, str]:
    if len(experts) != 2:
        raise FusionOptionError("", f"mr_adapter combines a ViT and a ConvNet; the model has "
                                f"{len(experts)} experts: {', '.join(experts)}")
    blockwise = [n for n, e in experts.items() if isinstance(e, BlockwiseViT)]
    vit = options.vit or (blockwise[0] if blockwise else None)
    if vit not in experts or not isinstance(experts[vit], BlockwiseViT):
        raise FusionOptionError("vit", "mr_adapter needs a ViT that runs block by block "
                                "(clip-vit, clip-vit-hf, siglip); experts: "
                                + ", ".join(f"{n} ({e.config.id})" for n, e in experts.items()))
    conv = options.convnet or next(n for n in experts if n != vit)
    if conv == vit or conv not in experts:
        raise FusionOptionError("convnet", f"mr_adapter: convnet must name the other expert, "
                                f"not '{conv}'")
    return vit, conv


class MRAdapter(Fusion):
    Options = MRAdapterOptions

    @classmethod
    def requested_layers(cls, options: MRAdapterOptions, experts: Mapping[str, VisionExpert]
                         ) -> dict[str, list[int]]:
        vit, conv = _roles(options, experts)
        if experts[vit].config.tiling is not None:
            raise FusionOptionError("vit", f"mr_adapter runs the ViT '{vit}' block by block on "
                                    f"one image; remove its tiling")
        final = experts[vit].layers[-1]
        blocks = injection_blocks(experts[vit].depth)
        if final <= blocks[-1]:
            raise FusionOptionError("vit", f"mr_adapter: the ViT's last layer {final} must come "
                                    f"after the last injection (block {blocks[-1]})")
        depth = experts[conv].depth
        if depth < STAGES:
            raise FusionOptionError("convnet", f"mr_adapter needs {STAGES} stages from "
                                    f"'{conv}', which has {depth}")
        return {vit: [final], conv: list(range(depth - STAGES + 1, depth + 1))}

    def __init__(self, inputs: list[FeatureSpec], options: MRAdapterOptions,
                 context: BuildContext | None = None):
        super().__init__(inputs)
        context = context or BuildContext()
        names = list(dict.fromkeys(s.expert for s in inputs))
        vit = options.vit or next((n for n in names if n in context.blockwise), names[0])
        self.vit_name = vit
        vit_specs = [s for s in inputs if s.expert == vit]
        self.stage_specs = [s for s in inputs if s.expert != vit]
        if len(vit_specs) != 1 or len(self.stage_specs) != STAGES:
            raise FusionOptionError("", f"mr_adapter needs one ViT layer and {STAGES} ConvNet "
                                    f"stages, got {len(vit_specs)} and {len(self.stage_specs)}")
        self.conv_name = self.stage_specs[0].expert
        spec = vit_specs[0]
        self.final_layer, self.grid = spec.layer, spec.grid
        self.blocks = injection_blocks(context.depths.get(vit, spec.layer))
        c = spec.channels
        self.width = options.width or c
        hidden = options.gate_hidden or max(1, c // 4)
        self.high_in = nn.ModuleList(nn.Conv2d(s.channels, c, 1) for s in self.stage_specs[:-1])
        self.high_out = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(INJECTIONS))
        self.low_dw = nn.ModuleList(nn.Conv2d(c, c, 7, padding=3, groups=c)
                                    for _ in range(INJECTIONS))
        self.low_out = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(INJECTIONS))
        self.gates = nn.ModuleList(nn.Sequential(nn.Linear(2 * c, hidden), nn.GELU(),
                                                 nn.Linear(hidden, 1))
                                   for _ in range(INJECTIONS))
        for proj in (*self.high_out, *self.low_out):
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)
        self.project_low = nn.Linear(c, self.width)
        self.project_high = nn.Linear(self.stage_specs[-1].channels, self.width)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def channels(self) -> int:
        return self.width

    def inject(self, j: int, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Injection j on the ViT patch map low [B, C, H, W] from ConvNet stage j's map."""
        f_h = self.high_out[j](F.gelu(self.high_in[j](high)))
        f_h = F.interpolate(f_h, size=self.grid, mode="bilinear", align_corners=False)
        f_l = self.low_out[j](self.low_dw[j](low))
        pooled = torch.cat([f_l.mean((2, 3)), f_h.mean((2, 3))], dim=1)
        gate = torch.tanh(self.gates[j](pooled))[:, :, None, None]
        return low + f_l + gate * f_h

    def encode(self, experts, pixels, text=None):
        stages = experts[self.conv_name](pixels[self.conv_name]).maps
        stage_maps = [stages[s.layer] for s in self.stage_specs]
        vit = experts[self.vit_name]
        tokens = vit.embed(pixels[self.vit_name])
        for k in range(1, self.final_layer + 1):
            tokens = vit.block(k, tokens)
            if k in self.blocks:
                j = self.blocks.index(k)
                low = self.inject(j, vit.patch_map(tokens, self.grid), stage_maps[j])
                tokens = torch.cat([tokens[:, :vit.prefix_tokens],
                                    low.flatten(2).transpose(1, 2)], dim=1)
        low = tokens[:, vit.prefix_tokens:]
        high = F.interpolate(stage_maps[-1], size=self.grid, mode="bilinear",
                             align_corners=False).flatten(2).transpose(1, 2)
        return self.checked(self.project_low(low) + self.project_high(high))
