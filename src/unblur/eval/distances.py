"""Distances between two sets of samples, as pure functions."""

from __future__ import annotations

import torch
from torch import Tensor


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo), V-statistic form.

    Zero exactly when the two distributions agree; inputs (N, D) and (M, D).
    """
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    y = y.reshape(y.shape[0], -1).to(torch.float64)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sample sets have different dimensions: {x.shape[1]} and {y.shape[1]}")
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return float(2 * xy - xx - yy)


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula):
    |mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x S_y)^{1/2}), in float64 (scipy's sqrtm)."""
    import numpy as np
    from scipy import linalg

    x = x.reshape(x.shape[0], -1).double().cpu().numpy()
    y = y.reshape(y.shape[0], -1).double().cpu().numpy()
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sets have different dimensions: {x.shape[1]} and {y.shape[1]}")
    if min(len(x), len(y)) < 2:
        raise ValueError(f"need at least 2 samples in each set, got {len(x)} and {len(y)}")
    mu_x, mu_y = x.mean(0), y.mean(0)
    s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean, _ = linalg.sqrtm(s_x @ s_y, disp=False)
    if not np.isfinite(covmean).all():  # near-singular product: regularize as the reference FID code does
        eps = 1e-6 * np.eye(len(s_x))
        covmean = linalg.sqrtm((s_x + eps) @ (s_y + eps))
    covmean = covmean.real
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(s_x) + np.trace(s_y) - 2 * np.trace(covmean))
