"""Each expert's pixel recipe, read from its library's configuration for the checkpoint named.

An expert sees the pixels its own library's eval preprocessing gives (`image_aspect_ratio:
processor`): open_clip's preprocess config (`PreprocessCfg` merged with the pretrained tag's,
open_clip/factory.py `create_model`), timm's `pretrained_cfg` through
`timm.data.resolve_data_config`, or a transformers image processor's parameters (the PIL
backend, as LLaVA-era code ran it). A new checkpoint so brings its own mean, std, resize and
crop; our code adds only what a paper's wrapper changes on top.

A recipe is resolution-free: the crop is a fraction of the resized side (timm's `crop_pct`;
DINOv2's processor 224 of 256), so the same recipe serves an expert run at another side. The
image transform that follows it is harness.data.expert_pixels."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Resize = Literal["shortest", "stretch", "longest_pad"]
Interpolation = Literal["bicubic", "bilinear"]

# PIL's resampling filters by the number transformers' processors store (PILImageResampling)
_PIL_FILTERS: dict[int, Interpolation] = {2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class PixelRecipe:
    """How an image becomes an expert's pixels, as its library does it for evaluation.

    resize: `shortest` scales the shorter side to side/crop_fraction and centre-crops
    (open_clip `shortest`, timm `center`, transformers `shortest_edge` + centre crop);
    `stretch` scales both sides to side/crop_fraction and centre-crops (timm `squash`,
    open_clip `squash`, transformers `height`/`width`); `longest_pad` scales the longer side
    to the side and zero-pads bottom-right after normalization (transformers'
    SamImageProcessor). crop_rounding: torchvision's CenterCrop rounds the offset, transformers'
    `center_crop` floors it: the two differ by a pixel when the margin is odd. source: where
    the recipe was read, for docs and errors."""
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: Resize = "shortest"
    interpolation: Interpolation = "bicubic"
    crop_fraction: float = 1.0
    crop_rounding: Literal["round", "floor"] = "round"
    source: str = ""

    def __post_init__(self):
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"pixel recipe from {self.source}: crop fraction "
                             f"{self.crop_fraction} must be in (0, 1]")


def _triple(value) -> tuple[float, float, float]:
    values = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return values * 3 if len(values) == 1 else values


# --- open_clip -------------------------------------------------------------------------------
_OPEN_CLIP_MODES: dict[str, Resize] = {"shortest": "shortest", "squash": "stretch"}


def open_clip_recipe(arch: str, pretrained: str | None) -> PixelRecipe:
    """What `open_clip.create_model_and_transforms(arch, pretrained)` evaluates with: the
    PreprocessCfg defaults, overlaid by the pretrained tag's config, a `local-dir`'s
    open_clip_config.json or an `hf-hub:` model's (open_clip/factory.py create_model)."""
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict
    overlay: dict = {}
    if pretrained and pretrained.startswith("hf-hub:"):
        from open_clip.pretrained import download_pretrained_from_hf
        path = download_pretrained_from_hf(pretrained[len("hf-hub:"):],
                                           filename="open_clip_config.json")
        overlay = json.loads(Path(path).read_text()).get("preprocess_cfg", {})
    elif pretrained and Path(pretrained).is_dir():
        config = Path(pretrained) / "open_clip_config.json"
        overlay = json.loads(config.read_text()).get("preprocess_cfg", {}) \
            if config.is_file() else {}
    elif pretrained:
        overlay = open_clip.get_pretrained_cfg(arch, pretrained)
    cfg = merge_preprocess_dict(PreprocessCfg(), overlay)
    source = f"open_clip {arch}" + (f" / {pretrained}" if pretrained else "")
    if cfg["resize_mode"] not in _OPEN_CLIP_MODES:
        raise ValueError(f"{source}: open_clip resize_mode {cfg['resize_mode']!r} has no "
                         f"pixel recipe; supported: {', '.join(_OPEN_CLIP_MODES)}")
    return PixelRecipe(_triple(cfg["mean"]), _triple(cfg["std"]),
                       _OPEN_CLIP_MODES[cfg["resize_mode"]],
                       "bilinear" if cfg["interpolation"] == "bilinear" else "bicubic",
                       source=source)


# --- timm ------------------------------------------------------------------------------------
_TIMM_MODES: dict[str, Resize] = {"center": "shortest", "squash": "stretch"}


def timm_pretrained_cfg(arch: str, pretrained: str | None) -> dict:
    """timm's pretrained config for the checkpoint named: `arch.tag` for a tag, the hub
    model's config for `hf-hub:`, else the architecture's default tag (a local weights file
    loads through that config's overlay, models/experts/timm_backend.py create_timm)."""
    import timm.models
    if pretrained and pretrained.startswith("hf-hub:"):
        from timm.models._hub import load_model_config_from_hf
        cfg, _, _ = load_model_config_from_hf(pretrained[len("hf-hub:"):])
        return dict(cfg)
    name = arch if not pretrained or Path(pretrained).exists() else f"{arch}.{pretrained}"
    found = timm.models.get_pretrained_cfg(name)
    if found is None:
        raise ValueError(f"timm has no pretrained config {name!r}; its tags: "
                         f"{', '.join(timm.list_pretrained(arch + '*')) or 'none'}")
    return found.to_dict()


def timm_recipe(arch: str, pretrained: str | None) -> PixelRecipe:
    """`timm.data.resolve_data_config` of the checkpoint's pretrained config: mean, std,
    crop_pct, crop_mode and interpolation (timm/data/transforms_factory.py
    transforms_imagenet_eval)."""
    from timm.data import resolve_data_config
    data = resolve_data_config(pretrained_cfg=timm_pretrained_cfg(arch, pretrained))
    source = f"timm {arch}" + (f" / {pretrained}" if pretrained else "")
    mode = data.get("crop_mode") or "center"
    if mode not in _TIMM_MODES:
        raise ValueError(f"{source}: timm crop_mode {mode!r} has no pixel recipe; "
                         f"supported: {', '.join(_TIMM_MODES)}")
    return PixelRecipe(_triple(data["mean"]), _triple(data["std"]), _TIMM_MODES[mode],
                       "bilinear" if data["interpolation"] == "bilinear" else "bicubic",
                       float(data["crop_pct"]), source=source)


# --- transformers ----------------------------------------------------------------------------
def hf_processor_recipe(processor, source: str) -> PixelRecipe:
    """A transformers image processor's parameters as a recipe: `shortest_edge` + centre
    crop, `height`/`width`, or `longest_edge` + bottom-right pad (SAM)."""
    size, crop = processor.size, getattr(processor, "crop_size", None)
    cropped = bool(getattr(processor, "do_center_crop", False)) and crop is not None
    resample = _PIL_FILTERS.get(int(processor.resample))
    if resample is None:
        raise ValueError(f"{source}: resample {processor.resample} has no pixel recipe; "
                         f"supported: {_PIL_FILTERS}")
    common = dict(mean=_triple(processor.image_mean), std=_triple(processor.image_std),
                  interpolation=resample, crop_rounding="floor", source=source)
    if size.longest_edge and getattr(processor, "do_pad", False):
        return PixelRecipe(resize="longest_pad", **common)
    if size.shortest_edge and cropped:
        return PixelRecipe(resize="shortest", crop_fraction=crop.height / size.shortest_edge,
                           **common)
    if size.height and size.width:
        fraction = crop.height / size.height if cropped else 1.0
        return PixelRecipe(resize="stretch", crop_fraction=fraction, **common)
    raise ValueError(f"{source}: processor size {size} gives no fixed square input")


@dataclass(frozen=True)
class HFProcessorRef:
    """The image processor a transformers model family is published with, and the
    preprocessor_config.json of the checkpoint its full-size preset stands for (what
    `AutoImageProcessor.from_pretrained(checkpoint)` builds, without the hub)."""
    processor: str          # the transformers class (its PIL backend)
    checkpoint: str
    config: dict


_IMAGENET = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])

# preprocessor_config.json on the hub, restated field for field (rescale 1/255 is every one's)
HF_PROCESSORS: dict[str, HFProcessorRef] = {
    "CLIPVisionModel": HFProcessorRef(
        "CLIPImageProcessorPil", "openai/clip-vit-large-patch14-336",
        dict(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
             do_center_crop=True, resample=3, image_mean=[0.48145466, 0.4578275, 0.40821073],
             image_std=[0.26862954, 0.26130258, 0.27577711])),
    "SiglipVisionModel": HFProcessorRef(
        "SiglipImageProcessorPil", "google/siglip-so400m-patch14-384",
        dict(size={"height": 384, "width": 384}, resample=3, image_mean=[0.5, 0.5, 0.5],
             image_std=[0.5, 0.5, 0.5])),
    "Dinov2Model": HFProcessorRef(
        "BitImageProcessorPil", "facebook/dinov2-large",
        dict(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
             do_center_crop=True, resample=3, **_IMAGENET)),
    "SamVisionModel": HFProcessorRef(
        "SamImageProcessorPil", "facebook/sam-vit-large",
        dict(size={"longest_edge": 1024}, pad_size={"height": 1024, "width": 1024},
             do_pad=True, resample=2, **_IMAGENET)),
}


def hf_recipe(model_class: str, pretrained: str | None) -> PixelRecipe:
    """The recipe of the processor published with `pretrained` (a `save_pretrained` folder or
    hub id that holds a preprocessor_config.json), else of the family's reference checkpoint
    (random init, or a checkpoint saved without its processor)."""
    import transformers
    ref = HF_PROCESSORS.get(model_class)
    if ref is None:
        raise ValueError(f"no image processor known for transformers' {model_class}; "
                         f"known: {', '.join(HF_PROCESSORS)}")
    cls = getattr(transformers, ref.processor)
    if pretrained and (Path(pretrained) / "preprocessor_config.json").is_file() or (
            pretrained and not Path(pretrained).exists()):
        try:
            return hf_processor_recipe(cls.from_pretrained(pretrained),
                                       f"transformers {ref.processor} of {pretrained}")
        except OSError:   # a hub model published without a processor: the family's
            pass
    return hf_processor_recipe(cls(**ref.config),
                               f"transformers {ref.processor} ({ref.checkpoint})")
