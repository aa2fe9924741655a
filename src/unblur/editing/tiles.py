"""Denoisers on images of any size: padded to the network's multiple, or run in overlapping
tiles blended with a smooth window (MultiDiffusion, Bar-Tal et al. 2023: the x0 estimates of
overlapping windows averaged at every step), so a network trained at 32x32 restores, inpaints
and outpaints larger canvases with bounded memory and without seams."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..types import Cond, Denoiser


def any_size(den: Denoiser, multiple: int) -> Denoiser:
    """``den`` on images of any H and W: reflect-padded at the bottom and right up to multiples of
    ``multiple`` (edge-replicated where the image is too small to reflect), cropped back."""
    if multiple == 1:
        return den

    def padded(x: Tensor, sigma: Tensor, cond: Cond = None) -> Tensor:
        H, W = x.shape[-2:]
        ph, pw = -H % multiple, -W % multiple
        if not ph and not pw:
            return den(x, sigma, cond)
        mode = "reflect" if ph < H and pw < W else "replicate"
        return den(F.pad(x, (0, pw, 0, ph), mode=mode), sigma, cond)[..., :H, :W]  # (B, C, H, W)

    return padded


def _window(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A smooth tile weight (n,), sin(pi (i + 1/2) / n): near 0 at the edges, never 0."""
    return torch.sin(math.pi * (torch.arange(n, device=device, dtype=dtype) + 0.5) / n)


def _starts(n: int, t: int) -> list[int]:
    """Tile offsets covering 0..n with tiles of t overlapping by a quarter (the last one flush with the end)."""
    if n <= t:
        return [0]
    step = max(1, (3 * t) // 4)
    return sorted({*range(0, n - t, step), n - t})


def tiled(den: Denoiser, tile: tuple[int, int]) -> Denoiser:
    """``den`` applied to overlapping tiles of (h, w) = ``tile``, the outputs averaged with the
    weights of a separable sine window, so neighbouring tiles fade into each other without seams."""
    th, tw = tile

    def run(x: Tensor, sigma: Tensor, cond: Cond = None) -> Tensor:
        H, W = x.shape[-2:]
        h, w = min(th, H), min(tw, W)
        win = _window(h, x.device, x.dtype)[:, None] * _window(w, x.device, x.dtype)[None]  # (h, w)
        out, weight = torch.zeros_like(x), torch.zeros((H, W), device=x.device, dtype=x.dtype)
        for y0 in _starts(H, h):
            for x0 in _starts(W, w):
                part = den(x[..., y0 : y0 + h, x0 : x0 + w], sigma, cond)  # (B, C, h, w)
                out[..., y0 : y0 + h, x0 : x0 + w] += part * win
                weight[y0 : y0 + h, x0 : x0 + w] += win
        return out / weight

    return run
