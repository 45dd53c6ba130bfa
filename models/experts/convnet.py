"""Geometry shared by ConvNeXt experts, whichever library wraps them: both timm's ConvNeXt and
open_clip's CLIP-ConvNeXt are a timm trunk with four stages described by `feature_info`.
Hidden-state index k is the output of stage k (1..4)."""
from __future__ import annotations

from abc import abstractmethod

from torch import nn

from models.experts.base import ExpertConfig, VisionExpert
from models.experts.presets import check_divisible

STAGES = 4
STRIDE = 32  # the last stage's reduction: the input must tile into it


class ConvNeXtExpert(VisionExpert):
    def __init__(self, config: ExpertConfig, resolution: int):
        check_divisible(config.id, resolution, STRIDE)
        super().__init__(config, resolution)

    @property
    @abstractmethod
    def trunk(self) -> nn.Module:
        """The timm ConvNeXt whose `feature_info` describes the four stages."""

    def _stage(self, index: int) -> dict:
        return self.trunk.feature_info[index - 1]

    @property
    def depth(self) -> int:
        return STAGES

    def layer_channels(self, index: int) -> int:
        return self._stage(index)["num_chs"]

    def layer_grid(self, index: int) -> tuple[int, int]:
        side = self.resolution // self._stage(index)["reduction"]
        return side, side

    def set_activation_checkpointing(self, enabled: bool) -> None:
        self.trunk.set_grad_checkpointing(enabled)   # timm: each stage's blocks, non-reentrant

    def checkpoint_units(self) -> list[nn.Module]:
        return [block for stage in self.trunk.stages for block in stage.blocks]

    def _maps(self, pixels):
        out = self.trunk.forward_intermediates(pixels, indices=[i - 1 for i in self.layers],
                                               intermediates_only=True)
        return dict(zip(self.layers, out))
