"""Every expert family, under every paper wrapper it has, at every preset's architecture (a
narrow stand-in of the full-size ones), gives the features that the paper's released wrapper
code (or the library call the papers make) gives on the same random-init weights:
tests/reference_experts.py restates that code. A family or wrapper added to the registries
without a reference there fails here."""
import dataclasses

import pytest
import torch

from models.experts import EXPERTS, WRAPPERS, ExpertConfig, build_expert
from models.experts.base import StandIn
from tests.reference_experts import REFERENCES

REGISTERED = sorted({(f, None) for f in EXPERTS.names()}
                    | {(f, w) for w in WRAPPERS.names() for f in WRAPPERS.get(w)},
                    key=str)


def test_every_family_and_wrapper_has_a_feature_reference():
    assert set(REGISTERED) - set(REFERENCES) == set(), "add a reference in reference_experts.py"
    assert set(REFERENCES) - set(REGISTERED) == set(), "a reference for nothing registered"


def _cell(family: str, preset: str, wrapper: str | None) -> int:
    """Pixels per grid cell of the preset as published (built on the meta device)."""
    with torch.device("meta"):
        e = build_expert(ExpertConfig(family, preset, wrapper=wrapper, freeze=False))
    return e.resolution // e.layer_grid(e.depth)[0]


def _cases():
    for family, wrapper in REGISTERED:
        for preset in EXPERTS.get(family).presets:
            yield pytest.param(family, wrapper, preset, id=f"{family}-{wrapper}-{preset}")


def _build(family, wrapper, preset, above_native: bool):
    if preset == "tiny":
        cfg = ExpertConfig(family, "tiny", wrapper=wrapper, freeze=False)
        native = build_expert(cfg).resolution
        cell = _cell(family, "tiny", wrapper)
    else:   # the preset's depth, patch, windows and heads of 16 at width 32
        cell = _cell(family, preset, wrapper)
        native = 4 * cell
        cfg = ExpertConfig(family, preset, wrapper=wrapper, freeze=False,
                           stand_in=StandIn(native))
    resolution = native + 2 * cell if above_native else native
    cfg = dataclasses.replace(cfg, resolution=resolution)
    expert = build_expert(cfg)
    expert.use_layers(sorted({1, max(1, expert.depth // 2), expert.depth}))
    return expert.eval()


@pytest.mark.parametrize("above_native", [False, True])
@pytest.mark.parametrize("family,wrapper,preset", list(_cases()))
def test_features_equal_the_papers_code(family, wrapper, preset, above_native):
    if above_native and wrapper == "eagle-released":
        pytest.skip("eagle-released runs CLIP at its native side only (tested below)")
    torch.manual_seed(0)
    expert = _build(family, wrapper, preset, above_native)
    side = expert.resolution
    pixels = torch.rand(2, 3, side, side)
    with torch.no_grad():
        ours = expert(pixels).maps
        reference = REFERENCES[(family, wrapper)](expert, pixels)
    assert set(reference) <= set(ours) and reference
    for k, want in reference.items():
        torch.testing.assert_close(ours[k], want, rtol=1e-5, atol=1e-5,
                                   msg=lambda m, k=k: f"hidden state {k}: {m}")


def test_eagle_sam_is_clip_normalized_with_a_new_trained_neck():
    cfg = ExpertConfig("sam", "tiny", wrapper="eagle", freeze=False)
    expert = build_expert(cfg)
    # CLIP's mean/std as OpenAI's CLIP processor has them (sam_encoder.py:94-114)
    assert (tuple(expert.mean), tuple(expert.std)) == (
        (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    neck = expert.model.vision_encoder.neck
    assert [n for n, _ in neck.named_parameters()] == [
        "conv1.weight", "layer_norm1.weight", "layer_norm1.bias"]
    with pytest.raises(ValueError, match="freeze: false"):
        build_expert(dataclasses.replace(cfg, freeze=True))


def test_eagle_released_clip_refuses_the_papers_448():
    with pytest.raises(ValueError, match="eagle-released.*336"):
        with torch.device("meta"):
            build_expert(ExpertConfig("clip-vit-hf", "large-336", resolution=448,
                                      wrapper="eagle-released"))


def test_a_wrapper_without_a_version_for_the_family_names_the_allowed():
    with pytest.raises(ValueError, match="covers: clip-vit-hf, sam"):
        build_expert(ExpertConfig("dinov2", "tiny", wrapper="eagle"))


def test_pix2struct_keeps_the_processors_budget_at_full_size():
    """2048 patches at 16 px on a square image: 45x45 = 2025 tokens, as Eagle hard-codes
    (pix2struct_encoder.py:112,115)."""
    with torch.device("meta"):
        e = build_expert(ExpertConfig("pix2struct", "large", resolution=1024))
    assert e.max_patches == 2048 and e.layer_grid(e.depth) == (45, 45)


def test_wrapper_is_left_out_of_the_key_when_unset():
    from core.identity import to_plain
    assert "wrapper" not in to_plain(ExpertConfig("sam"))
    assert to_plain(ExpertConfig("sam", wrapper="eagle"))["wrapper"] == "eagle"


@pytest.mark.parametrize("wrapper,message", [("eagel", "Did you mean: eagle"),
                                             ("eagle", "covers: clip-vit-hf, sam")])
def test_a_bad_wrapper_in_a_config_names_file_line_and_field(tmp_path, wrapper, message):
    from pathlib import Path

    from core.errors import ConfigError
    from harness.specs.run_file import load_run_config
    base = Path(__file__).parent.parent / "experiments" / "tiny" / "two_experts.yaml"
    old = "{id: clip-vit, preset: tiny, resolution: 64, layers: [-1], freeze: false}"
    text = base.read_text()
    assert old in text
    path = tmp_path / "cfg.yaml"
    path.write_text(text.replace(old, old[:-1] + f", wrapper: {wrapper}}}"))
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert err.value.field == "model.experts[0].wrapper", str(err.value)
    assert message in str(err.value) and err.value.line is not None


@pytest.mark.parametrize("family,wrapper,resolution,want", [
    ("clip-vit-hf", "eagle", 448, (1024, (32, 32))),           # the paper's 448 px
    ("clip-vit-hf", "eagle-released", None, (1024, (24, 24))),  # the code's 336, to 32 by fusion
    ("sam", "eagle", 1024, (256, (64, 64))),                     # the short neck's 256 channels
])
def test_eagle_wrappers_at_full_size(family, wrapper, resolution, want):
    with torch.device("meta"):
        e = build_expert(ExpertConfig(family, "large-336" if family != "sam" else "large",
                                      resolution=resolution, wrapper=wrapper, freeze=False))
        out = e(torch.empty(1, 3, e.resolution, e.resolution))
    assert (e.layer_channels(e.depth), e.layer_grid(e.depth)) == want
    assert out.maps[e.depth].shape[1:] == (want[0], *want[1])
