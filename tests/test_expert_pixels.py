"""Every expert preset sees the pixels its library's own eval preprocessing gives
(`image_aspect_ratio: processor`): our loader's tensor (Collator -> uint8 -> to_device) against
open_clip's preprocess, timm's `create_transform(**resolve_data_config(...))` and transformers'
PIL image processors built from the hub's preprocessor_config.json values, on non-square
images. The loop runs over the expert registry: a preset without a reference here fails.

Tolerance: both sides quantize to the same 8-bit resized image and then divide and normalize
in float32, so they differ by float rounding only (x/255 against x*(1/255): ~1e-7). One 8-bit
level is 1/255/std >= 0.0078 after normalization (std <= 0.5), 780 times atol=1e-5: any
different resize, crop offset, filter, pad or mean/std fails."""
from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest
import torch
from PIL import Image

from core.identity import to_plain
from harness.config.run_config import DataConfig
from harness.data.batching import ASPECT_RATIOS, Collator, ImageTransform, to_device
from harness.data.llava import Conversation
from models.experts import EXPERTS, ExpertConfig, build_expert
from models.experts.presets import Preset

ATOL = 1e-5


def _image(width: int, height: int, seed: int) -> Image.Image:
    """A gradient with noise: resizing filters and one-pixel crop shifts both show."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    rgb = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2)
    rgb = rgb + rng.integers(-40, 40, size=(height, width, 3))
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


# landscape and portrait, odd margins, images smaller and larger than the inputs, and one
# whose scaled side lands on .5 at 64 px (SAM rounds half up)
IMAGES = [_image(97, 61, 0), _image(45, 130, 1), _image(700, 431, 2), _image(128, 61, 3)]


# --- the libraries' own transforms -------------------------------------------------------------
def open_clip_reference(arch: str, tag: str | None, side: int):
    """create_model_and_transforms' eval preprocess (open_clip/factory.py: PreprocessCfg
    defaults, merged with the tag's pretrained config, then image_transform_v2)."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
    cfg = merge_preprocess_dict(PreprocessCfg(), open_clip.get_pretrained_cfg(arch, tag)
                                if tag else {})
    return image_transform_v2(PreprocessCfg(**{**cfg, "size": side}), is_train=False)


def timm_reference(name: str, side: int):
    import timm.data
    import timm.models
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    data = timm.data.resolve_data_config({"input_size": (3, side, side)}, pretrained_cfg=cfg)
    return timm.data.create_transform(**data)


# preprocessor_config.json of each transformers checkpoint, as the hub holds it (every one
# also has do_resize, do_rescale with rescale_factor 1/255, do_normalize, do_convert_rgb):
# openai/clip-vit-large-patch14-336: size 336 (shortest edge), crop_size 336, resample 3
#   (bicubic), CLIP mean/std
# google/siglip-so400m-patch14-384: size {height 384, width 384}, resample 3, mean/std 0.5
# facebook/dinov2-large (BitImageProcessor): size {shortest_edge 256}, crop_size 224x224,
#   resample 3, ImageNet mean/std
# facebook/sam-vit-large and sam-vit-huge: size {longest_edge 1024}, do_pad, pad_size
#   1024x1024, resample 2 (bilinear), ImageNet mean/std
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def hf_reference(family: str, side: int):
    """The PIL processor at the expert's side: the hub config's sizes scaled by side/native
    (DINOv2's 256 -> 224 stays a 224/256 crop), everything else as the hub has it."""
    import transformers as tf
    if family == "clip-vit-hf":
        proc = tf.CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size=side,
                                        resample=3, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    elif family == "siglip":
        proc = tf.SiglipImageProcessorPil(size={"height": side, "width": side}, resample=3,
                                          image_mean=[0.5] * 3, image_std=[0.5] * 3)
    elif family == "dinov2":
        proc = tf.BitImageProcessorPil(size={"shortest_edge": side * 256 // 224},
                                       crop_size={"height": side, "width": side},
                                       do_center_crop=True, resample=3,
                                       image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    else:
        proc = tf.SamImageProcessorPil(size={"longest_edge": side},
                                       pad_size={"height": side, "width": side}, do_pad=True,
                                       resample=2, image_mean=IMAGENET_MEAN,
                                       image_std=IMAGENET_STD)
    return lambda image: proc(images=image, return_tensors="pt")["pixel_values"][0]


# (family, preset) -> the library checkpoint whose preprocessing the preset must get: the
# pretrained tag our specs name, else the family's reference; None: no reference, with why
CHECKPOINTS = {
    ("clip-vit", "large-336"): ("open_clip", "ViT-L-14-336", "openai"),
    ("clip-vit", "large-224"): ("open_clip", "ViT-L-14", "openai"),
    ("clip-vit", "base-224"): ("open_clip", "ViT-B-16", "openai"),
    ("clip-vit", "tiny"): ("open_clip", "ablate-tiny-vit", None),
    ("clip-convnext", "xxlarge-1024"): ("open_clip", "convnext_xxlarge",
                                        "laion2b_s34b_b82k_augreg_soup"),
    ("clip-convnext", "large-320"): ("open_clip", "convnext_large_d_320",
                                     "laion2b_s29b_b131k_ft_soup"),
    ("clip-convnext", "tiny"): ("open_clip", "ablate-tiny-convnext", None),
    ("convnext", "xxlarge"): ("timm", "convnext_xxlarge", "clip_laion2b_soup_ft_in1k"),
    ("convnext", "large"): ("timm", "convnext_large", "fb_in22k_ft_in1k"),
    ("convnext", "tiny"): ("timm", "convnext_atto", "d2_in1k"),
    ("eva02", "large-1024"): ("timm", "eva02_large_patch14_448", "mim_m38m_ft_in22k_in1k"),
    ("eva02", "large-448"): ("timm", "eva02_large_patch14_448", "mim_in22k_ft_in22k_in1k"),
    ("eva02", "tiny"): ("timm", "eva02_tiny_patch14_224", "mim_in22k"),
    ("clip-vit-hf", "large-336"): ("transformers", "clip-vit-hf", None),
    ("clip-vit-hf", "tiny"): ("transformers", "clip-vit-hf", None),
    ("siglip", "so400m-384"): ("transformers", "siglip", None),
    ("siglip", "tiny"): ("transformers", "siglip", None),
    ("dinov2", "large"): ("transformers", "dinov2", None),
    ("dinov2", "tiny"): ("transformers", "dinov2", None),
    ("sam", "large"): ("transformers", "sam", None),
    ("sam", "huge"): ("transformers", "sam", None),
    ("sam", "tiny"): ("transformers", "sam", None),
    # Pix2StructImageProcessor cuts a variable-size, aspect-keeping patch grid (its patch
    # budget); our Pix2Struct takes a fixed square: issue 31 item 2, the features side
    ("pix2struct", "large"): None,
    ("pix2struct", "base"): None,
    ("pix2struct", "tiny"): None,
}

PRESETS = [(family, preset) for family in EXPERTS.names()
           for preset in EXPERTS.get(family).presets]


def native_side(family: str, preset: str) -> int:
    spec = EXPERTS.get(family).presets[preset]
    return spec.resolution if isinstance(spec, Preset) else spec["image_size"]


def reference(family: str, preset: str, side: int):
    library, name, tag = CHECKPOINTS[(family, preset)]
    if library == "open_clip":
        return open_clip_reference(name, tag, side)
    if library == "timm":
        return timm_reference(f"{name}.{tag}", side)
    return hf_reference(name, side)


def ours(transform: ImageTransform, images: list[Image.Image]) -> torch.Tensor:
    """The loader's path: collated 8-bit pixels, normalized (and zero-padded) by to_device."""
    collate = Collator(None, None, {"e": transform}, image_root=".")
    batch = collate.images([Conversation(str(i), im, []) for i, im in enumerate(images)])
    return to_device(batch, torch.device("cpu"))["pixels"]["e"]


def test_every_preset_has_a_pixel_reference():
    missing = [p for p in PRESETS if p not in CHECKPOINTS]
    assert not missing, (f"expert presets without a pixel reference in "
                         f"tests/test_expert_pixels.py CHECKPOINTS: {missing}")


@pytest.mark.parametrize("family,preset", PRESETS)
def test_pixels_equal_the_librarys_preprocessing(family, preset):
    if CHECKPOINTS.get((family, preset), ...) is None:
        pytest.skip("no library reference: " + "Pix2Struct's processor is issue 31 item 2")
    assert (family, preset) in CHECKPOINTS, "no pixel reference (see the test above)"
    library, _, tag = CHECKPOINTS[(family, preset)]
    side = native_side(family, preset)
    recipe = EXPERTS.get(family).pixel_recipe(ExpertConfig(family, preset, pretrained=tag))
    transform = ImageTransform((side, side), recipe.mean, recipe.std, aspect="processor",
                               recipe=recipe)
    expected = reference(family, preset, side)
    got = ours(transform, IMAGES)
    for i, image in enumerate(IMAGES):
        torch.testing.assert_close(got[i], expected(image), atol=ATOL, rtol=0,
                                   msg=lambda m, size=image.size: f"{family}/{preset} "
                                   f"({recipe.source}), image {size}: {m}")


@pytest.mark.parametrize("family", [f for f in EXPERTS.names() if f != "pix2struct"])
def test_a_built_expert_hands_its_recipe_to_the_loader(family):
    """ImageTransform.for_expert on a real (tiny, random-init) expert at a non-native side:
    the default aspect is the library's, at the expert's resolution."""
    expert = build_expert(ExpertConfig(family, "tiny", resolution=96))
    transform = ImageTransform.for_expert(expert)
    assert transform.aspect == "processor" and transform.size == (96, 96)
    expected = reference(family, "tiny", 96)
    got = ours(transform, IMAGES[:2])
    for i, image in enumerate(IMAGES[:2]):
        torch.testing.assert_close(got[i], expected(image), atol=ATOL, rtol=0)


def test_open_clip_reference_is_create_model_and_transforms():
    """The open_clip reference above is what open_clip's own entry point hands out."""
    import open_clip

    from models.experts.open_clip_backend import _open_clip
    _open_clip()   # this project's tiny archs registered
    _, _, preprocess = open_clip.create_model_and_transforms("ablate-tiny-vit",
                                                             force_image_size=64)
    for image in IMAGES:
        torch.testing.assert_close(preprocess(image),
                                   open_clip_reference("ablate-tiny-vit", None, 64)(image))


def test_convnext_xxlarge_uses_clip_mean_and_std_from_timms_config():
    """Issue 31 item 6: every timm convnext_xxlarge config says CLIP's mean and std."""
    import timm
    from timm.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    family = EXPERTS.get("convnext")
    for name in timm.list_pretrained("convnext_xxlarge*"):
        recipe = family.pixel_recipe(ExpertConfig("convnext", "xxlarge",
                                                  pretrained=name.split(".", 1)[1]))
        assert (recipe.mean, recipe.std) == (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD), name
    assert family.pixel_recipe(ExpertConfig("convnext", "xxlarge")).mean == OPENAI_CLIP_MEAN


def test_sam_pads_bottom_right_with_zeros_after_normalizing():
    recipe = EXPERTS.get("sam").pixel_recipe(ExpertConfig("sam", "tiny"))
    transform = ImageTransform((64, 64), recipe.mean, recipe.std, aspect="processor",
                               recipe=recipe)
    got = ours(transform, [IMAGES[0]])[0]          # 97x61: 64 wide, int(61*64/97+.5)=40 high
    assert got[:, 40:].abs().max() == 0 and got[:, 39].abs().min() > 0


def test_aspect_choices_agree_and_identity():
    """The config's choices are the loader's; `resize` runs keep the keys they were made with
    (the option left out of the hashed form), `processor` and `pad` are written."""
    field = {f.name: f for f in dataclasses.fields(DataConfig)}["image_aspect_ratio"]
    assert set(typing.get_args(field.type if not isinstance(field.type, str) else
                               typing.get_type_hints(DataConfig)["image_aspect_ratio"])) \
        == set(ASPECT_RATIOS)
    assert DataConfig().image_aspect_ratio == "processor"
    hashed = {a: to_plain(DataConfig(image_aspect_ratio=a)) for a in ASPECT_RATIOS}
    assert "image_aspect_ratio" not in hashed["resize"]
    assert hashed["pad"]["image_aspect_ratio"] == "pad"
    assert hashed["processor"]["image_aspect_ratio"] == "processor"


def test_written_configs_read_back_and_old_resize_runs_keep_their_key(tmp_path):
    """config.yaml spells the option out, so a run reads back as itself whatever the default;
    one written before `processor` existed (the option left out at `resize`) is read back as
    the `resize` run its directory's key names (harness.runs.rebuild.keyed_as)."""
    import yaml

    from harness.config.yamlio import Located
    from harness.runs.rebuild import keyed_as
    from harness.specs.run_file import parse_run_config
    from tests.tiny import tiny_run_yaml
    (tmp_path / "run.yaml").write_text(tiny_run_yaml())
    base = yaml.safe_load(tiny_run_yaml())

    def read(data: dict):
        return parse_run_config(Located(data, {}, str(tmp_path / "run.yaml")),
                                check_files=False)
    configs = {a: read({**base, "data": {**base["data"], "image_aspect_ratio": a}})
               for a in ASPECT_RATIOS}
    assert len({c.key for c in configs.values()}) == 3
    for aspect, cfg in configs.items():
        assert cfg.to_dict()["data"]["image_aspect_ratio"] == aspect
        assert read(cfg.to_dict()) == cfg
    old = configs["resize"].to_dict()
    del old["data"]["image_aspect_ratio"]          # what config.yaml held before
    assert read(old).data.image_aspect_ratio == "processor"
    assert keyed_as(read(old), configs["resize"].key) == configs["resize"]
    assert keyed_as(configs["pad"], configs["pad"].key) == configs["pad"]


def test_a_wrong_aspect_names_the_file_field_and_the_choices(tmp_path):
    import yaml

    from core.errors import ConfigError
    from harness.config.yamlio import load_yaml
    from harness.specs.run_file import parse_run_config
    from tests.tiny import tiny_run_yaml
    data = yaml.safe_load(tiny_run_yaml())
    data["data"]["image_aspect_ratio"] = "square"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        parse_run_config(load_yaml(tmp_path / "run.yaml"), check_files=False)
    message = str(err.value)
    assert "run.yaml" in message and "data.image_aspect_ratio" in message
    assert all(repr(a) in message for a in ASPECT_RATIOS)
