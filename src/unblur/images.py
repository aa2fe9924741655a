"""Tensors to pictures: PNG files, grids, and a density picture for 2-D samples."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .utils import atomic_write_bytes


def to_uint8(x: Tensor) -> np.ndarray:
    """(C, H, W) or (B, C, H, W) in [-1, 1] -> uint8 HWC / BHWC."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def to_pil(x: Tensor) -> Image.Image:
    """One image (C, H, W) in [-1, 1] as a Pillow image (L or RGB)."""
    arr = to_uint8(x)
    return Image.fromarray(arr[..., 0], "L") if arr.shape[-1] == 1 else Image.fromarray(arr, "RGB")


def make_grid(x: Tensor, nrow: int | None = None, pad: int = 2, scale: int = 1) -> Image.Image:
    """A grid picture of (B, C, H, W) images in [-1, 1], ``scale`` times enlarged (nearest)."""
    B, C, H, W = x.shape
    nrow = nrow or math.ceil(math.sqrt(B))
    ncol = math.ceil(B / nrow)
    canvas = torch.ones(C, ncol * (H + pad) + pad, nrow * (W + pad) + pad)
    for i in range(B):
        r, c = divmod(i, nrow)
        canvas[:, pad + r * (H + pad) : pad + r * (H + pad) + H, pad + c * (W + pad) : pad + c * (W + pad) + W] = x[i]
    img = to_pil(canvas)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def save_png(img: Image.Image, path: str | Path) -> None:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def grid_scale(height: int) -> int:
    """Enlarge small images so that a grid is readable (8x8 digits -> 8x)."""
    return max(1, 64 // max(height, 1))


def scatter_image(points: Tensor, size: int = 256, lim: float | None = None) -> Image.Image:
    """A density picture of 2-D points (a log-scaled histogram), with no plotting library."""
    p = points.detach().double().cpu()[:, :2].numpy()
    lim = lim or float(np.percentile(np.abs(p), 99.5)) * 1.1 or 1.0
    hist, _, _ = np.histogram2d(p[:, 1], p[:, 0], bins=size, range=[[-lim, lim], [-lim, lim]])
    hist = np.log1p(hist)[::-1]
    img = 255 - (255 * hist / max(hist.max(), 1e-12)).astype(np.uint8)
    return Image.fromarray(img, "L")
