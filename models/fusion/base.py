"""The Fusion contract: experts' feature maps in, visual tokens [B, T, C] out.

A fusion is built from the declared geometry of its inputs (one FeatureSpec per expert and
layer), so it states T and C before seeing data; the projector width and the LM sequence
length are derived from those. `forward` also receives an optional text context ([B, L, D]
embeddings and mask) for strategies whose gates read the question (MoVA).

Three optional hooks cover strategies that are more than a function of final feature maps:
`requested_layers` (a fusion that reads chosen hidden states, e.g. Dense Connector, asks the
experts for them), `encode` (a fusion that acts between an expert's blocks, e.g. LLaVA-HR's
MR-adapter, drives the experts itself) and `after_projector` (Efficient Dense Connector
downsamples the projected tokens).

A fusion may also ask the LLM something about each sample before the answer (MoVA's LLM
router names the experts): `before_answer` names that pass (the harness looks its steps up by
this id, so generic code never names the fusion), `pass_adapter` is an adapter on the LLM that
is on only during the pass, and `pass_tokens` is what the LLM sees of the image then. What the
pass decided comes back in through `TextContext.given`; `pass_of` names the pass from the
options alone, before any build (spec validation). The defaults: no such pass.

Three class-level hooks serve the harness before anything is built: `complete_options` fills
in what a spec may leave out (MoVA's model cards), so what the fusion reads is in the resolved
config and its key; `text_corpus` is text a locally trained tokenizer must know; and
`rehearsal_files` names the options whose files a rehearsal writes for its own samples. The
class attribute `file_options` names the option fields that are paths to files the fusion reads
(MoVA's routing `labels`): the harness resolves each against the spec that wrote it and pins its
content hash in the option `{name}_sha256`, which a run's key reads instead of the path."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from models.experts.base import ExpertConfig, ExpertOutput, VisionExpert


@dataclass(frozen=True)
class FeatureSpec:
    """One expert layer as the fusion will receive it."""
    expert: str
    layer: int
    channels: int
    grid: tuple[int, int]
    resample: str = "bilinear"          # how to bring it onto a common grid
    thumbnail_grid: tuple[int, int] | None = None


class FusionOptionError(ValueError):
    """A fusion option its experts cannot serve; `option` names the field ("" = the fusion as
    a whole), so the config error points at the line that set it."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


@dataclass
class TextContext:
    embeddings: torch.Tensor   # [B, L, D] LM input embeddings of the prompt (no answer)
    mask: torch.Tensor         # [B, L] 1 for prompt tokens
    sample_ids: list[str] | None = None   # the samples' ids (routing labels are keyed by them)
    # [B, ...] what the fusion's pass before answering decided per sample (MoVA: [B, E] experts)
    given: torch.Tensor | None = None


@dataclass(frozen=True)
class BuildContext:
    """What a fusion may need to know beyond its inputs' geometry."""
    text_width: int | None = None                       # the LM's hidden size
    depths: dict[str, int] = field(default_factory=dict)  # each expert's largest index
    blockwise: frozenset[str] = frozenset()              # experts that run block by block
    read_files: bool = True       # false: planning without the data; option files may be absent


class Fusion(nn.Module, ABC):
    Options: type
    # option fields naming a file the fusion reads; each has a `{name}_sha256` option beside it
    file_options: tuple[str, ...] = ()

    def __init__(self, inputs: list[FeatureSpec]):
        super().__init__()
        if not inputs:
            raise ValueError("a fusion needs at least one expert feature map")
        self.inputs = list(inputs)

    @classmethod
    def requested_layers(cls, options: Any, experts: Mapping[str, VisionExpert]
                         ) -> dict[str, list[int]]:
        """Hidden-state indices this fusion needs from some experts, overriding their
        configured `layers` (raise ValueError on options the experts cannot serve)."""
        return {}

    @property
    def output_tokens(self) -> int:
        """Visual tokens the LM sees (after `after_projector`)."""
        return self.num_tokens

    def after_projector(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    @classmethod
    def pass_of(cls, options: Any) -> str | None:
        """The id of the pass before answering these options ask for; None: none."""
        return None

    @property
    def before_answer(self) -> str | None:
        """The id of the pass the harness runs before answering; None: it answers at once.
        A fusion with a pass returns what `pass_of` says of its options (the contract test of
        tests/test_fusions.py checks the two agree)."""
        return None

    @classmethod
    def complete_options(cls, options: Any, experts: list[ExpertConfig]) -> Any:
        """`options` with what the spec left out filled in (raise FusionOptionError where it
        cannot be)."""
        return options

    @classmethod
    def text_corpus(cls, options: Any) -> list[str]:
        """Text the fusion has the LLM read or say beyond the data."""
        return []

    @classmethod
    def rehearsal_files(cls, options: Any, experts: list[str]) -> dict[str, tuple[str, list[str]]]:
        """option -> (kind of file, the expert names it covers): the options naming files
        (among `file_options`) that a rehearsal writes anew for its own samples
        (harness.rehearsal.generated_data has a writer for each kind); `experts` are the
        model's, in order."""
        return {}

    def pass_adapter(self, llm: nn.Module) -> nn.Module | None:
        """An adapter on `llm`, on only during the pass before answering (it gives
        `active()`, a context manager); None: the pass uses the LLM as it is."""
        return None

    def pass_tokens(self, experts: Mapping[str, VisionExpert],
                    pixels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """[B, N, C] what the LLM sees of the image during the pass before answering (the
        projector then takes them as it takes the fused tokens)."""
        raise NotImplementedError(f"{type(self).__name__} has no pass before answering")

    def encode(self, experts: Mapping[str, VisionExpert], pixels: Mapping[str, torch.Tensor],
               text: TextContext | None = None) -> torch.Tensor:
        """Run the experts and fuse; fusions that act inside an expert override this."""
        return self({name: expert(pixels[name]) for name, expert in experts.items()}, text)

    @property
    @abstractmethod
    def num_tokens(self) -> int: ...

    @property
    @abstractmethod
    def channels(self) -> int: ...

    def fuse(self, maps: list[torch.Tensor], thumbs: list[torch.Tensor | None],
             text: TextContext | None) -> torch.Tensor:
        """maps[i] is [B, C_i, H_i, W_i] for self.inputs[i]; returns [B, T, C]. Fusions that
        act inside an expert override `encode` instead."""
        raise NotImplementedError(f"{type(self).__name__} runs through encode()")

    def forward(self, outputs: dict[str, ExpertOutput], text: TextContext | None = None
                ) -> torch.Tensor:
        maps, thumbs = [], []
        for spec in self.inputs:
            out = outputs[spec.expert]
            maps.append(out.maps[spec.layer])
            thumbs.append(out.thumbnail[spec.layer] if out.thumbnail else None)
        return self.checked(self.fuse(maps, thumbs, text))

    def checked(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1:] != (self.num_tokens, self.channels):
            raise RuntimeError(f"{type(self).__name__} produced {tuple(tokens.shape[1:])}, "
                               f"declared {(self.num_tokens, self.channels)}")
        return tokens

    def added_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
