"""Image quality against a reference: PSNR and SSIM per image, computed by scikit-image (the ``eval``
extra). Below every layer that measures (training tasks, eval, the CLI), so each imports it."""

from __future__ import annotations

import numpy as np
from torch import Tensor


def _to01(x: Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> float64 (B, H, W, C) in [0, 1]."""
    return ((x.detach().double().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()


def _skimage():
    try:
        from skimage import metrics
    except ImportError as e:
        raise ImportError("PSNR and SSIM need scikit-image: pip install scikit-image, or install unblur[eval]") from e
    return metrics


def psnr(x: Tensor, ref: Tensor, *, mask: Tensor | None = None) -> np.ndarray:
    """Peak signal-to-noise ratio (dB) of each image of x against ref, both (B, C, H, W) in [-1, 1].

    Computed on [0, 1] images (data range 1). ``mask`` (B, 1, H, W) or (1, 1, H, W) of 0/1
    restricts the mean squared error to the pixels where it is 1 (e.g. the visible region of
    an inpainting), which scikit-image's PSNR does not offer, so that case is written out.
    """
    if x.shape != ref.shape:
        raise ValueError(f"images and references differ in shape: {tuple(x.shape)} and {tuple(ref.shape)}")
    a, b = _to01(x), _to01(ref)
    if mask is not None:
        m = mask.detach().double().cpu().expand(x.shape[0], 1, *x.shape[2:]).permute(0, 2, 3, 1).numpy()
        m = np.broadcast_to(m, a.shape)
        mse = ((a - b) ** 2 * m).reshape(len(a), -1).sum(1) / np.maximum(m.reshape(len(a), -1).sum(1), 1)
        with np.errstate(divide="ignore"):
            return np.where(mse > 0, 10 * np.log10(1.0 / np.maximum(mse, 1e-300)), np.inf)
    metrics = _skimage()
    out = []
    for ai, bi in zip(a, b):
        if np.array_equal(ai, bi):
            out.append(np.inf)
        else:
            out.append(metrics.peak_signal_noise_ratio(bi, ai, data_range=1.0))
    return np.asarray(out)


def ssim(x: Tensor, ref: Tensor) -> np.ndarray:
    """Structural similarity (Wang et al. 2004) of each image of x against ref, in [-1, 1];
    a 7-pixel window, shrunk to the largest odd size that fits small images."""
    if x.shape != ref.shape:
        raise ValueError(f"images and references differ in shape: {tuple(x.shape)} and {tuple(ref.shape)}")
    metrics = _skimage()
    a, b = _to01(x), _to01(ref)
    side = min(a.shape[1], a.shape[2])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {a.shape[1]}x{a.shape[2]}")
    return np.asarray([
        metrics.structural_similarity(bi, ai, data_range=1.0, channel_axis=2, win_size=win) for ai, bi in zip(a, b)
    ])
