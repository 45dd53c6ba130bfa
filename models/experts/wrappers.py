"""Named paper wrappers: what a paper's released encoder code changes on top of the library
model an expert family loads (its input normalization, a replaced head, which tokens enter
the blocks). An expert config names one with `wrapper:`; each wrapper lists the families it
has a version for, so a family it does not cover fails with the allowed ones."""
from __future__ import annotations

from core.registry import Registry
from models.experts.base import ExpertConfig
from models.experts.eagle_wrappers import EagleCLIP, EagleReleasedCLIP, EagleSAM

# wrapper name -> {expert family id: the class that runs that family under the wrapper}
WRAPPERS: Registry[dict[str, type]] = Registry("expert wrapper")

WRAPPERS.register("eagle", "NVlabs/EAGLE's wrappers, as the paper runs them (CLIP at 448)")(
    {"sam": EagleSAM, "clip-vit-hf": EagleCLIP})
WRAPPERS.register("eagle-released", "NVlabs/EAGLE's released mixture (CLIP at 336)")(
    {"clip-vit-hf": EagleReleasedCLIP})


def wrapper_families(name: str) -> list[str]:
    return sorted(WRAPPERS.get(name))


def wrapped_class(config: ExpertConfig) -> type | None:
    """The class that runs `config` under its wrapper; None when it names none. An unknown
    wrapper, or one without a version for the family, raises with the allowed values."""
    if config.wrapper is None:
        return None
    families = WRAPPERS.get(config.wrapper)
    if config.id not in families:
        raise ValueError(f"expert '{config.key}': wrapper '{config.wrapper}' has no version for "
                         f"expert id '{config.id}'; it covers: {', '.join(sorted(families))}")
    return families[config.id]
