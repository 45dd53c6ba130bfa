"""Experts loaded through Hugging Face transformers: CLIPVisionModel, SigLIP, DINOv2, SAM's
image encoder and Pix2Struct's encoder.

`pretrained` is anything `from_pretrained` takes (hub id or a local `save_pretrained`
directory); without it the preset's config builds a random-init model by the same class.
Full-size presets carry the published architecture numbers so shapes can be checked (and
models built on the meta device) without the hub."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    Pix2StructVisionConfig,
    Pix2StructVisionModel,
    SamVisionConfig,
    SamVisionModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from models.checkpointing import hf_checkpoint_units, set_hf_checkpointing
from models.experts.base import BlockwiseViT, ExpertConfig, StandIn, VisionExpert
from models.experts.pixels import PixelRecipe, hf_recipe
from models.experts.presets import check_divisible, pick


def _tiny_vit(**extra) -> dict:
    return dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, image_size=64,
                patch_size=8, **extra)


class HFExpert(VisionExpert):
    """Shared construction: from_pretrained when given, else the preset config."""

    model_cls: type
    config_cls: type
    presets: dict[str, dict]
    min_index = 0
    drops_remainder = False

    def __init__(self, config: ExpertConfig):
        preset = pick(config.id, self.presets, config.preset)
        if config.stand_in is not None:
            preset = self.narrowed(dict(preset), config.stand_in)
        if config.pretrained:
            model = self.model_cls.from_pretrained(config.pretrained)
        else:
            model = self.model_cls(self.config_cls(**preset))
        self.hf_config = model.config
        resolution = config.resolution or self.native_resolution()
        check_divisible(config.id, resolution, self.patch_size(), self.drops_remainder)
        super().__init__(config, resolution)
        self.model = model
        self.adapt_resolution()

    @classmethod
    def pixel_recipe(cls, config: ExpertConfig) -> PixelRecipe:
        """The parameters of the image processor published with the checkpoint (SAM's:
        longest side to the input, bilinear, zero-padded bottom-right, ImageNet mean/std)."""
        return hf_recipe(cls.model_cls.__name__, config.pretrained)

    def native_resolution(self) -> int:
        return self.hf_config.image_size

    def patch_size(self) -> int:
        return self.hf_config.patch_size

    @classmethod
    def narrowed(cls, preset: dict, stand_in: StandIn) -> dict:
        """The preset's config at the stand-in's width and native side, depth and patch
        kept."""
        out = {**preset, "hidden_size": stand_in.width,
               "num_attention_heads": stand_in.heads, "image_size": stand_in.resolution}
        for wide in ("intermediate_size", "mlp_dim", "d_ff"):
            if wide in out:
                out[wide] = 2 * stand_in.width
        if "projection_dim" in out:
            out["projection_dim"] = stand_in.width
        return out

    def adapt_resolution(self) -> None:
        """Hook for families whose position embeddings must be resized at build time."""

    @property
    def depth(self) -> int:
        return self.hf_config.num_hidden_layers

    def layer_channels(self, index: int) -> int:
        return self.hf_config.hidden_size

    def layer_grid(self, index: int) -> tuple[int, int]:
        side = self.resolution // self.patch_size()
        return side, side

    def set_activation_checkpointing(self, enabled: bool) -> None:
        # transformers' layers checkpoint themselves when called in training mode, so the
        # blockwise path (layer by layer) is covered by the same switch
        set_hf_checkpointing(self.model, enabled)

    def checkpoint_units(self) -> list[torch.nn.Module]:
        return hf_checkpoint_units(self.model)


class HFViT(HFExpert):
    """ViT-style encoders whose hidden states are [B, prefix + H*W, C]."""

    prefix_tokens = 1
    interpolate_arg = True

    def _interpolate(self) -> dict:
        """The position-embedding interpolation argument, for families that take one."""
        if self.interpolate_arg and self.resolution != self.native_resolution():
            return {"interpolate_pos_encoding": True}
        return {}

    def _maps(self, pixels):
        out = self.model(pixel_values=pixels, output_hidden_states=True, **self._interpolate())
        h, w = self.layer_grid(0)
        maps = {}
        for i in self.layers:
            tokens = out.hidden_states[i][:, self.prefix_tokens:]
            maps[i] = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
        return maps


class HFBlockwise(HFViT, BlockwiseViT):
    """CLIP and SigLIP towers: embeddings, an optional pre-norm, then a list of encoder layers
    that each take (hidden_states, attention_mask)."""

    @property
    def _tower(self):
        # transformers 5 flattened the tower into the model; 4.x nests it as `vision_model`
        return getattr(self.model, "vision_model", self.model)

    def embed(self, pixels):
        vision = self._tower
        x = vision.embeddings(pixels, **self._interpolate())
        pre_norm = getattr(vision, "pre_layrnorm", None)
        return pre_norm(x) if pre_norm is not None else x

    def block(self, index, tokens):
        return self._tower.encoder.layers[index - 1](tokens, None)


class HFCLIP(HFBlockwise):
    """CLIP ViT through transformers' CLIPVisionModel (index 0 = embeddings after pre-LN)."""
    model_cls, config_cls = CLIPVisionModel, CLIPVisionConfig
    presets = {
        "large-336": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                          num_attention_heads=16, image_size=336, patch_size=14,
                          projection_dim=768),
        "tiny": _tiny_vit(intermediate_size=128, projection_dim=32),
    }


class HFSigLIP(HFBlockwise):
    """SigLIP vision tower (no class token). so400m/384 floors 384/14: a 27x27 grid over the
    top-left 378 px, as the released model does; the grid declared here says so."""
    model_cls, config_cls = SiglipVisionModel, SiglipVisionConfig
    prefix_tokens = 0
    drops_remainder = True
    presets = {
        "so400m-384": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                           num_attention_heads=16, image_size=384, patch_size=14),
        "tiny": _tiny_vit(intermediate_size=128),
    }


class HFDINOv2(HFViT):
    """DINOv2 (interpolates its position embeddings for any resolution by itself)."""
    model_cls, config_cls = Dinov2Model, Dinov2Config
    interpolate_arg = False
    presets = {
        "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                      image_size=518, patch_size=14, mlp_ratio=4),
        "tiny": _tiny_vit(mlp_ratio=2),
    }


class HFSAM(HFExpert):
    """SAM's ViT image encoder. Hidden states: 0 = patch embedding, 1..L blocks (width C),
    L+1 = the neck (256 channels for SAM-L/H), which is what Eagle uses."""
    model_cls, config_cls = SamVisionModel, SamVisionConfig
    presets = {
        "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                      global_attn_indexes=[5, 11, 17, 23], mlp_dim=4096, image_size=1024,
                      patch_size=16, window_size=14, output_channels=256),
        "huge": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
                     global_attn_indexes=[7, 15, 23, 31], mlp_dim=5120, image_size=1024,
                     patch_size=16, window_size=14, output_channels=256),
        "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     global_attn_indexes=[1], mlp_dim=128, image_size=64, patch_size=8,
                     window_size=4, output_channels=32),
    }

    @classmethod
    def narrowed(cls, preset: dict, stand_in: StandIn) -> dict:
        # the attention windows keep their share of the token grid
        out = super().narrowed(preset, stand_in)
        grid, old_grid = (stand_in.resolution // preset["patch_size"],
                          preset["image_size"] // preset["patch_size"])
        out["window_size"] = max(2, round(preset["window_size"] * grid / old_grid))
        out["output_channels"] = stand_in.width
        return out

    @property
    def depth(self) -> int:
        return self.hf_config.num_hidden_layers + 1

    def layer_channels(self, index: int) -> int:
        return self.hf_config.output_channels if index == self.depth else self.hf_config.hidden_size

    def adapt_resolution(self) -> None:
        # SAM's absolute position embedding is a [1, H, W, C] grid fixed to the trained size;
        # its relative position tables are interpolated by the attention itself.
        side = self.resolution // self.patch_size()
        encoder = self.model.vision_encoder
        pos = encoder.pos_embed
        if pos is not None and pos.shape[1] != side:
            resized = F.interpolate(pos.data.permute(0, 3, 1, 2), size=(side, side),
                                    mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
            encoder.pos_embed = torch.nn.Parameter(resized.contiguous())
        encoder.patch_embed.image_size = (self.resolution, self.resolution)
        self.hf_config.image_size = self.resolution

    def _maps(self, pixels):
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        maps = {}
        for i in self.layers:
            maps[i] = (out.last_hidden_state if i == self.depth
                       else out.hidden_states[i].permute(0, 3, 1, 2))
        return maps


def budget_grid(height: int, width: int, patch: int, max_patches: int) -> tuple[int, int]:
    """The rows x cols of patches Pix2StructImageProcessor resizes an image to: the largest
    grid of the image's aspect within `max_patches` (transformers
    image_processing_pix2struct.py `extract_flattened_patches`: scale, then floor), kept in the
    library's float arithmetic so the count is the library's to the patch."""
    scale = math.sqrt(max_patches * (patch / height) * (patch / width))
    rows = max(min(int(scale * height / patch), max_patches), 1)
    cols = max(min(int(scale * width / patch), max_patches), 1)
    return rows, cols


class HFPix2Struct(HFExpert):
    """Pix2Struct's encoder on variable-resolution flattened patches, as its image processor
    makes them and as Eagle and MoVA read them.

    The data side passes plain [0, 1] pixels at `resolution`. Here, as Pix2StructImageProcessor
    does: per-image standardization on the 0-255 image (mean, std clamped at 1/sqrt(n)), a
    bilinear antialiased resize to the largest patch grid within the processor's budget of
    `max_patches` (2048 by default; 45x45 for a square image), patches laid out as [row id,
    col id, (ph, pw, C) pixels] with 1-based ids, zero-padded to the budget. The feature is
    the encoder's `last_hidden_state` (after its final LayerNorm) over the grid's tokens:
    Eagle takes `last_hidden_state[:, :2025]` (pix2struct_encoder.py:110-112), MoVA
    `last_hidden_state` (mova_encoder.py:335-338) with the processor's budget (:92-95).
    Earlier hidden states (index < depth) are the blocks' outputs, before that LayerNorm."""
    model_cls, config_cls = Pix2StructVisionModel, Pix2StructVisionConfig
    drops_remainder = True   # any side: the processor resizes to its patch grid
    # the processor's budget is half the model's seq_len (2048 of 4096) for the released sizes
    presets = {
        "large": dict(hidden_size=1536, num_hidden_layers=18, num_attention_heads=24,
                      d_ff=3968, d_kv=64, patch_embed_hidden_size=768, seq_len=4096,
                      max_patches=2048),
        "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, d_ff=2048,
                     d_kv=64, patch_embed_hidden_size=768, seq_len=4096, max_patches=2048),
        "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, d_ff=128,
                     d_kv=32, patch_embed_hidden_size=192, seq_len=64, max_patches=32),
    }

    @classmethod
    def pixel_recipe(cls, config: ExpertConfig) -> PixelRecipe:
        # plain [0, 1] pixels at the input side: the processor's standardization and its
        # resize to the patch budget happen in the expert (above), as its processor does them
        return PixelRecipe((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "stretch",
                           source="ours: Pix2Struct standardizes and resizes in the expert")

    def __init__(self, config: ExpertConfig):
        preset = pick(config.id, self.presets, config.preset)
        # the processor's budget is not part of the model's config (from_pretrained keeps it)
        self.presets = {**self.presets, config.preset: {
            k: v for k, v in preset.items() if k != "max_patches"}}
        # a stand-in's native side is the one asked for, not its patch table's floor to 16 px
        self._stand_in_side = config.stand_in.resolution if config.stand_in else None
        super().__init__(config)
        self.max_patches = preset["max_patches"]
        if config.stand_in is not None:
            self.max_patches = self._stand_in_budget(preset)

    def _stand_in_budget(self, preset: dict) -> int:
        """A stand-in keeps the published pixels per grid cell: the published model's native
        side over its budget grid (1024 // 45 = 22 px), so the rehearsal's geometry holds;
        g*g + g patches floor to a g x g grid whatever the float rounding."""
        patch = math.isqrt(preset["patch_embed_hidden_size"] // 3)
        native = patch * math.isqrt(preset["seq_len"])
        cell = native // budget_grid(native, native, patch, preset["max_patches"])[0]
        g = max(1, self.resolution // cell)
        return g * g + g

    def native_resolution(self) -> int:
        return self._stand_in_side or self.patch_size() * math.isqrt(self.hf_config.seq_len)

    @classmethod
    def narrowed(cls, preset: dict, stand_in: StandIn) -> dict:
        # Pix2Struct's native side is its patch table: seq_len patches of 16 px
        out = super().narrowed(preset, stand_in)
        out.pop("image_size")
        patch = math.isqrt(preset["patch_embed_hidden_size"] // 3)
        out.update(d_kv=16, seq_len=(stand_in.resolution // patch) ** 2)
        return out

    def patch_size(self) -> int:
        return math.isqrt(self.hf_config.patch_embed_hidden_size // 3)

    def layer_grid(self, index: int) -> tuple[int, int]:
        return budget_grid(self.resolution, self.resolution, self.patch_size(), self.max_patches)

    def flattened_patches(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[b, 3, H, W] in [0, 1] -> (patches [b, max_patches, 2 + p*p*3], attention mask)."""
        b, c, height, width = pixels.shape
        p = self.patch_size()
        image = pixels.float() * 255   # the processor standardizes the 0-255 image
        flat = image.reshape(b, -1)
        mean = flat.mean(1).view(b, 1, 1, 1)
        std = flat.std(1).clamp_min(1.0 / math.sqrt(flat.shape[1])).view(b, 1, 1, 1)
        image = (image - mean) / std
        rows, cols = budget_grid(height, width, p, self.max_patches)
        image = F.interpolate(image, size=(rows * p, cols * p), mode="bilinear",
                              align_corners=False, antialias=True)
        patches = F.unfold(image, (p, p), stride=(p, p))              # [b, c*p*p, rows*cols]
        patches = patches.reshape(b, c, p, p, rows * cols).permute(0, 4, 2, 3, 1)
        patches = patches.reshape(b, rows * cols, p * p * c)
        ids = torch.arange(rows * cols, device=pixels.device)
        row_ids = (ids // cols + 1).to(image.dtype).view(1, -1, 1).expand(b, -1, 1)
        col_ids = (ids % cols + 1).to(image.dtype).view(1, -1, 1).expand(b, -1, 1)
        patches = torch.cat([row_ids, col_ids, patches], dim=-1)
        pad = self.max_patches - rows * cols
        mask = torch.ones(b, rows * cols, device=pixels.device, dtype=pixels.dtype)
        return (F.pad(patches, (0, 0, 0, pad)).to(pixels.dtype), F.pad(mask, (0, pad)))

    def _maps(self, pixels):
        patches, mask = self.flattened_patches(pixels)
        out = self.model(flattened_patches=patches, attention_mask=mask,
                         output_hidden_states=True)
        h, w = self.layer_grid(0)
        maps = {}
        for i in self.layers:
            tokens = out.last_hidden_state if i == self.depth else out.hidden_states[i]
            maps[i] = tokens[:, :h * w].transpose(1, 2).reshape(pixels.shape[0], -1, h, w)
        return maps
