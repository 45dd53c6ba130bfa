"""Shared helpers for presets: a named architecture plus its native resolution, and a clear
error when a config names a preset the family does not have."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    arch: str                     # backend architecture name (open_clip / timm model name)
    resolution: int               # native input side in pixels
    kwargs: dict[str, Any] = field(default_factory=dict)  # backend constructor overrides


def pick(family: str, presets: dict[str, Any], name: str) -> Any:
    if name not in presets:
        close = difflib.get_close_matches(name, list(presets), n=2, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"expert '{family}' has no preset '{name}'.{hint} "
                         f"Allowed presets: {', '.join(presets)}")
    return presets[name]


def check_divisible(family: str, resolution: int, patch: int, drops_remainder: bool = False
                    ) -> None:
    """A patch/stride grid must tile the image. Families whose released checkpoints floor the
    grid (SigLIP-so400m/384: 27 patches of 14 px = 378 px used) pass drops_remainder."""
    if resolution < patch or (resolution % patch and not drops_remainder):
        raise ValueError(f"expert '{family}' cannot take resolution {resolution}: it must be a "
                         f"positive multiple of its patch/stride size {patch}")
