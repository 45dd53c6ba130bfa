"""The model's typed config: its experts, its fusion (an id and that fusion's typed options),
projector, LLM and sequence length; what models.builder builds a multimodal model from, with
no run around it. `solo_config` is the one-expert model a per-expert stage trains."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from core.fields import ranged
from core.identity import to_plain
from core.registry import ChoiceRegistry
from models.experts import ExpertConfig
from models.fusion import FUSIONS
from models.fusion.concat import SequenceAppendOptions
from models.llm import LLMConfig


@dataclass(frozen=True)
class FusionSpec:
    """`id` picks the fusion; the other fields of its YAML mapping are that fusion's typed
    Options (`choices` says which type each id takes), so what is allowed depends on the id.
    None options: the fusion's defaults."""
    choices: ClassVar[ChoiceRegistry] = FUSIONS
    id: str
    options: Any = None


@dataclass(frozen=True)
class ModelConfig:
    experts: list[ExpertConfig] = ranged(min_items=1)
    fusion: FusionSpec
    projector: str = "mlp2x_gelu"
    llm: LLMConfig = field(default_factory=LLMConfig)
    max_length: int = ranged(512, ge=2)

    def to_dict(self) -> dict:
        """The plain form, the fusion's options beside its id as they are written."""
        out = to_plain(self)
        out["fusion"] = {"id": self.fusion.id, **to_plain(self.fusion.options)}
        return out


def solo_config(model: ModelConfig, expert: ExpertConfig) -> ModelConfig:
    """The model a per-expert stage trains: this expert alone (trainable whatever its `freeze`)
    behind a plain token sequence and a projector of the combined model's kind, on the same
    LLM. Depends on nothing else in `model`, so its stages are shared by every combination
    that contains the expert."""
    return ModelConfig(experts=[dataclasses.replace(expert, freeze=False)],
                       fusion=FusionSpec("sequence_append", SequenceAppendOptions()),
                       projector=model.projector, llm=model.llm, max_length=model.max_length)
