"""Desaturation: colour fades linearly to its grey (luma) image."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...utils import append_dims
from .base import Degradation


@dataclass(frozen=True, kw_only=True)
class Desaturate(Degradation):
    """x_t = (1 - t) x0 + t grey(x0), grey = the ITU-R 601 luma 0.299 R + 0.587 G + 0.114 B in
    every channel (the channel mean for other channel counts)."""

    name = "desaturate"

    def check_shape(self, shape: tuple[int, ...], *, for_model: bool) -> None:
        if for_model and shape[0] != 3:
            raise ValueError(f"desaturate fades colour towards grey, but the data has {shape[0]} channel(s): train "
                             "it on RGB images (--set data.channels=3 makes grey images RGB, which leaves nothing "
                             "to restore)")

    def degrade(self, x0: Tensor, t: Tensor, layer: Tensor | None = None) -> Tensor:
        x = x0.to(t.dtype)
        if x.shape[1] == 3:
            luma = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
            grey = (x * luma[None, :, None, None]).sum(1, keepdim=True).expand_as(x)
        else:
            grey = x.mean(1, keepdim=True).expand_as(x)
        tt = append_dims(t, x.ndim)
        return (1 - tt) * x + tt * grey
