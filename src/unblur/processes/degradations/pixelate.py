"""Pixelation: area down-sampling to a grid that shrinks geometrically with t, nearest up-sampling."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Degradation


@dataclass(frozen=True, kw_only=True)
class Pixelate(Degradation):
    """x_t = U(A(x0, g(t))): the mean over each cell of a grid whose longer side shrinks
    geometrically from the image's side n to ``min_side`` at t = 1, g(t) = n (min_side / n)^t,
    then nearest up-sampling (Bansal et al. 2022, "super-resolution")."""

    name = "pixelate"
    options = {"min_side": "pixelate_min"}

    min_side: int = 1  # side of the coarsest grid at t = 1, pixels

    def check(self) -> None:
        if not self.min_side >= 1:
            raise self.bad_option("min_side", "an integer >= 1")

    def pixel_grid(self, t: Tensor, size: tuple[int, int]) -> list[tuple[int, int]]:
        """The (h, w) grid each sample is pixelated to at level t (B,)."""
        H, W = size
        side = max(H, W)
        lo = min(self.min_side, side)
        out = []
        for tv in t.tolist():
            f = side * (lo / side) ** tv / side  # the grid's side over the image's, geometric from 1 to lo / side
            out.append((max(1, min(H, round(H * f))), max(1, min(W, round(W * f)))))
        return out

    def degrade(self, x0: Tensor, t: Tensor, layer: Tensor | None = None) -> Tensor:
        _, _, H, W = x0.shape
        grids = self.pixel_grid(t, (H, W))
        out = torch.empty_like(x0)
        for hw in set(grids):  # the images sharing a grid together
            idx = [i for i, g in enumerate(grids) if g == hw]
            small = F.adaptive_avg_pool2d(x0[idx].float(), hw)  # (b, C, h, w)
            out[idx] = F.interpolate(small, size=(H, W), mode="nearest").to(x0.dtype)
        return out
