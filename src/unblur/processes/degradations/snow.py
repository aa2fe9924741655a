"""Snow: alpha compositing of a seeded procedural snow layer whose flakes appear as t grows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ...types import Generator
from ...utils import append_dims, rand
from .base import Degradation
from .blur import blur, blur_matrix


@dataclass(frozen=True, kw_only=True)
class Snow(Degradation):
    """x_t = x0 (1 - a_t) + 1 a_t, a_t the opacity of flakes seeded where the layer's uniform
    value u < density t, each a Gaussian blob of radius ``flake`` pixels (Bansal et al. 2022,
    "snowification"). The layer u (B, 1, H, W) comes from the generator, or from ``seed`` (one
    layer for every image) without one."""

    name = "snow"
    options = {"density": "snow_density", "flake": "snow_flake", "seed": "cold_seed"}
    stochastic = True

    density: float = 0.08  # fraction of pixels seeding a flake at t = 1
    flake: float = 0.7  # flake radius (Gaussian width), pixels
    seed: int = 0  # the fixed seed of the layer without a generator

    def check(self) -> None:
        if not 0 < self.density <= 1:
            raise self.bad_option("density", "in (0, 1] (a fraction of the pixels)")
        if not self.flake > 0:
            raise self.bad_option("flake", "a positive radius in pixels")

    def draw_layer(self, x0: Tensor, generator: Generator = None) -> Tensor:
        """Uniform values (B, 1, H, W): from ``generator``, or the seed's one layer for every image."""
        B, _, H, W = x0.shape
        if generator is None:
            g = torch.Generator().manual_seed(self.seed)
            return rand((1, 1, H, W), generator=g, device=x0.device).expand(B, -1, -1, -1)
        return rand((B, 1, H, W), generator=generator, device=x0.device, dtype=torch.float32)

    def alpha(self, layer: Tensor, t: Tensor) -> Tensor:
        """Snow opacity a_t (B, 1, H, W) in [0, 1] from the layer at levels t (B,), reflect padding."""
        seeds = (layer.to(t.dtype) < self.density * append_dims(t, 4)).to(t.dtype)  # (B, 1, H, W)
        width = torch.full_like(t, self.flake)
        n = 1 + 2 * math.ceil(4 * self.flake)
        peak = float(blur_matrix(width[:1], n)[0, n // 2, n // 2]) ** 2  # a lone flake's centre
        return (blur(seeds, width) / peak).clamp(0, 1)

    def degrade(self, x0: Tensor, t: Tensor, layer: Tensor | None = None) -> Tensor:
        a = self.alpha(layer, t)
        return x0.to(a.dtype) * (1 - a) + 1.0 * a
