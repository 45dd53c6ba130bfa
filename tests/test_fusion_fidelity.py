"""The fusions against the papers' released code, each compared with a plain re-implementation
written from that code (loops, no helper shared with models/fusion):

- Eagle's channel concatenation resizes every map onto the common grid with
  F.interpolate(mode="bilinear", align_corners=True);
- Mini-Gemini's patch info mining normalizes values with a LayerNorm of their own;
- Dense Connector on SigLIP-so400m: the last block dropped, hidden state 26 as the final
  feature, STI/SCI on hidden states 7 and 15, DCI averaging hidden states 0-12 and 13-25."""
from __future__ import annotations

import pytest
import torch

from models.builder import build_architecture
from models.experts import ExpertConfig
from models.experts.base import StandIn
from models.experts.hf_backend import HFCLIP
from models.experts.presets import Preset
from models.experts.timm_backend import TimmConvNeXt
from models.fusion import FUSIONS
from models.fusion.base import FeatureSpec
from models.fusion.concat import ChannelConcatOptions
from models.fusion.dense_connector import DenseConnectorOptions
from models.fusion.mini_gemini import PatchInfoMiningOptions
from models.fusion.mr_adapter import MRAdapterOptions
from models.llm import LLMConfig
from models.model_config import FusionSpec, ModelConfig
from tests.reference_fusions import resize_corner_aligned


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


# --- LLaVA-HR's MR-adapter ---------------------------------------------------------------------
# HF's CLIP (LLaVA-HR's fast tower) with 4 blocks of width 16, and a ConvNeXt narrow enough for
# the loop reference's convolutions
MICRO_CLIP = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                  num_attention_heads=2, image_size=32, patch_size=8, projection_dim=8)
MICRO_CONVNEXT = Preset("convnext_atto", 64, {"depths": (1, 1, 1, 1), "dims": (8, 8, 8, 16)})


@pytest.mark.parametrize("injected,convnext_px", [
    ("last_stage", 64),     # stage 4 is 2x2: corner-aligned bilinear onto the 4x4 ViT grid
    ("last_stage", 256),    # 8x8: 2x2 average pooling
    ("stages", 64),         # stages 1-3 (16x16, 8x8, 4x4): pooled by 4, by 2, as is
])
def test_mr_adapter_computes_what_llava_hrs_wrapper_computes(monkeypatch, injected,
                                                             convnext_px):
    """Every adapter weight random (the zero-initialised projections too, so every path
    counts); the fusion against tests/reference_fusions.mr_adapter, LLaVA-HR's
    multipath_encoder_wapper.py restated statement by statement."""
    from tests.reference_fusions import mr_adapter
    monkeypatch.setitem(HFCLIP.presets, "micro", MICRO_CLIP)
    monkeypatch.setitem(TimmConvNeXt.presets, "micro", MICRO_CONVNEXT)
    torch.manual_seed(0)
    experts, fusion = build_architecture(ModelConfig(
        [ExpertConfig("clip-vit-hf", preset="micro", layers=[-1]),
         ExpertConfig("convnext", preset="micro", resolution=convnext_px)],
        FusionSpec("mr_adapter", MRAdapterOptions(injected=injected)), llm=LLMConfig()))
    with torch.no_grad():
        for p in fusion.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    pixels = {n: torch.randn(2, 3, *e.input_size) for n, e in experts.items()}
    with torch.no_grad():
        got = fusion.encode(experts, pixels)
        convnext = experts["convnext"].model
        x = convnext.stem(pixels["convnext"])                  # wrapper:166-172
        stages = []
        for stage in convnext.stages:
            x = stage(x)
            stages.append(x)
        injected_maps = [x, x, x] if injected == "last_stage" else stages[:3]
        want = mr_adapter(fusion, experts["clip-vit-hf"], injected_maps, x,
                          pixels["clip-vit-hf"])
    assert got.shape == (2, 16, 16)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
