"""Blending with the images of a second data set ("animorphosis")."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...types import Generator
from ...utils import append_dims, rand
from .base import Degradation


@dataclass(frozen=True, kw_only=True)
class Blend(Degradation):
    """x_t = (1 - t) x0 + t y, y a random image of a second data set (Bansal et al. 2022,
    "animorphosis"); the layer is y, drawn from ``others`` (N2, C, H, W)."""

    name = "blend"
    options = {"data": "blend_data"}
    stochastic = True
    layer_linear = True
    can_generate = True
    level_estimable = False
    partner_data = "blend_data"

    data: str | None = None  # where ``others`` come from (folder | FILE.npy | builtin:NAME)
    others: Tensor | None = dataclasses.field(default=None, repr=False, compare=False)  # (N2, C, H, W)

    def check(self) -> None:
        if self.data is None and self.others is None:
            raise ValueError("the blend process mixes each image with an image of a second data set: pass "
                             "--blend-data D2 (or --set process.blend_data=D2) with a folder, .npy or builtin set")

    def draw_layer(self, x0: Tensor, generator: Generator = None) -> Tensor:
        """A random partner image y (B, C, H, W) per image, from ``generator``."""
        B, C, H, W = x0.shape
        if self.others is None:
            raise ValueError(f"the blend images of process.blend_data={self.data!r} are not loaded: build the "
                             "process with its images (others=)")
        if tuple(self.others.shape[1:]) != (C, H, W):
            raise ValueError(f"the blend data holds images of shape {tuple(self.others.shape[1:])}, "
                             f"but the images to degrade have shape {(C, H, W)}")
        u = rand((B,), generator=generator, device=x0.device, dtype=torch.float64)
        i = (u * len(self.others)).floor().long().clamp(max=len(self.others) - 1)
        return self.others.to(x0.device)[i.cpu()].to(x0.dtype)

    def layer_of(self, x_t: Tensor, x0_hat: Tensor, t: Tensor) -> Tensor:
        """y = (x_t - (1 - t) x0) / t."""
        tt = append_dims(t, x_t.ndim).to(x_t.dtype)
        return (x_t - (1 - tt) * x0_hat) / tt.clamp(min=1e-12)

    def degrade(self, x0: Tensor, t: Tensor, layer: Tensor | None = None) -> Tensor:
        tt = append_dims(t, x0.ndim)
        return (1 - tt) * x0.to(t.dtype) + tt * layer.to(t.dtype)

    def start(self, shape: tuple[int, ...], generator: Generator = None, *, device: Any = None,
              dtype: torch.dtype = torch.float32, stats: dict | None = None,
              start_noise: float | None = None) -> Tensor:
        """x_1 = y: a random image of the second set."""
        return self.draw_layer(torch.zeros(shape, device=device, dtype=dtype), generator)
