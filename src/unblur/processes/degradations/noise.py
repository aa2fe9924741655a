"""Additive Gaussian noise: the Gaussian ("hot") case under the cold trainer and samplers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...types import Generator
from ...utils import append_dims, randn
from .base import Degradation


@dataclass(frozen=True, kw_only=True)
class Noise(Degradation):
    """x_t = x0 + sigma(t) z, z ~ N(0, I), sigma(t) = sigma_max t. The cold samplers, which
    re-degrade with z = (x_s - x0_hat) / sigma(s), then reduce to DDIM (Bansal et al. 2022, sec. 5).
    The restorer uses EDM's coefficients at sigma(t) (Karras et al. 2022, Table 1)."""

    name = "noise"
    options = {"sigma_max": "noise_sigma_max"}
    stochastic = True
    layer_linear = True
    can_generate = True
    level_estimable = False
    prediction = "edm"

    sigma_max: float = 1.0  # standard deviation at t = 1

    def check(self) -> None:
        if not self.sigma_max > 0:
            raise self.bad_option("sigma_max", "a positive standard deviation")

    def sigma(self, t: Tensor) -> Tensor:
        """The noise standard deviation sigma(t) = sigma_max t."""
        return self.sigma_max * t

    def precond_sigma(self, t: Tensor) -> Tensor:
        return self.sigma(t)

    def draw_layer(self, x0: Tensor, generator: Generator = None) -> Tensor:
        """z ~ N(0, I) shaped like x0."""
        return randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)

    def layer_of(self, x_t: Tensor, x0_hat: Tensor, t: Tensor) -> Tensor:
        """z = (x_t - x0) / sigma(t)."""
        tt = append_dims(t, x_t.ndim).to(x_t.dtype)
        return (x_t - x0_hat) / self.sigma(tt).clamp(min=1e-12)

    def degrade(self, x0: Tensor, t: Tensor, layer: Tensor | None = None) -> Tensor:
        return x0.to(t.dtype) + append_dims(self.sigma(t), x0.ndim) * layer.to(t.dtype)

    def start(self, shape: tuple[int, ...], generator: Generator = None, *, device: Any = None,
              dtype: torch.dtype = torch.float32, stats: dict | None = None,
              start_noise: float | None = None) -> Tensor:
        """x_1 ~ N(0, sigma_max^2 I)."""
        return self.sigma_max * randn(shape, generator=generator, device=device, dtype=dtype)
