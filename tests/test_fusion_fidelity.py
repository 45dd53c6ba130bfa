"""The fusions against the papers' released code, each compared with a plain re-implementation
written from that code (loops, no helper shared with models/fusion):

- Eagle's channel concatenation resizes every map onto the common grid with
  F.interpolate(mode="bilinear", align_corners=True);
- Mini-Gemini's patch info mining normalizes values with a LayerNorm of their own;
- Dense Connector on SigLIP-so400m: the last block dropped, hidden state 26 as the final
  feature, STI/SCI on hidden states 7 and 15, DCI averaging hidden states 0-12 and 13-25."""
from __future__ import annotations

import math

import pytest
import torch

from harness.config.run_config import FusionSpec, ModelConfig
from harness.modelbuild import build_architecture
from models.experts import ExpertConfig
from models.experts.base import StandIn
from models.fusion import FUSIONS
from models.fusion.base import FeatureSpec
from models.fusion.concat import ChannelConcatOptions
from models.fusion.dense_connector import DenseConnectorOptions
from models.fusion.mini_gemini import PatchInfoMiningOptions
from models.llm import LLMConfig


def resize_corner_aligned(fmap: torch.Tensor, side: int) -> torch.Tensor:
    """[C, H, W] -> [C, side, side]: output pixel i samples input position i*(H-1)/(side-1)
    (corner pixels on corner pixels), bilinear between the four neighbours."""
    c, h, w = fmap.shape
    out = torch.zeros(c, side, side)
    for i in range(side):
        y = i * (h - 1) / (side - 1) if side > 1 else 0.0
        y0 = min(int(math.floor(y)), h - 1)
        y1, fy = min(y0 + 1, h - 1), y - y0
        for j in range(side):
            x = j * (w - 1) / (side - 1) if side > 1 else 0.0
            x0 = min(int(math.floor(x)), w - 1)
            x1, fx = min(x0 + 1, w - 1), x - x0
            for ch in range(c):
                top = (1 - fx) * fmap[ch, y0, x0] + fx * fmap[ch, y0, x1]
                bottom = (1 - fx) * fmap[ch, y1, x0] + fx * fmap[ch, y1, x1]
                out[ch, i, j] = (1 - fy) * top + fy * bottom
    return out


def test_channel_concat_resizes_as_eagle_does():
    """A 64x64 map (EVA-02 / Pix2Struct at 1024 px) onto Eagle's 32x32 grid beside a 32x32
    one: every resized value equals the corner-aligned bilinear reference; the pixel-centre
    resize (the old behaviour, still `align_corners: false`) is far from it."""
    torch.manual_seed(0)
    specs = [FeatureSpec("clip", 1, 3, (32, 32)), FeatureSpec("eva", 1, 2, (64, 64))]
    clip, eva = torch.randn(1, 3, 32, 32), torch.randn(1, 2, 64, 64)
    from models.experts.base import ExpertOutput
    outputs = {"clip": ExpertOutput({1: clip}), "eva": ExpertOutput({1: eva})}
    fusion = FUSIONS.get("channel_concat")(specs, ChannelConcatOptions(grid=32))
    tokens = fusion(outputs)[0]                                      # [1024, 5]
    want = torch.cat([clip[0], resize_corner_aligned(eva[0], 32)]).flatten(1).T
    torch.testing.assert_close(tokens, want, atol=1e-5, rtol=1e-5)
    old = FUSIONS.get("channel_concat")(specs, ChannelConcatOptions(grid=32,
                                                                    align_corners=False))
    moved = old(outputs)[0][:, 3:]
    gap = (moved - want[:, 3:]).norm() / want[:, 3:].norm()
    assert gap > 0.1


def test_patch_info_mining_gives_values_their_own_norm():
    specs = [FeatureSpec("clip", 1, 4, (2, 2)), FeatureSpec("convnext", 4, 6, (4, 4))]
    own = FUSIONS.get("patch_info_mining")(specs, PatchInfoMiningOptions())
    shared = FUSIONS.get("patch_info_mining")(specs, PatchInfoMiningOptions(value_norm="shared"))
    assert {"norm_v.weight", "norm_v.bias"} <= set(own.state_dict())
    assert not any(k.startswith("norm_v") for k in shared.state_dict())
    # equal at initialization, apart once the value norm moves (as training moves it)
    torch.manual_seed(1)
    from models.experts.base import ExpertOutput
    outputs = {"clip": ExpertOutput({1: torch.randn(2, 4, 2, 2)}),
               "convnext": ExpertOutput({4: torch.randn(2, 6, 4, 4)})}
    shared.load_state_dict({k: v for k, v in own.state_dict().items()
                            if not k.startswith("norm_v")})
    torch.testing.assert_close(own(outputs), shared(outputs))
    with torch.no_grad():
        own.norm_v.weight.mul_(3.0)
    from tests.reference_fusions import patch_info_mining
    maps = {"clip:1": outputs["clip"].maps[1], "convnext:4": outputs["convnext"].maps[4]}
    torch.testing.assert_close(own(outputs), patch_info_mining(own, maps, 2),
                               atol=1e-5, rtol=1e-5)
    assert not torch.allclose(own(outputs), shared(outputs))


SIGLIP = ExpertConfig("siglip", "so400m-384", resolution=56, stand_in=StandIn(56))


def _siglip_model(options: DenseConnectorOptions):
    cfg = ModelConfig(experts=[SIGLIP], fusion=FusionSpec("dense_connector", options),
                      llm=LLMConfig())
    torch.manual_seed(0)
    experts, fusion = build_architecture(cfg, text_width=32)
    return experts["siglip"], fusion


def _official_hidden(expert, pixels) -> list[torch.Tensor]:
    """SigLIP's hidden states as the official code reads them: [B, 16, C] per index, no class
    token; its last block is dropped, so index 26 is the last one it has."""
    out = expert.model(pixel_values=pixels, output_hidden_states=True)
    return list(out.hidden_states[:27])


@pytest.mark.parametrize("mode", ["dci", "sci", "sti"])
def test_dense_connector_on_siglip_is_the_official_configuration(mode):
    options = {"dci": DenseConnectorOptions(mode="dci", groups=2, final=27, groups_up_to=26),
               "sci": DenseConnectorOptions(mode="sci", layers=[8, 16], final=27),
               "sti": DenseConnectorOptions(mode="sti", layers=[8, 16], final=27, alpha=8)}
    expert, fusion = _siglip_model(options[mode])
    assert expert.depth == 27
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        got = fusion({"siglip": expert(pixels)})
        hs = _official_hidden(expert, pixels)
    final = hs[26]
    if mode == "dci":
        first = sum(hs[i] for i in range(0, 13)) / 13
        second = sum(hs[i] for i in range(13, 26)) / 13
        want = torch.cat([final, first, second], dim=-1)
    elif mode == "sci":
        want = torch.cat([final, hs[7], hs[15]], dim=-1)
    else:
        pooled = []
        for h in (hs[7], hs[15]):
            n = h.shape[1] // 8   # AvgPool1d(8, 8) over the token axis
            pooled.append(torch.stack([h[:, 8 * t:8 * t + 8].mean(1) for t in range(n)], 1))
        want = torch.cat([final, *pooled], dim=1)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_siglip_dci_shapes_at_full_size():
    """729 tokens of 3 x 1152 channels for SigLIP-so400m/384 (27x27 grid over 378 px)."""
    full = ExpertConfig("siglip", "so400m-384")
    cfg = ModelConfig(experts=[full], fusion=FusionSpec("dense_connector", DenseConnectorOptions(
        mode="dci", groups=2, final=27, groups_up_to=26)), llm=LLMConfig())
    _, fusion = build_architecture(cfg, meta=True)
    assert (fusion.num_tokens, fusion.channels) == (729, 3 * 1152)
    assert fusion.groups == [list(range(0, 13)), list(range(13, 26))] and fusion.final == 26
