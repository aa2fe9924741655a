"""Distances between two sets of samples, as pure functions."""

from __future__ import annotations

import torch
from torch import Tensor

from .metrics import frechet_distance  # noqa: F401  (re-exported: the FID formula lives in metrics)


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
