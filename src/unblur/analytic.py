"""Distributions whose optimal denoiser is known in closed form.

For a Gaussian mixture sum_k w_k N(mu_k, C_k), the noisy marginal at level sigma is
sum_k w_k N(mu_k, C_k + sigma^2 I) and the optimal denoiser E[x0 | x] is the
responsibility-weighted mean of the per-component posterior means
mu_k + C_k (C_k + sigma^2 I)^{-1} (x - mu_k). Samplers, likelihoods and benchmarks are
checked against it: with the exact denoiser, any error is the solver's own.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .types import Cond, Generator
from .utils import rand, randn


class GaussianMixture:
    """A mixture of K full-covariance Gaussians in D dimensions (float64 internally)."""

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor):
        weights = torch.as_tensor(weights, dtype=torch.float64)
        means = torch.as_tensor(means, dtype=torch.float64)
        covs = torch.as_tensor(covs, dtype=torch.float64)
        K, D = means.shape
        if weights.shape != (K,) or covs.shape != (K, D, D):
            raise ValueError(
                f"expected weights (K,), means (K, D), covs (K, D, D); got {tuple(weights.shape)}, "
                f"{tuple(means.shape)}, {tuple(covs.shape)}"
            )
        if (weights < 0).any() or not math.isclose(float(weights.sum()), 1.0, rel_tol=1e-6):
            raise ValueError(f"mixture weights must be non-negative and sum to 1, got {weights.tolist()}")
        self.weights, self.means, self.covs = weights, means, covs
        self.dim = D
        self._chol = torch.linalg.cholesky(covs)  # (K, D, D)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={len(self.weights)}, D={self.dim})"

    @classmethod
    def isotropic(cls, means, std: float, weights=None) -> GaussianMixture:
        means = torch.as_tensor(means, dtype=torch.float64)
        K, D = means.shape
        w = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else weights
        return cls(w, means, std**2 * torch.eye(D, dtype=torch.float64).expand(K, D, D).clone())

    @property
    def mean(self) -> Tensor:
        return self.weights @ self.means

    @property
    def cov(self) -> Tensor:
        """Total covariance: sum_k w_k (C_k + mu_k mu_k^T) - mu mu^T."""
        m = self.mean
        second = torch.einsum("k,kij->ij", self.weights, self.covs + torch.einsum("ki,kj->kij", self.means, self.means))
        return second - torch.outer(m, m)

    def sample(self, n: int, *, generator: Generator = None, return_labels: bool = False):
        """n draws (float64, (n, D)); with ``return_labels`` also the component of each."""
        u = rand((n,), generator=generator, dtype=torch.float64)
        labels = torch.searchsorted(torch.cumsum(self.weights, 0), u).clamp(max=len(self.weights) - 1)
        z = randn((n, self.dim), generator=generator, dtype=torch.float64)
        x = self.means[labels] + torch.einsum("nij,nj->ni", self._chol[labels], z)
        return (x, labels) if return_labels else x

    def _component_log_probs(self, x: Tensor, sigma: Tensor | float = 0.0) -> tuple[Tensor, Tensor]:
        """log w_k N(x; mu_k, C_k + sigma^2 I) per sample and component, and the solves."""
        x = x.to(torch.float64)
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        eye = torch.eye(self.dim, dtype=torch.float64)
        diff = x[:, None, :] - self.means[None]  # (N, K, D)
        if sigma.ndim == 0 or bool((sigma == sigma.reshape(-1)[0]).all()):
            cov = self.covs + sigma.reshape(-1)[0] ** 2 * eye  # (K, D, D), one level for all
            prec = torch.linalg.inv(cov)
            sol = torch.einsum("kij,nkj->nki", prec, diff)  # (N, K, D)
            logdet = torch.linalg.slogdet(cov)[1][None]  # (1, K)
        else:
            cov = self.covs[None] + (sigma**2)[:, None, None, None] * eye  # (N, K, D, D)
            sol = torch.linalg.solve(cov, diff[..., None])[..., 0]
            logdet = torch.linalg.slogdet(cov)[1]  # (N, K)
        maha = (diff * sol).sum(-1)  # (N, K)
        logp = -0.5 * (maha + logdet + self.dim * math.log(2 * math.pi)) + self.weights.log()
        return logp, sol

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """log p_sigma(x) of the mixture convolved with N(0, sigma^2 I); (N,)."""
        logp, _ = self._component_log_probs(x, sigma)
        return torch.logsumexp(logp, dim=1)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """grad_x log p_sigma(x) = -sum_k r_k (C_k + sigma^2 I)^{-1} (x - mu_k)."""
        logp, sol = self._component_log_probs(x, sigma)
        r = torch.softmax(logp, dim=1)  # (N, K)
        return -(r[..., None] * sol).sum(1)

    def denoise(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """E[x0 | x0 + sigma n = x] = x + sigma^2 score (Tweedie), (N, D) in x's dtype."""
        sigma64 = torch.as_tensor(sigma, dtype=torch.float64)
        s2 = sigma64**2 if sigma64.ndim == 0 else (sigma64**2)[:, None]
        out = x.to(torch.float64) + s2 * self.score(x, sigma64)
        return out.to(x.dtype)

    def denoiser(self):
        """This mixture's exact Denoiser ``D(x, sigma, cond)`` for (B, D) inputs."""

        def D(x: Tensor, sigma: Tensor, cond: Cond = None) -> Tensor:
            return self.denoise(x, sigma)

        return D

    def entropy(self, n: int = 200_000, *, generator: Generator = None) -> float:
        """Differential entropy in nats, by Monte Carlo (exact for K = 1)."""
        if len(self.weights) == 1:
            logdet = 2 * torch.diagonal(self._chol[0]).log().sum()
            return float(0.5 * (self.dim * (1 + math.log(2 * math.pi)) + logdet))
        return float(-self.log_prob(self.sample(n, generator=generator)).mean())


def ring_mixture(k: int = 8, radius: float = 2.0, std: float = 0.3) -> GaussianMixture:
    """k isotropic Gaussians evenly spaced on a circle (the classic "8 Gaussians")."""
    angles = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    means = radius * torch.stack([angles.cos(), angles.sin()], 1)
    return GaussianMixture.isotropic(means, std)


def example_mixture() -> GaussianMixture:
    """A 2-D mixture with unequal weights and anisotropic, correlated components."""
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    means = torch.tensor([[-1.5, 0.0], [1.5, 1.0], [0.5, -1.5]], dtype=torch.float64)
    covs = torch.tensor(
        [
            [[0.30, 0.10], [0.10, 0.15]],
            [[0.10, -0.05], [-0.05, 0.20]],
            [[0.05, 0.00], [0.00, 0.05]],
        ],
        dtype=torch.float64,
    )
    return GaussianMixture(weights, means, covs)


# -- fitting a mixture to data (the blur process's start of generation) ----------------------
def fit_gmm(x: Tensor, k: int, *, seed: int = 0, iters: int = 100) -> dict:
    """A k-component full-covariance Gaussian mixture fitted to x (N, D) by EM (float64).

    Returns plain lists (weights (k,), means (k, D), covs (k, D, D)) so that it can be saved
    as JSON with a run; ``GaussianMixture(**fit)`` turns it into a mixture object.
    """
    x = x.double()
    N, D = x.shape
    g = torch.Generator().manual_seed(seed)
    mu = x[torch.randperm(N, generator=g)[:k]].clone()  # (k, D)
    var = x.var(0, correction=0).clamp(min=1e-6)
    cov = torch.diag_embed(var).expand(k, D, D).clone()
    w = torch.full((k,), 1.0 / k, dtype=torch.float64)
    reg = 1e-6 * torch.eye(D, dtype=torch.float64)
    for _ in range(iters):
        # E-step: responsibilities r_nk = w_k N(x_n; mu_k, C_k) / sum_j w_j N(x_n; mu_j, C_j).
        dist = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov + reg)
        logp = dist.log_prob(x[:, None, :]) + w.log()  # (N, k)
        r = (logp - logp.logsumexp(1, keepdim=True)).exp()  # (N, k)
        # M-step: weights, means and covariances from the responsibilities.
        nk = r.sum(0) + 1e-10
        w = nk / N
        mu = (r.T @ x) / nk[:, None]
        d = x[:, None, :] - mu[None]  # (N, k, D)
        cov = torch.einsum("nk,nki,nkj->kij", r, d, d) / nk[:, None, None] + reg
    return {"weights": w.tolist(), "means": mu.tolist(), "covs": cov.tolist()}


def sample_gmm(gmm: dict, n: int, generator: Generator = None) -> Tensor:
    """n draws (n, D) from a mixture as ``fit_gmm`` returns it (float64, on the CPU)."""
    u = rand((n,), generator=generator, device="cpu", dtype=torch.float64)
    w = torch.tensor(gmm["weights"], dtype=torch.float64).cumsum(0)
    k = torch.searchsorted(w / w[-1], u).clamp(max=len(w) - 1)  # (n,)
    mu = torch.tensor(gmm["means"], dtype=torch.float64)[k]  # (n, D)
    L = torch.linalg.cholesky(torch.tensor(gmm["covs"], dtype=torch.float64))[k]  # (n, D, D)
    z = randn(mu.shape, generator=generator, device="cpu", dtype=torch.float64)
    return mu + (L @ z[..., None])[..., 0]
