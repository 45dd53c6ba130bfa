"""Shape contracts at the papers' full-size dimensions, built on the meta device (no weights,
no memory): Eagle's X5 / X4 expert sets channel-concatenated on a 32x32 grid."""
import pytest
import torch

from models.builder import feature_specs
from models.experts import ExpertConfig, build_expert
from models.fusion import build_fusion
from models.fusion.concat import ChannelConcatOptions

EAGLE_X5 = [  # (family, preset, resolution, resample, channels after resampling to 32x32)
    ("clip-vit", "large-336", 448, "bilinear", 1024),
    ("clip-convnext", "xxlarge-1024", 1024, "bilinear", 3072),
    ("sam", "large", 1024, "unshuffle", 1024),
    ("pix2struct", "large", 1024, "bilinear", 1536),
    ("eva02", "large-1024", 1024, "bilinear", 1024),
]


def _experts(rows):
    with torch.device("meta"):
        return {fam: build_expert(ExpertConfig(id=fam, preset=preset, resolution=res,
                                               resample=rs))
                for fam, preset, res, rs, _ in rows}


@pytest.mark.parametrize("with_sam,channels", [(True, 7680), (False, 6656)])
def test_eagle_channel_concat(with_sam, channels):
    rows = [r for r in EAGLE_X5 if with_sam or r[0] != "sam"]
    experts = _experts(rows)
    fusion = build_fusion("channel_concat", feature_specs(experts), ChannelConcatOptions(grid=32))
    assert (fusion.num_tokens, fusion.channels) == (1024, channels)


def test_each_eagle_expert_geometry():
    experts = _experts(EAGLE_X5)
    got = {f: (e.layer_channels(e.layers[0]), e.output_grid(e.layers[0]))
           for f, e in experts.items()}
    assert got == {"clip-vit": (1024, (32, 32)), "clip-convnext": (3072, (32, 32)),
                   "sam": (256, (64, 64)), "pix2struct": (1536, (45, 45)),
                   "eva02": (1024, (64, 64))}


@pytest.mark.parametrize("family,preset,res", [("sam", "large", 1024),
                                               ("eva02", "large-1024", 1024),
                                               ("convnext", "xxlarge", 1024),
                                               ("clip-vit-hf", "large-336", 336),
                                               ("dinov2", "large", 448)])
def test_meta_forward_matches_declared_geometry(family, preset, res):
    with torch.device("meta"):
        e = build_expert(ExpertConfig(id=family, preset=preset, resolution=res))
        out = e(torch.empty(1, 3, res, res))
    i = e.layers[0]
    assert out.maps[i].shape == (1, e.layer_channels(i), *e.layer_grid(i))


def test_siglip_so400m_384_uses_27x27_patches():
    with torch.device("meta"):
        e = build_expert(ExpertConfig(id="siglip", preset="so400m-384"))
    assert e.resolution == 384 and e.layer_grid(e.layers[0]) == (27, 27)
    assert e.depth == 27 and e.layer_channels(e.layers[0]) == 1152
