"""Samples -> model batches: each expert gets the image preprocessed its own way (input size,
mean and std), the conversation is tokenized by the stage's template, and the batch is padded.

A collated batch carries each expert's pixels as the 8-bit values the image was resized to
(with each expert's mean and std under PIXEL_NORM); `to_device` normalizes them where the
batch lands. Loader workers hand over, pin and copy a quarter of the bytes fp32 pixels would
take (Eagle X5's five 1024-px views: 63 MB per sample as fp32), and the numbers the model sees
are those of torchvision's to_tensor and normalize, bit for bit. An expert whose library pads
after normalizing (SAM's processor: zeros bottom-right) gets its images' extents under
PIXEL_EXTENT, and `to_device` zeroes the rest there, as the processor does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import functional as TF

from core.errors import DataError
from harness.data.expert_pixels import library_resized
from harness.data.image_views import apply_view
from harness.data.llava import Conversation
from models.experts.base import InputView, VisionExpert
from models.experts.pixels import PixelRecipe
from models.templates import IGNORE_INDEX, Template

ASPECT_RATIOS = ("processor", "pad", "resize")


def pad_to_square(image: Image.Image, color: tuple[int, int, int]) -> Image.Image:
    """LLaVA-1.5's expand2square: the image centred on a square of `color`, its aspect ratio
    kept."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), color)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


@dataclass(frozen=True)
class ImageTransform:
    """One expert's preprocessing. aspect `processor`: the expert's own library's (its
    PixelRecipe: shortest side and centre crop, timm's crop_pct, SAM's longest side and
    bottom-right zeros); `pad` (LLaVA-1.5's and Eagle's image_aspect_ratio: pad) first pads the
    image to a square with the expert's mean colour, so the resize keeps its aspect ratio;
    `resize` stretches it to the input size (both bicubic)."""
    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    view: InputView | None = None
    aspect: str = "resize"
    recipe: PixelRecipe | None = None

    def __post_init__(self):
        if self.aspect not in ASPECT_RATIOS:
            raise ValueError(f"image aspect {self.aspect!r}: allowed {', '.join(ASPECT_RATIOS)}")
        if self.aspect == "processor" and self.recipe is None:
            raise ValueError("image aspect `processor` needs the expert's pixel recipe")

    @classmethod
    def for_expert(cls, expert: VisionExpert, aspect: str = "processor") -> ImageTransform:
        return cls(expert.input_size, tuple(expert.mean), tuple(expert.std),
                   expert.config.view, aspect, expert.pixels)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        resized = self.resized(image)
        pixels = normalized(self.as_uint8(resized)[None], self.mean, self.std)
        if self.pads_after_normalize:
            zero_outside(pixels, torch.tensor([[resized.height, resized.width]]))
        return pixels[0]

    @property
    def pads_after_normalize(self) -> bool:
        """The library pads the normalized image with zeros (SAM's processor)."""
        return self.aspect == "processor" and self.recipe.resize == "longest_pad"

    @property
    def resize_key(self) -> tuple:
        """Transforms with the same key resize an image to the same pixels (Eagle's four
        1024-px experts): a batch resizes each image once per key."""
        if self.aspect == "processor":
            r = self.recipe
            return (self.size, self.view, r.resize, r.interpolation, r.crop_fraction,
                    r.crop_rounding)
        pad = tuple(int(255 * m) for m in self.mean) if self.aspect == "pad" else None
        return (self.size, self.view, pad)

    def resized(self, image: Image.Image) -> Image.Image:
        image = apply_view(image, self.view)
        if self.aspect == "processor":
            return library_resized(image, self.recipe, self.size)
        if self.aspect == "pad":
            image = pad_to_square(image, tuple(int(255 * m) for m in self.mean))
        return image.resize(self.size[::-1], Image.BICUBIC)

    def normalize(self, image: Image.Image) -> torch.Tensor:
        return TF.normalize(TF.to_tensor(image), self.mean, self.std)

    def as_uint8(self, image: Image.Image) -> torch.Tensor:
        """The resized image's 8-bit values, [3, H, W] (what `normalize` starts from); an
        image the library pads after normalizing sits top-left on zeros."""
        pixels = TF.pil_to_tensor(image)
        if tuple(pixels.shape[1:]) == self.size:
            return pixels
        canvas = torch.zeros(3, *self.size, dtype=torch.uint8)
        canvas[:, :pixels.shape[1], :pixels.shape[2]] = pixels
        return canvas


PIXEL_NORM = "pixel_norm"
PIXEL_EXTENT = "pixel_extent"


def normalized(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """8-bit pixels [B, 3, H, W] as `ImageTransform.normalize` gives them: the same floats."""
    return TF.normalize(pixels.to(torch.get_default_dtype()).div(255), mean, std)


def zero_outside(pixels: torch.Tensor, extent: torch.Tensor) -> torch.Tensor:
    """Zero each image of [B, 3, H, W] outside its top-left extent [B, 2] = (h, w), in place:
    the padding SamImageProcessor adds after normalizing."""
    rows = torch.arange(pixels.shape[2], device=pixels.device).view(1, -1, 1)
    cols = torch.arange(pixels.shape[3], device=pixels.device).view(1, 1, -1)
    inside = (rows < extent[:, 0].view(-1, 1, 1)) & (cols < extent[:, 1].view(-1, 1, 1))
    return pixels.masked_fill_(~inside.unsqueeze(1), 0)


def expert_transforms(experts, aspect: str = "processor") -> dict[str, ImageTransform]:
    """Each expert's image preprocessing, by expert name."""
    return {name: ImageTransform.for_expert(e, aspect) for name, e in experts.items()}


class Collator:
    """Builds training batches (labels on replies) or generation batches (prompt only)."""

    def __init__(self, tokenizer, template: Template, transforms: dict[str, ImageTransform],
                 image_root: Path, for_generation: bool = False):
        self.tokenizer, self.template = tokenizer, template
        self.transforms, self.image_root = transforms, Path(image_root)
        self.for_generation = for_generation

    def as_prompts(self) -> Collator:
        """This collator building generation batches (the prompt alone)."""
        if self.for_generation:
            return self
        return Collator(self.tokenizer, self.template, self.transforms, self.image_root,
                        for_generation=True)

    def __call__(self, samples: list[Conversation]) -> dict:
        return {**self.text(samples), **self.images(samples)}

    def text(self, samples: list[Conversation]) -> dict:
        """The tokenized, padded conversations: input_ids, attention_mask, sample_ids and (for
        training batches) labels."""
        encoded = [self.template.encode(s.turns, self.tokenizer, self.for_generation)
                   for s in samples]
        longest = max(len(e.input_ids) for e in encoded)
        pad = self.tokenizer.pad_token_id
        b = len(samples)
        input_ids = torch.full((b, longest), pad, dtype=torch.long)
        labels = torch.full((b, longest), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((b, longest), dtype=torch.long)
        for i, e in enumerate(encoded):
            n = len(e.input_ids)
            input_ids[i, :n] = torch.tensor(e.input_ids)
            labels[i, :n] = torch.tensor(e.labels)
            mask[i, :n] = 1
        batch = {"input_ids": input_ids, "attention_mask": mask,
                 "sample_ids": [s.id for s in samples]}
        if not self.for_generation:
            batch["labels"] = labels
        return batch

    def images(self, samples: list[Conversation]) -> dict:
        """Each expert's view of the samples' images (`pixels`), and `has_image`."""
        has_image = torch.tensor([s.image is not None for s in samples])
        pixels, extents = {}, {}
        opened = [self._open(s) for s in samples]   # each image decoded once
        resized: dict[tuple, list] = {}                    # and resized once per size
        for name, transform in self.transforms.items():
            key = transform.resize_key
            if key not in resized:
                resized[key] = [transform.resized(im) if im is not None else None
                                for im in opened]
            blank = torch.zeros(3, *transform.size, dtype=torch.uint8)
            pixels[name] = torch.stack([transform.as_uint8(im) if im is not None else blank
                                        for im in resized[key]])
            if transform.pads_after_normalize:
                extents[name] = torch.tensor([(im.height, im.width) if im is not None
                                              else transform.size for im in resized[key]])
        norms = {name: (t.mean, t.std) for name, t in self.transforms.items()}
        batch = {"pixels": pixels, PIXEL_NORM: norms, "has_image": has_image}
        return {**batch, PIXEL_EXTENT: extents} if extents else batch

    def _open(self, sample: Conversation) -> Image.Image | None:
        image = sample.image
        if image is None:
            return None
        if isinstance(image, Image.Image):  # handed over in memory (lmms-eval's documents)
            return image.convert("RGB")
        path = self.image_root / image
        try:
            with Image.open(path) as opened:
                return opened.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            # mid-stage, hours in: the record and the file, not a PIL traceback
            raise DataError(bad_image_message(sample.id, path, exc)) from None


def bad_image_message(record_id: str, path: Path, exc: BaseException) -> str:
    return (f"{path}: record id {record_id!r}: the image does not decode "
            f"({type(exc).__name__}: {exc}); `ablate check-data SPEC` lists every such image "
            "before training, and `data.bad_images: skip` leaves their records out")


def to_device(batch, device):
    """Tensors (also inside dicts) to `device`; anything else (sample ids) as is. A copy from
    pinned host memory (the loader's, on GPUs) is asynchronous: later work on the stream
    waits for it, the host does not. A collated batch's 8-bit pixels are normalized there,
    and a sample without an image gets zeros, as the model has always been handed."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=batch.is_pinned())
    if not isinstance(batch, dict):
        return batch
    moved = {k: to_device(v, device) for k, v in batch.items()
             if k not in (PIXEL_NORM, PIXEL_EXTENT)}
    if PIXEL_NORM in batch:
        absent = ~moved["has_image"].view(-1, 1, 1, 1)
        moved["pixels"] = {name: normalized(p, *batch[PIXEL_NORM][name]).masked_fill_(absent, 0)
                           for name, p in moved["pixels"].items()}
        for name, extent in batch.get(PIXEL_EXTENT, {}).items():
            zero_outside(moved["pixels"][name], extent.to(device))
    return moved

