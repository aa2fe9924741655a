"""Masking: a centre rectangle, seeded random patches, or a Gaussian fade from the border inwards."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...types import Generator
from .base import Degradation, full_level, wide

MASK_KINDS = ("centre", "patches", "fade")


def _coverage(n: int, lo: Tensor, hi: Tensor) -> Tensor:
    """(B, n): the length of pixel [i, i+1] inside [lo, hi] (per sample)."""
    i = torch.arange(n, dtype=lo.dtype, device=lo.device)[None]
    return (torch.minimum(i + 1, hi[:, None]) - torch.maximum(i, lo[:, None])).clamp(0, 1)


@dataclass(frozen=True, kw_only=True)
class Mask(Degradation):
    """x_t = x0 (1 - m_t) + fill m_t, m_t in [0, 1] the masked fraction of each pixel: a centre
    rectangle of t H by t W, patches masked in a seeded random order as t n passes their rank, or
    Bansal et al.'s "defading", visibility exp(-t / (1 - t) (0.1 + r^2 / w^2)) at radius r."""

    name = "mask"
    options = {"pattern": "mask_kind", "fill": "mask_fill", "patch": "mask_patch", "fade_width": "fade_width",
               "seed": "cold_seed"}
    can_generate = True
    inpaints = True  # ``mask`` and ``fill`` describe any mask, so a user's one is filled (``editing.cold``)

    pattern: str = "centre"  # centre | patches | fade
    fill: float = 0.0  # value of masked pixels, in the data range [-1, 1]
    patch: int = 2  # patch side for pattern=patches, pixels
    fade_width: float = 0.5  # the fade's radial width, fraction of the half-diagonal
    seed: int = 0  # the fixed seed of the patch order

    def check(self) -> None:
        self.check_choice("pattern", MASK_KINDS)
        if not self.patch >= 1:
            raise self.bad_option("patch", "an integer >= 1 (pixels)")
        if not self.fade_width > 0:
            raise self.bad_option("fade_width", "positive (a fraction of the half-diagonal)")
        if not math.isfinite(self.fill):
            raise self.bad_option("fill", "a finite value in the data range [-1, 1]")

    def mask(self, t: Tensor, size: tuple[int, int], device: Any = None) -> Tensor:
        """The masked fraction m_t (B, 1, H, W) in [0, 1] at levels t (B,)."""
        H, W = size
        t = t.to(device=device, dtype=wide(device))
        if self.pattern == "centre":
            # A centered rectangle of t * H by t * W; each pixel counts the fraction it covers.
            ch = _coverage(H, (1 - t) * H / 2, (1 + t) * H / 2)  # (B, H)
            cw = _coverage(W, (1 - t) * W / 2, (1 + t) * W / 2)  # (B, W)
            return (ch[:, :, None] * cw[:, None, :])[:, None]
        if self.pattern == "patches":
            p = self.patch
            gh, gw = -(-H // p), -(-W // p)
            n = gh * gw
            rank = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).to(device)  # (n,)
            # Patch of rank r is masked once t * n passes r, partly in between.
            m = (t[:, None] * n - rank[None].to(t.dtype)).clamp(0, 1)  # (B, n)
            m = m.reshape(-1, 1, gh, gw).repeat_interleave(p, 2).repeat_interleave(p, 3)
            return m[..., :H, :W]
        # fade: visibility exp(-t / (1 - t) * (0.1 + r^2 / w^2)), the border first, all at t = 1.
        yy = (torch.arange(H, dtype=t.dtype, device=device) + 0.5 - H / 2) / (H / 2)
        xx = (torch.arange(W, dtype=t.dtype, device=device) + 0.5 - W / 2) / (W / 2)
        r2 = (yy[:, None] ** 2 + xx[None] ** 2) / 2  # squared distance / half-diagonal^2, (H, W)
        rate = torch.where(t < 1, t / (1 - t).clamp(min=1e-12), torch.full_like(t, math.inf))
        vis = torch.exp(-rate[:, None, None] * (0.1 + r2[None] / self.fade_width**2))
        vis = torch.where(t[:, None, None] == 0, torch.ones_like(vis), vis)
        return (1 - vis)[:, None]

    def degrade(self, x0: Tensor, t: Tensor, layer: Tensor | None = None) -> Tensor:
        m = self.mask(t, tuple(x0.shape[-2:]), x0.device)  # (B, 1, H, W)
        return x0.to(m.dtype) * (1 - m) + self.fill * m

    def start(self, shape: tuple[int, ...], generator: Generator = None, *, device: Any = None,
              dtype: torch.dtype = torch.float32, stats: dict | None = None,
              start_noise: float | None = None) -> Tensor:
        """The fully masked image: ``fill`` everywhere."""
        x = torch.zeros(shape, device=device, dtype=dtype)
        return self.degrade(x, full_level(x)).to(dtype)
