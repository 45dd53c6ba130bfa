"""Every expert family: the tiny stand-in at two resolutions (declared geometry == actual),
the run-time resolution assertion, tiling, and weights saved in the backend's own format
loaded back through the `pretrained` option."""
import dataclasses

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from models.experts import EXPERTS, ExpertConfig, TilingConfig, build_expert
from models.experts.open_clip_backend import save_open_clip_dir

FAMILIES = EXPERTS.names()


def test_registry_has_every_family():
    assert set(FAMILIES) >= {"clip-vit", "clip-vit-hf", "clip-convnext", "convnext", "eva02",
                             "sam", "pix2struct", "dinov2", "siglip"}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("resolution", [64, 128])
def test_tiny_runs_at_two_resolutions(family, resolution):
    torch.manual_seed(0)
    expert = build_expert(ExpertConfig(id=family, resolution=resolution, layers=[1, -1]))
    out = expert(torch.randn(2, 3, resolution, resolution))
    for index in expert.layers:
        h, w = expert.layer_grid(index)
        assert out.maps[index].shape == (2, expert.layer_channels(index), h, w)
    if family == "pix2struct":   # its processor resizes any image to its patch budget's grid
        assert expert.layer_grid(expert.layers[-1]) == (5, 5)   # 32 patches: floor(sqrt(32))
        return
    # grids scale with resolution: a 2x larger image gives a 2x larger grid
    assert expert.layer_grid(expert.layers[-1])[0] * 64 // resolution == \
        build_expert(ExpertConfig(id=family, resolution=64)).layer_grid(expert.layers[-1])[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_input_size_is_refused(family):
    expert = build_expert(ExpertConfig(id=family, resolution=64))
    with pytest.raises(RuntimeError, match="expects 64x64"):
        expert(torch.randn(1, 3, 128, 128))


def test_tiling_stitches_tiles_and_adds_thumbnail():
    expert = build_expert(ExpertConfig(id="clip-vit", resolution=32,
                                       tiling=TilingConfig(2, 2, thumbnail=True)))
    assert expert.input_size == (64, 64)
    image = torch.randn(1, 3, 64, 64)
    out = expert(image)
    i = expert.layers[0]
    assert out.maps[i].shape == (1, 64, 8, 8) and out.thumbnail[i].shape == (1, 64, 4, 4)
    # the top-right tile of the stitched map is the expert's map of the top-right crop
    alone = expert._maps(image[:, :, :32, 32:])[i]
    torch.testing.assert_close(out.maps[i][:, :, :4, 4:], alone)


def test_layer_index_out_of_range_names_the_allowed_range():
    with pytest.raises(ValueError, match=r"allowed 0\.\.4"):
        build_expert(ExpertConfig(id="clip-vit", layers=[9]))


@pytest.mark.parametrize("family", ["clip-vit", "clip-vit-hf", "siglip"])
def test_blockwise_run_matches_the_library_forward(family):
    # the block-by-block path (MR-adapter, hidden state 0) computes what the library does
    torch.manual_seed(0)
    expert = build_expert(ExpertConfig(id=family, layers=[1, 3, 4], resolution=80))
    pixels = torch.randn(2, 3, 80, 80)
    with torch.no_grad():
        blockwise = expert.blockwise_maps(pixels, [0, 1, 3, 4])
        if family == "clip-vit":
            ref = expert.model.forward_intermediates(pixels, indices=[0, 2, 3],
                                                     intermediates_only=True)
            library = dict(zip([1, 3, 4], ref["image_intermediates"]))
        else:
            hidden = expert.model(pixel_values=pixels, output_hidden_states=True,
                                  interpolate_pos_encoding=True).hidden_states
            library = {i: expert.patch_map(hidden[i], expert.layer_grid(0)) for i in (0, 1, 3, 4)}
    for i, m in library.items():
        torch.testing.assert_close(blockwise[i], m, atol=1e-5, rtol=0)


def test_unknown_preset_and_bad_resolution():
    with pytest.raises(ValueError, match="no preset 'hug'"):
        build_expert(ExpertConfig(id="sam", preset="hug"))
    with pytest.raises(ValueError, match="cannot take resolution 70"):
        build_expert(ExpertConfig(id="eva02", resolution=70))


def _same_outputs(a, b, resolution=64):
    torch.manual_seed(1)
    x = torch.randn(2, 3, resolution, resolution)
    a.eval(), b.eval()
    for i in a.layers:
        torch.testing.assert_close(a(x).maps[i], b(x).maps[i])


@pytest.mark.parametrize("family", ["clip-vit-hf", "siglip", "dinov2", "sam", "pix2struct"])
def test_transformers_weights_load_through_pretrained_path(family, tmp_path):
    torch.manual_seed(0)
    original = build_expert(ExpertConfig(id=family))
    original.model.save_pretrained(tmp_path)
    loaded = build_expert(ExpertConfig(id=family, pretrained=str(tmp_path)))
    _same_outputs(original, loaded)


@pytest.mark.parametrize("family,arch", [("clip-vit", "ablate-tiny-vit"),
                                         ("clip-convnext", "ablate-tiny-convnext")])
def test_open_clip_weights_load_from_its_own_directory_format(family, arch, tmp_path):
    torch.manual_seed(0)
    full = open_clip.create_model(arch)
    save_open_clip_dir(full, arch, tmp_path)
    loaded = build_expert(ExpertConfig(id=family, pretrained=str(tmp_path)))
    reference = build_expert(ExpertConfig(id=family))
    reference.model.load_state_dict(full.visual.state_dict())
    _same_outputs(reference, loaded)


@pytest.mark.parametrize("family", ["convnext", "eva02"])
def test_timm_weights_load_from_safetensors_file(family, tmp_path):
    torch.manual_seed(0)
    original = build_expert(ExpertConfig(id=family))
    path = tmp_path / "model.safetensors"
    save_file(original.model.state_dict(), str(path))
    loaded = build_expert(ExpertConfig(id=family, pretrained=str(path)))
    _same_outputs(original, loaded)


def test_vit_loaded_at_new_resolution_interpolates_position_embeddings(tmp_path):
    torch.manual_seed(0)
    original = build_expert(ExpertConfig(id="eva02"))
    path = tmp_path / "model.safetensors"
    save_file(original.model.state_dict(), str(path))
    bigger = build_expert(ExpertConfig(id="eva02", pretrained=str(path), resolution=128))
    assert bigger(torch.randn(1, 3, 128, 128)).maps[bigger.layers[0]].shape[-1] == 16
    # the patch embedding is the trained one, not a fresh init
    torch.testing.assert_close(bigger.model.patch_embed.proj.weight,
                               original.model.patch_embed.proj.weight)


def test_frozen_expert_has_no_trainable_parameters():
    e = build_expert(ExpertConfig(id="dinov2", freeze=True))
    assert not any(p.requires_grad for p in e.parameters())
    e = build_expert(dataclasses.replace(ExpertConfig(id="dinov2"), freeze=False))
    assert all(p.requires_grad for p in e.parameters())
