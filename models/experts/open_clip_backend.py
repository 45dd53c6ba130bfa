"""Experts loaded through open_clip: CLIP ViTs (OpenAI / LAION) and CLIP-ConvNeXt (the LAION
ConvNeXt-XXL that Eagle uses), only the image tower kept.

Pretrained weights: a directory in open_clip's own format (`open_clip_config.json` plus
weights) loads through the `local-dir:` schema, a single checkpoint file or a pretrained tag
("openai", "laion2b_s34b_b82k_augreg_soup") through `pretrained=`, an `hf-hub:` name as is.
A ViT at a resolution other than its checkpoint's gets open_clip's position-embedding
interpolation (`force_image_size`)."""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from models.experts.base import BlockwiseViT, ExpertConfig, VisionExpert
from models.experts.convnet import ConvNeXtExpert
from models.experts.pixels import PixelRecipe, open_clip_recipe
from models.experts.presets import Preset, check_divisible, pick


@functools.cache
def _open_clip():
    """open_clip, with this project's configs (the tiny archs) added; imported on first use so
    that a machine without open_clip (a GPU node with only torch, timm and transformers) can
    still import the zoo and build every other family."""
    import open_clip
    open_clip.add_model_config(Path(__file__).parent / "open_clip_configs")
    return open_clip


# The text tower open_clip builds beside a stand-in's image tower (it is dropped at once).
_SMALL_TEXT = {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1}


def create_open_clip(arch: str, pretrained: str | None, resolution: int,
                     vision_cfg: dict | None = None) -> torch.nn.Module:
    """Build the full open_clip model and return its image tower; `vision_cfg` replaces the
    architecture's image-tower config (a stand-in's), with a small text tower beside it."""
    # open_clip moves the model to `device` at the end; keep the caller's default device so a
    # full-size expert can be built on the meta device for shape checks.
    opts = dict(force_image_size=resolution, device=torch.empty(0).device)
    if vision_cfg is not None:
        opts.update(vision_cfg=vision_cfg, text_cfg=_SMALL_TEXT, embed_dim=32)
    if pretrained and pretrained.startswith("hf-hub:"):
        model = _open_clip().create_model(pretrained, **opts)
    elif pretrained and Path(pretrained).is_dir():
        model = _open_clip().create_model(f"local-dir:{pretrained}", **opts)
    else:
        model = _open_clip().create_model(arch, pretrained=pretrained, **opts)
    return model.visual


def save_open_clip_dir(model: torch.nn.Module, arch: str, directory: str | Path) -> None:
    """Write a full open_clip model in the layout `local-dir:` reads (used by tests/tools)."""
    import json
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = {"model_cfg": _open_clip().get_model_config(arch), "preprocess_cfg": {}}
    (directory / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.save(model.state_dict(), directory / "open_clip_pytorch_model.bin")


class OpenClipViT(VisionExpert, BlockwiseViT):
    """CLIP ViT image tower; index 0 is the embeddings after ln_pre, k the output of residual
    block k."""

    min_index = 0
    prefix_tokens = 1
    presets = {
        "large-336": Preset("ViT-L-14-336", 336),
        "large-224": Preset("ViT-L-14", 224),
        "base-224": Preset("ViT-B-16", 224),
        "tiny": Preset("ablate-tiny-vit", 64),
    }

    @classmethod
    def pixel_recipe(cls, config: ExpertConfig) -> PixelRecipe:
        return open_clip_recipe(pick(config.id, cls.presets, config.preset).arch,
                                config.pretrained)

    def __init__(self, config: ExpertConfig):
        preset = pick(config.id, self.presets, config.preset)
        resolution = config.resolution or preset.resolution
        vision_cfg = _open_clip().get_model_config(preset.arch)["vision_cfg"]
        narrowed = None
        if config.stand_in is not None:   # the preset's depth and patch at a small width
            s = config.stand_in
            resolution = config.resolution or s.resolution
            # built at the side it runs at: a vision_cfg replaces open_clip's force_image_size,
            # and a random-init table has nothing to interpolate
            narrowed = {**vision_cfg, "width": s.width, "head_width": 16,
                        "image_size": resolution}
        self.patch = vision_cfg["patch_size"]
        check_divisible(config.id, resolution, self.patch)
        self._depth = vision_cfg["layers"]
        super().__init__(config, resolution)
        self.model = create_open_clip(preset.arch, config.pretrained, resolution, narrowed)
        self.width = self.model.transformer.width
        self._depth = len(self.model.transformer.resblocks)

    @property
    def depth(self) -> int:
        return self._depth

    def layer_channels(self, index: int) -> int:
        return self.width

    def layer_grid(self, index: int) -> tuple[int, int]:
        side = self.resolution // self.patch
        return side, side

    def set_activation_checkpointing(self, enabled: bool) -> None:
        # open_clip's switch covers its own Transformer.forward; this tower runs block by
        # block (blockwise_maps), which checkpoints each block itself
        self.model.set_grad_checkpointing(enabled)
        self.checkpoint_blocks = enabled

    def checkpoint_units(self) -> list[torch.nn.Module]:
        return list(self.model.transformer.resblocks)

    def embed(self, pixels):
        vit = self.model
        x = vit.conv1(pixels).flatten(2).transpose(1, 2)           # [B, H*W, C]
        cls = vit.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + vit.positional_embedding.to(x.dtype)
        return vit.ln_pre(vit.patch_dropout(x))

    def block(self, index, tokens):
        return self.model.transformer.resblocks[index - 1](tokens)

    def _maps(self, pixels):
        return self.blockwise_maps(pixels, self.layers)


class OpenClipConvNeXt(ConvNeXtExpert):
    """CLIP-ConvNeXt image tower (a timm trunk inside open_clip); index k = stage k."""

    presets = {
        "xxlarge-1024": Preset("convnext_xxlarge", 1024),
        "large-320": Preset("convnext_large_d_320", 320),
        "tiny": Preset("ablate-tiny-convnext", 64),
    }

    @classmethod
    def pixel_recipe(cls, config: ExpertConfig) -> PixelRecipe:
        # a stand-in keeps its preset's pixels: it rehearses that checkpoint's data path
        return open_clip_recipe(pick(config.id, cls.presets, config.preset).arch,
                                config.pretrained)

    def __init__(self, config: ExpertConfig):
        preset = pick(config.id, self.presets, config.preset)
        if config.stand_in is not None:   # four stages and stride 32 kept, at the tiny widths
            preset = Preset(self.presets["tiny"].arch, config.stand_in.resolution)
        super().__init__(config, config.resolution or preset.resolution)
        self.model = create_open_clip(preset.arch, config.pretrained, self.resolution)

    @property
    def trunk(self):
        return self.model.trunk
