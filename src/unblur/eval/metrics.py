"""Sample-quality metrics on features, as pure functions over (N, D) tensors.

* ``frechet_distance``: the FID formula between Gaussians fitted to two feature sets
  (Heusel et al. 2017), in float64 torch (a symmetric eigendecomposition instead of sqrtm).
* ``kernel_inception_distance``: KID, the unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018), averaged over random subsets.
* ``precision_recall``: improved precision and recall on k-nearest-neighbour manifolds
  (Kynkaanniemi et al. 2019).
* ``inception_score``: exp E_x KL(p(y|x) || p(y)) from class probabilities (Salimans et al. 2016).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _as_2d64(x: Tensor, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim < 2:
        raise ValueError(f"{name} must be a set of feature vectors (N, D), got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1).to(torch.float64)


def _need(n: int, at_least: int, what: str, hint: str = "") -> None:
    if n < at_least:
        raise ValueError(f"{what} needs at least {at_least} samples, got {n}" + (f": {hint}" if hint else ""))


def feature_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    x = _as_2d64(x, "features")
    _need(len(x), 2, "a covariance", "give more samples (--n)")
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (len(x) - 1)


def _sqrt_psd(a: Tensor) -> Tensor:
    w, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance_from_stats(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^{1/2}), float64.

    tr (C1 C2)^{1/2} is computed as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix C1^{1/2} C2 C1^{1/2}, which has the same spectrum as C1 C2.
    """
    mu1, mu2 = mu1.to(torch.float64), mu2.to(torch.float64)
    cov1, cov2 = cov1.to(torch.float64), cov2.to(torch.float64)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature sets have different dimensions: {tuple(mu1.shape)} and {tuple(mu2.shape)}")
    s1 = _sqrt_psd(cov1)
    m = s1 @ cov2 @ s1
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    d = float(((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_covmean)
    return max(d, 0.0)


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets x (N, D) and y (M, D)."""
    x, y = _as_2d64(x, "x"), _as_2d64(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sets have different dimensions: {x.shape[1]} and {y.shape[1]}")
    return frechet_distance_from_stats(*feature_stats(x), *feature_stats(y))


def _poly_mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return sxx + syy - 2 * kxy.mean()


def kernel_inception_distance(
    x: Tensor,
    y: Tensor,
    *,
    subset_size: int = 1000,
    num_subsets: int = 100,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """KID: the unbiased MMD^2 estimate with kernel (x.y / d + 1)^3, over random subsets.

    Returns ``kid`` (the mean over subsets), ``kid_std`` (their standard deviation) and
    ``kid_se`` (kid_std / sqrt(num_subsets); subsets overlap, so this is a rough error bar).
    The subset size is min(subset_size, N, M), halved when it would take a whole set (so the
    subsets differ and their spread means something); each estimate is unbiased, so for two samples
    of one distribution ``kid`` averages to 0 and can be negative.
    """
    x, y = _as_2d64(x, "x"), _as_2d64(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sets have different dimensions: {x.shape[1]} and {y.shape[1]}")
    _need(min(len(x), len(y)), 2, "KID", "give at least 2 samples in each set (--n)")
    m = min(subset_size, len(x), len(y))
    if m == min(len(x), len(y)) and num_subsets > 1 and m >= 4:
        m //= 2  # subsets as large as a whole set would all be that set: no spread to measure
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    vals = []
    for _ in range(num_subsets):
        ix = torch.randperm(len(x), generator=g)[:m]
        iy = torch.randperm(len(y), generator=g)[:m]
        vals.append(_poly_mmd2_unbiased(x[ix.to(x.device)], y[iy.to(y.device)]))
    v = torch.stack(vals)
    std = float(v.std()) if len(v) > 1 else float("nan")
    return {"kid": float(v.mean()), "kid_std": std, "kid_se": std / math.sqrt(len(v)), "kid_subset_size": m}


def _kth_nn_radii(x: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """Distance from each point of x to its k-th nearest other point of x."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk], x)  # (c, N)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(out)


def _inside_manifold(query: Tensor, ref: Tensor, radii: Tensor, chunk: int = 2048) -> Tensor:
    """For each query point, whether it lies in some ball B(ref_j, radii_j)."""
    out = []
    for i in range(0, len(query), chunk):
        d = torch.cdist(query[i : i + chunk], ref)  # (c, M)
        out.append((d <= radii[None]).any(dim=1))
    return torch.cat(out)


def precision_recall(real: Tensor, fake: Tensor, *, k: int = 3) -> dict[str, float]:
    """Improved precision (fake inside the real manifold) and recall (real inside the fake one).

    A manifold is the union of balls around each point reaching its k-th nearest neighbour
    (Kynkaanniemi et al. 2019, k = 3).
    """
    real, fake = _as_2d64(real, "real"), _as_2d64(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sets have different dimensions: {real.shape[1]} and {fake.shape[1]}")
    _need(min(len(real), len(fake)), k + 1, f"precision/recall with k={k}", "give more samples (--n)")
    precision = _inside_manifold(fake, real, _kth_nn_radii(real, k)).double().mean()
    recall = _inside_manifold(real, fake, _kth_nn_radii(fake, k)).double().mean()
    return {"precision": float(precision), "recall": float(recall), "pr_k": k}


def inception_score(probs: Tensor, *, splits: int = 10) -> dict[str, float]:
    """exp(E_x KL(p(y|x) || p(y))) per split of the class probabilities (N, K); mean and std."""
    probs = _as_2d64(probs, "class probabilities")
    splits = max(1, min(splits, len(probs) // 2))
    _need(len(probs), 2, "the Inception Score")
    scores = []
    for part in torch.tensor_split(probs, splits):
        py = part.mean(0, keepdim=True)
        kl = (part * (part.clamp(min=1e-30).log() - py.clamp(min=1e-30).log())).sum(1)
        scores.append(kl.mean().exp())
    s = torch.stack(scores)
    return {"is": float(s.mean()), "is_std": float(s.std()) if len(s) > 1 else 0.0, "is_splits": splits}
