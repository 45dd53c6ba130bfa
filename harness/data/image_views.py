"""An expert's input view (models.experts.InputView) applied to a PIL image: what of the image
the expert is shown. Runs before the resize to the expert's input size, so a view's loss of
colour, detail or field is the same whatever the expert's resolution."""
from __future__ import annotations

from PIL import Image

from models.experts import InputView


def apply_view(image: Image.Image, view: InputView | None) -> Image.Image:
    if view is None:
        return image
    if view.crop is not None:
        w, h = image.size
        left, top, right, bottom = view.crop
        image = image.crop((round(left * w), round(top * h), round(right * w),
                            round(bottom * h)))
    # colour before resolution: a silhouette shrunk afterwards carries no trace of the
    # colours' different luminances
    if view.color == "gray":
        image = image.convert("L").convert("RGB")
    elif view.color == "silhouette":
        image = image.convert("L").point(lambda v: 0 if v < view.threshold else 255)
        image = image.convert("RGB")
    if view.pixels is not None:
        size = image.size
        image = image.resize((view.pixels, view.pixels), Image.BOX).resize(size, Image.NEAREST)
    return image
