"""An expert's own library preprocessing (`image_aspect_ratio: processor`) on a PIL image: the
resize and centre crop of its PixelRecipe (models.experts.pixels), with the sizes and offsets
its library computes, so the 8-bit pixels equal the library's before normalization.

Sizes follow torchvision's Resize (open_clip, timm) and transformers' `shortest_edge` resize,
which agree: the short side to S, the long one to int(S * long / short); timm's scale side is
floor(side / crop_pct). SAM's longest side follows SamImageProcessor._get_preprocess_shape:
int(x * side / longest + 0.5); its zero padding comes after normalization (batching's
`pixel_extent`), so here the image stays unpadded."""
from __future__ import annotations

import math

from PIL import Image

from models.experts.pixels import PixelRecipe

FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def _scale_side(side: int, fraction: float) -> int:
    """timm transforms_imagenet_eval: scale_size = floor(img_size / crop_pct)."""
    return math.floor(side / fraction)


def _covering(width: int, height: int, target: tuple[int, int]) -> tuple[int, int]:
    """(w, h) with the short side at the target's (the side that binds for a non-square
    target) and the other scaled by int(), as torchvision's Resize(int) computes it."""
    th, tw = target
    if th == tw:
        if width <= height:
            return tw, int(tw * height / width)
        return int(th * width / height), th
    if th / height >= tw / width:
        return int(th * width / height), th
    return tw, int(tw * height / width)


def _centre_crop(image: Image.Image, size: tuple[int, int], rounding: str) -> Image.Image:
    th, tw = size
    w, h = image.size
    if (w, h) == (tw, th):
        return image
    if rounding == "round":    # torchvision CenterCrop: int(round(margin / 2.0))
        top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    else:                      # transformers' center_crop: margin // 2
        top, left = (h - th) // 2, (w - tw) // 2
    return image.crop((left, top, left + tw, top + th))


def library_resized(image: Image.Image, recipe: PixelRecipe, size: tuple[int, int]
                    ) -> Image.Image:
    """The image at `size` (h, w) as the recipe's library resizes and crops it; for
    `longest_pad`, the resized image before its bottom-right padding."""
    resample = FILTERS[recipe.interpolation]
    width, height = image.size
    if recipe.resize == "longest_pad":
        scale = min(size[0] / height, size[1] / width)
        new = (int(width * scale + 0.5), int(height * scale + 0.5))
        return image.resize(new, resample)
    scaled = (_scale_side(size[0], recipe.crop_fraction),
              _scale_side(size[1], recipe.crop_fraction))
    if recipe.resize == "stretch":
        image = image.resize(scaled[::-1], resample)
    else:
        image = image.resize(_covering(width, height, scaled), resample)
    return _centre_crop(image, size, recipe.crop_rounding)
