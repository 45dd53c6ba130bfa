"""Vision-to-language projectors (LLaVA's `linear` and `mlp{N}x_gelu`); the input width is the
fusion's declared channel count, the output width the LM's hidden size."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from core.registry import Registry

PROJECTORS: Registry[Callable[[int, int], nn.Module]] = Registry("projector")


@PROJECTORS.register("linear", "one linear layer (LLaVA-1)")
def linear(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Linear(in_dim, out_dim)


def _mlp(depth: int) -> Callable[[int, int], nn.Module]:
    def build(in_dim: int, out_dim: int) -> nn.Module:
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        return nn.Sequential(*layers)
    return build


for _depth in (1, 2, 3, 4):
    PROJECTORS.register(f"mlp{_depth}x_gelu", f"{_depth} linear layers with GELU between "
                        f"(LLaVA-1.5 uses mlp2x_gelu)")(_mlp(_depth))


def build_projector(projector_id: str, in_dim: int, out_dim: int) -> nn.Module:
    return PROJECTORS.get(projector_id)(in_dim, out_dim)
