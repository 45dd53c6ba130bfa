"""How a spec's feature grids shrink for its rehearsal, so that its relations still hold.

Every expert of a spec has a grid (its input side over its patch or stride), a native grid
(the side its position embeddings were made for) and, when tiled, tile grids that stitch into
a larger one; fusions name grids too (channel concatenation's common grid, MoVA's expert
grid, Efficient Dense Connector's output grid: each option field marked
`core.fields.grid_side`). The rehearsal maps every such side q to
max(2, round(q / f)) with one factor f for the whole spec, the smallest f that keeps its
largest grid within TARGET, raised until the map keeps what the spec's design depends on:
  - order: q1 < q2 stays strictly smaller, so an interpolated expert stays interpolated (grid
    != native), a map that was resampled onto a smaller grid still is, and 448 px keeps more
    tokens than 336 px;
  - divisibility: q1 a multiple of q2 stays one, so pixel-unshuffle and average pooling
    still fold an integer neighbourhood;
  - tiling: rows x the tile grid is still the stitched grid.
Each pixel side is then the scaled grid times the expert's own patch or stride."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from core.fields import grid_sides
from models.experts import ExpertConfig, build_expert

TARGET = 8          # the largest grid side of a rehearsal, where the spec allows
MIN_SIDE = 2


@dataclass(frozen=True)
class ExpertGeometry:
    """One expert as configured: pixels per grid cell, its grid, its native grid, tiling."""
    reduction: int
    grid: int           # one tile's grid when tiled
    native_grid: int
    rows: int = 1
    cols: int = 1


def measure(cfg: ExpertConfig) -> ExpertGeometry:
    """Built on the meta device (no weights): as configured, and at its native side."""
    with torch.device("meta"):
        configured = build_expert(dataclasses.replace(cfg, pretrained=None, stand_in=None))
        native = build_expert(dataclasses.replace(cfg, pretrained=None, stand_in=None,
                                                  resolution=None, tiling=None))
    deepest = max(configured.layers)
    grid = configured.layer_grid(deepest)[0]
    reduction = configured.resolution // grid
    tiling = cfg.tiling
    # the native grid as the expert declares it: side // reduction for a patch or stride grid,
    # the patch budget's grid for Pix2Struct (1024 px -> 45x45, where 1024 // 22 is 46)
    return ExpertGeometry(reduction, grid, native.layer_grid(deepest)[0],
                          tiling.rows if tiling else 1, tiling.cols if tiling else 1)


class GridScale:
    """q -> its rehearsal side, for the sides it was built from (and any other side)."""

    def __init__(self, sides: Iterable[int], tiles: Iterable[tuple[int, int]] = ()):
        self.sides = sorted(set(sides))
        tiles = sorted(set(tiles))   # (tile grid, tiles per side)
        if not self.sides:
            raise ValueError("no grid to scale")
        top = self.sides[-1]
        for target in range(TARGET, max(TARGET, top) + 1):
            self.factor = top / target
            if self._holds(tiles):
                return
        self.factor = 1.0   # the spec's own geometry: always consistent

    def __call__(self, side: int) -> int:
        return max(MIN_SIDE, round(side / self.factor)) if self.factor > 1 else side

    def _holds(self, tiles: list[tuple[int, int]]) -> bool:
        for i, a in enumerate(self.sides):
            for b in self.sides[i + 1:]:
                if self(a) >= self(b) or (b % a == 0 and self(b) % self(a)):
                    return False
        return all(self(t) * n == self(t * n) for t, n in tiles)

    def describe(self) -> str:
        return ", ".join(f"{q}->{self(q)}" for q in self.sides)


def spec_scale(experts: Iterable[ExpertConfig], fusion_options: Iterable) -> tuple[
        GridScale, dict[str, ExpertGeometry]]:
    """One scale for every expert and fusion grid a spec uses, and each expert's geometry
    (keyed by repr of its config)."""
    geometry = {key: measure(cfg) for key, cfg in {repr(c): c for c in experts}.items()}
    sides, tiles = set(), set()
    for g in geometry.values():
        sides |= {g.grid, g.native_grid, g.grid * g.rows, g.grid * g.cols}
        tiles |= {(g.grid, g.rows), (g.grid, g.cols)} - {(g.grid, 1)}
    for options in fusion_options:
        sides |= set(grid_sides(options).values())   # the option fields marked grid_side
    for t, n in tiles:
        sides.add(t * n)
    return GridScale(sides, tiles), geometry
