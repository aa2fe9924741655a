"""Guidance and editing as denoiser wrappers: each takes a Denoiser and returns a new one."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .types import Cond, Denoiser
from .utils import append_dims


def _cat_cond(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> dict[str, Tensor]:
    if set(a) != set(b):
        raise ValueError(
            f"conditional and unconditional inputs must have the same keys, got {sorted(a)} and {sorted(b)}"
        )
    return {k: torch.cat([a[k], b[k]]) for k in a}


def cfg(denoiser: Denoiser, scale: float, uncond: Cond) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022): D_u + w (D_c - D_u).

    ``uncond`` is the null condition for the same batch (e.g. the null class for every
    sample). The conditional and unconditional halves run as one batched forward of 2B.
    ``scale = 1`` is the plain conditional denoiser and ``scale = 0`` the unconditional one;
    both then take a single forward of B.
    """
    scale = float(scale)
    if uncond is None:
        raise ValueError("cfg needs an unconditional input (the null condition), got None")

    def guided(x: Tensor, sigma: Tensor, cond: Cond = None) -> Tensor:
        if cond is None:
            raise ValueError("cfg needs a condition to guide towards, got cond=None")
        if scale == 1.0:
            return denoiser(x, sigma, cond)
        if scale == 0.0:
            return denoiser(x, sigma, uncond)
        both = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), _cat_cond(cond, uncond))
        x0_c, x0_u = both.chunk(2)
        return x0_u + scale * (x0_c - x0_u)

    return guided


def clip_x0(denoiser: Denoiser, lo: float = -1.0, hi: float = 1.0) -> Denoiser:
    """Static thresholding: clamp x0_hat to the data range [lo, hi]."""
    if not lo < hi:
        raise ValueError(f"clip range must have lo < hi, got [{lo}, {hi}]")

    def clipped(x: Tensor, sigma: Tensor, cond: Cond = None) -> Tensor:
        return denoiser(x, sigma, cond).clamp(lo, hi)

    return clipped


def dynamic_threshold(denoiser: Denoiser, percentile: float = 0.995, max_value: float = 1.0) -> Denoiser:
    """Dynamic thresholding (Saharia et al. 2022, sec. 2.3): per sample, s = max(1, the
    ``percentile`` quantile of |x0_hat|); x0_hat is clamped to [-s, s] and divided by s, so
    that it lands in [-max_value, max_value]."""
    if not 0 < percentile <= 1:
        raise ValueError(f"percentile must be in (0, 1], got {percentile!r}")

    def thresholded(x: Tensor, sigma: Tensor, cond: Cond = None) -> Tensor:
        x0 = denoiser(x, sigma, cond)
        flat = x0.reshape(x0.shape[0], -1).abs().float()
        s = torch.quantile(flat, percentile, dim=1).clamp(min=max_value).to(x0.dtype)
        s = append_dims(s, x0.ndim)
        return x0.clamp(-s, s) / s * max_value

    return thresholded
