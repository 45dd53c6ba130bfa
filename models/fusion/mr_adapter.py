"""LLaVA-HR's mixture-of-resolution adapter (Luo et al., 2024) as its released code computes
it: a high-resolution ConvNeXt injected into a low-resolution ViT while the ViT runs.

Cited as `wrapper:N`, lines of llava_hr/model/multimodal_encoder/multipath_encoder_wapper.py in
luogen1996/LLaVA-HR (commit 1212ffb). The ViT runs without its class token: the embeddings'
first token is dropped before the pre-norm and the blocks (wrapper:162-163). After blocks
L/4, L/2 and 3L/4 (wrapper:156-157, 174-212) an adapter (S2FStitchAlignModuleV2,
wrapper:46-107) mixes the ConvNeXt's last stage x into the patch tokens F; every injection
reads that same stage-4 map (wrapper:166-172):

    s = resize(P_s(GELU(Conv1x1(x))))       P_s zero-initialised              wrapper:99-101
    F = F + P_f(GELU(DWConv7x7(F)))          P_f zero-initialised              wrapper:103
    g = W2 GELU(W1 mean_tokens([F, s]))      the updated F; W1: 2C -> C/2      wrapper:56-59,105
    F = F + tanh(g) s                                                          wrapper:106

so at initialisation the ViT computes what it computes alone. The visual tokens are
Linear(F) + Linear(resize(x)) (MultiPathAlignModule, wrapper:13-43, 225). `resize` brings a
map onto the ViT grid: bilinear with corner pixels on corner pixels when the map has fewer
tokens, average pooling when it has more (wrapper:74-94, 24-41), and nothing when equal.

F is the ViT's last configured layer; the released wrapper runs every block and takes the
last one's output without the post-norm (wrapper:213-225), i.e. `layers: [-1]`.

`injected: stages` keeps the variant this harness ran before: injection j reads the
ConvNeXt's stage j (1-3) instead of stage 4, everything else as above."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from core.fields import ranged
from models.experts.base import BlockwiseViT, VisionExpert
from models.fusion.base import BuildContext, FeatureSpec, Fusion, FusionOptionError

INJECTIONS = 3   # after L/4, L/2, 3L/4
STAGES = INJECTIONS + 1


@dataclass(frozen=True)
class MRAdapterOptions:
    """injected: what each injection reads from the ConvNet; `last_stage` its last stage at
    every injection (LLaVA-HR's code), `stages` its stage j at injection j."""
    vit: str | None = None          # the low-resolution ViT; None = the one that runs blockwise
    convnet: str | None = None      # the high-resolution ConvNet; None = the other expert
    width: int | None = ranged(None, ge=1)        # output width; None = the ViT's
    gate_hidden: int | None = ranged(None, ge=1)  # W1's width; None = half the ViT's
    injected: Literal["last_stage", "stages"] = "last_stage"


def injection_blocks(depth: int) -> list[int]:
    """Blocks after which the high-res path is added: L/4, L/2, 3L/4 (rounded down; the
    released code asserts L divisible by 4, wrapper:157)."""
    return [max(1, depth * j // STAGES) for j in range(1, STAGES)]


def stage_layers(options: MRAdapterOptions, depth: int) -> list[int]:
    """The ConvNet hidden states the fusion reads: its last stage, or its last four."""
    if options.injected == "stages":
        return list(range(depth - STAGES + 1, depth + 1))
    return [depth]


def resize(fmap: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[B, C, h, w] onto grid (H, W) as wrapper:74-94: corner-aligned bilinear (in float32)
    when it has fewer tokens, average pooling by the integer ratio when it has more."""
    h, w = fmap.shape[-2:]
    if h * w < grid[0] * grid[1]:
        return F.interpolate(fmap.float(), size=grid, mode="bilinear",
                             align_corners=True).to(fmap.dtype)
    if h * w > grid[0] * grid[1]:
        kernel = (h // grid[0], w // grid[1])
        return F.avg_pool2d(fmap, kernel, kernel)
    return fmap


def check_resizable(expert: str, grid: tuple[int, int], target: tuple[int, int]) -> None:
    """The released code asserts one token count divides the other (wrapper:24, 76); on
    grids that is each side dividing the other's."""
    small, large = sorted([grid, target], key=lambda g: g[0] * g[1])
    if large[0] % small[0] or large[1] % small[1]:
        raise FusionOptionError("", f"mr_adapter: the {grid[0]}x{grid[1]} map of "
                                f"'{expert}' and the ViT's {target[0]}x{target[1]} grid must "
                                f"divide one another (resize by corner-aligned bilinear or "
                                f"average pooling); change a resolution")


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


class ResolutionAdapter(nn.Module):
    """One injection (S2FStitchAlignModuleV2, wrapper:46-107); parameter names are the
    released module's."""

    def __init__(self, width: int, high_channels: int, gate_hidden: int):
        super().__init__()
        self.slow_conv = nn.Conv2d(high_channels, high_channels, 1)
        self.slow_proj = nn.Conv2d(high_channels, width, 1)
        self.fast_conv = nn.Conv2d(width, width, 7, padding=3, groups=width)
        self.fast_proj = nn.Conv2d(width, width, 1)
        self.gate = nn.Sequential(nn.Linear(2 * width, gate_hidden), nn.GELU(),
                                  nn.Linear(gate_hidden, 1))
        # wrapper:61-72: Xavier convolutions, zero projections, so the ViT starts unchanged
        nn.init.xavier_uniform_(self.slow_conv.weight)
        nn.init.xavier_uniform_(self.fast_conv.weight)
        for layer in (self.slow_conv, self.fast_conv, self.slow_proj, self.fast_proj):
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.slow_proj.weight)
        nn.init.zeros_(self.fast_proj.weight)

    def forward(self, tokens: torch.Tensor, high: torch.Tensor, grid: tuple[int, int]
                ) -> torch.Tensor:
        """tokens [B, H*W, C] (no class token), high [B, C_h, h, w] -> [B, H*W, C]."""
        slow = resize(self.slow_proj(F.gelu(self.slow_conv(high))), grid)
        slow = slow.flatten(2).transpose(1, 2)
        fast = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
        fast = fast + self.fast_proj(F.gelu(self.fast_conv(fast)))
        fast = fast.flatten(2).transpose(1, 2)
        gate = self.gate(torch.cat([fast, slow], dim=-1).mean(1)).unsqueeze(1)
        return fast + slow * gate.tanh()


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
        return {vit: [final], conv: stage_layers(options, depth)}

    def __init__(self, inputs: list[FeatureSpec], options: MRAdapterOptions,
                 context: BuildContext | None = None):
        super().__init__(inputs)
        context = context or BuildContext()
        names = list(dict.fromkeys(s.expert for s in inputs))
        vit = options.vit or next((n for n in names if n in context.blockwise), names[0])
        self.vit_name = vit
        vit_specs = [s for s in inputs if s.expert == vit]
        stage_specs = sorted((s for s in inputs if s.expert != vit), key=lambda s: s.layer)
        wanted = STAGES if options.injected == "stages" else 1
        if len(vit_specs) != 1 or len(stage_specs) != wanted:
            raise FusionOptionError("", f"mr_adapter (injected: {options.injected}) needs one "
                                    f"ViT layer and {wanted} ConvNet stage(s), got "
                                    f"{len(vit_specs)} and {len(stage_specs)}")
        self.conv_name = stage_specs[0].expert
        spec = vit_specs[0]
        self.final_layer, self.grid = spec.layer, spec.grid
        self.blocks = injection_blocks(context.depths.get(vit, spec.layer))
        self.last_stage = stage_specs[-1]
        self.injected = (stage_specs[:INJECTIONS] if options.injected == "stages"
                         else [self.last_stage] * INJECTIONS)
        for s in stage_specs:
            check_resizable(s.expert, s.grid, self.grid)
        c = spec.channels
        self.width = options.width or c
        hidden = options.gate_hidden or max(1, c // 2)     # wrapper:57
        self.adapters = nn.ModuleList(ResolutionAdapter(c, s.channels, hidden)
                                      for s in self.injected)
        # the final merge (MultiPathAlignModule, wrapper:13-18, 42): PyTorch's default init
        self.fast_proj = nn.Linear(c, self.width)
        self.slow_proj = nn.Linear(self.last_stage.channels, self.width)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def channels(self) -> int:
        return self.width

    def encode(self, experts, pixels, text=None):
        stages = experts[self.conv_name](pixels[self.conv_name]).maps
        vit = experts[self.vit_name]
        # wrapper:162-163 drops the class token and then pre-norms; `embed` pre-norms first,
        # which is the same since the norm acts on each token alone
        tokens = vit.embed(pixels[self.vit_name])[:, vit.prefix_tokens:]
        for k in range(1, self.final_layer + 1):
            if vit.checkpoint_blocks and torch.is_grad_enabled():
                tokens = checkpoint(vit.block, k, tokens, use_reentrant=False)
            else:
                tokens = vit.block(k, tokens)
            if k in self.blocks:
                j = self.blocks.index(k)
                tokens = self.adapters[j](tokens, stages[self.injected[j].layer], self.grid)
        high = resize(stages[self.last_stage.layer], self.grid).flatten(2).transpose(1, 2)
        return self.checked(self.fast_proj(tokens) + self.slow_proj(high))
