"""Two-dimensional toy distributions whose densities are known.

Each one is defined as something whose density can be written down, and sampled from that
definition, so ``log_prob`` is the density of what ``sample`` draws:

* **Gaussian mixtures** (``gaussians8``, ``two-gaussians``): exact.
* **pinwheel**: five anisotropic Gaussian blades pushed through a twist
  ``f -> 2 R(theta_k + rate * exp(|f|)) f``, which turns each point by an angle that depends
  only on its radius; the twist preserves area, so the density is exact by change of variables.
* **checkerboard**: uniform on eight unit squares, smoothed by a small isotropic Gaussian;
  the density is a sum of products of normal CDF differences, exact (computed in log space).
* **rings**: radius-weighted circles (uniform in arc length) plus Gaussian noise; the circle
  average of a Gaussian is a Bessel function, so the density is exact.
* **moons, swissroll, spirals**: a curve plus isotropic Gaussian noise, where the curve is
  represented by ``nodes`` equally likely points per arm, the midpoints of its parameter's
  probability scale, spaced at most 0.4 noise standard deviations apart. Sampling picks a
  point and adds noise, so the density is a Gaussian mixture and exact (``as_mixture``
  returns it). It differs from the continuous curve's density by the midpoint rule's error:
  ripples along the ridge of relative size about 2 exp(-2 pi^2 / 0.4^2), and a rounding of
  the curve's ends over one node spacing.

Every distribution is then standardized, ``y = (z - shift) / scale`` with the constants
below (measured once so that each coordinate has roughly zero mean and the data roughly unit
variance), and ``log_prob`` includes the ``2 log scale`` of that change of variables.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..types import Generator
from ..utils import choice_error, rand, randn

_LOG_2PI = math.log(2 * math.pi)
_CHUNK = 1 << 22  # entries of a (points x components) matrix evaluated at once


class Toy2D:
    """A standardized 2-D distribution with a known density; subclasses define it in raw units."""

    name: str = ""
    description: str = ""

    def __init__(self, shift: tuple[float, float], scale: float) -> None:
        self.shift = torch.tensor(shift, dtype=torch.float64)  # (2,), raw units
        self.scale = float(scale)  # raw units per data unit

    def sample(self, n: int, generator: Generator = None) -> Tensor:
        """``n`` points, float32 (n, 2), drawn only from ``generator``."""
        z = self._sample_raw(int(n), generator)  # (n, 2) float64, raw units
        return ((z - self.shift) / self.scale).float()

    def log_prob(self, x: Tensor) -> Tensor:
        """Log density of points ``x`` of shape (..., 2), in data units; shape (...)."""
        if x.shape[-1] != 2:
            raise ValueError(f"toy2d points need a last dimension of 2, got shape {tuple(x.shape)}")
        z = x.detach().reshape(-1, 2).to(torch.float64) * self.scale + self.shift.to(x.device)
        out = self._log_prob_raw(z) + 2.0 * math.log(self.scale)
        return out.reshape(x.shape[:-1]).to(x.dtype if x.is_floating_point() else torch.float32)

    def entropy(self, n: int = 100_000, generator: Generator = None) -> float:
        """Monte Carlo estimate of the differential entropy ``-E[log p(x)]`` in nats."""
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        return float(-self.log_prob(self.sample(n, generator).double()).mean())

    def as_mixture(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """(weights (K,), means (K, 2), covariances (K, 2, 2)) in data units, where the density
        is (or is computed as) a Gaussian mixture; None otherwise."""
        return None

    def __repr__(self) -> str:
        return f"Toy2D({self.name!r}: {self.description})"

    # raw-unit definition -------------------------------------------------------------
    def _sample_raw(self, n: int, generator: Generator) -> Tensor:
        raise NotImplementedError

    def _log_prob_raw(self, z: Tensor) -> Tensor:
        raise NotImplementedError


def _uniform(n: int, generator: Generator, d: int | None = None) -> Tensor:
    return rand((n,) if d is None else (n, d), generator=generator, dtype=torch.float64)


def _normal(n: int, generator: Generator, d: int = 2) -> Tensor:
    return randn((n, d), generator=generator, dtype=torch.float64)


def _categorical(weights: Tensor, n: int, generator: Generator) -> Tensor:
    """Component indices (n,) by inverting the cumulative weights at uniform draws."""
    cdf = torch.cumsum(weights / weights.sum(), 0)
    u = _uniform(n, generator)
    return torch.searchsorted(cdf, u, right=True).clamp_(max=len(weights) - 1)


def _rotation(angle: Tensor) -> Tensor:
    """(...,) angles -> (..., 2, 2) rotation matrices."""
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _chunks(m: int, k: int):
    step = max(1, _CHUNK // max(k, 1))
    for start in range(0, m, step):
        yield slice(start, min(m, start + step))


# -- Gaussian mixtures --------------------------------------------------------------------------


class GaussianMixture2D(Toy2D):
    """sum_k w_k N(mu_k, Sigma_k): exact."""

    def __init__(self, name, description, weights, means, covs, *, shift, scale) -> None:
        super().__init__(shift, scale)
        self.name, self.description = name, description
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()  # (K,)
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, 2)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)  # (K, 2, 2)
        self._chol = torch.linalg.cholesky(self.covs)  # (K, 2, 2)
        self._chol_inv = torch.linalg.inv(self._chol)
        self._half_logdet = torch.log(torch.diagonal(self._chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)

    def _sample_raw(self, n, generator):
        k = _categorical(self.weights, n, generator)  # (n,)
        eps = _normal(n, generator)  # (n, 2)
        return self.means[k] + (self._chol[k] @ eps[:, :, None])[:, :, 0]

    def _log_prob_raw(self, z):
        means, chol_inv = self.means.to(z.device), self._chol_inv.to(z.device)
        base = torch.log(self.weights).to(z.device) - self._half_logdet.to(z.device) - _LOG_2PI
        out = torch.empty(len(z), dtype=z.dtype, device=z.device)
        for sl in _chunks(len(z), len(means)):
            diff = z[sl, None, :] - means  # (M, K, 2)
            w = torch.einsum("kij,mkj->mki", chol_inv, diff)  # whitened, (M, K, 2)
            out[sl] = torch.logsumexp(base - 0.5 * (w * w).sum(-1), dim=1)
        return out

    def as_mixture(self):
        s = self.scale
        return self.weights.clone(), (self.means - self.shift) / s, self.covs / s**2


def _gaussians8() -> GaussianMixture2D:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    radius, std = 2.0, 0.2
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], -1)
    covs = torch.eye(2, dtype=torch.float64).expand(8, 2, 2) * std**2
    return GaussianMixture2D(
        "gaussians8", "8 equal isotropic Gaussians (std 0.2) on a circle of radius 2",
        torch.ones(8), means, covs, shift=(0.0, 0.0), scale=math.sqrt(radius**2 / 2 + std**2),
    )  # fmt: skip


def _two_gaussians() -> GaussianMixture2D:
    means = [[-2.0, 0.0], [2.0, 0.0]]
    covs = torch.eye(2, dtype=torch.float64).expand(2, 2, 2) * 0.5**2
    # var_x = 4 + 0.25, var_y = 0.25: scale = sqrt(mean variance) = sqrt(2.25) = 1.5
    return GaussianMixture2D(
        "two-gaussians", "2 equal isotropic Gaussians (std 0.5) at (-2, 0) and (2, 0)",
        [0.5, 0.5], means, covs, shift=(0.0, 0.0), scale=1.5,
    )  # fmt: skip


# -- pinwheel -----------------------------------------------------------------------------------


class Pinwheel(Toy2D):
    """Anisotropic Gaussian blades turned by an angle that grows with the radius (keeps area)."""

    name = "pinwheel"
    description = "5 Gaussian blades twisted by an area-preserving, radius-dependent rotation"
    blades, radial_std, tangential_std, rate = 5, 0.3, 0.05, 0.25

    def __init__(self) -> None:
        super().__init__(shift=(0.0, 0.0), scale=1.478)
        self.thetas = torch.arange(self.blades, dtype=torch.float64) * (2 * math.pi / self.blades)
        self.mean = torch.tensor([1.0, 0.0], dtype=torch.float64)
        self.std = torch.tensor([self.radial_std, self.tangential_std], dtype=torch.float64)

    def _twist(self, radius: Tensor) -> Tensor:
        return self.rate * torch.exp(radius)

    def _sample_raw(self, n, generator):
        k = _categorical(torch.ones(self.blades, dtype=torch.float64), n, generator)
        f = self.mean + self.std * _normal(n, generator)  # (n, 2), blade coordinates
        angle = self.thetas[k] + self._twist(f.norm(dim=-1))
        return 2.0 * (_rotation(angle) @ f[:, :, None])[:, :, 0]

    def _log_prob_raw(self, z):
        f = z / 2.0  # |det| of the map is 4: the twist keeps area, the factor 2 scales it by 4
        angle = self.thetas.to(z.device)[None, :] + self._twist(f.norm(dim=-1))[:, None]  # (M, K)
        back = (_rotation(-angle) @ f[:, None, :, None])[..., 0]  # (M, K, 2), blade coordinates
        w = (back - self.mean.to(z.device)) / self.std.to(z.device)
        log_n = -0.5 * (w * w).sum(-1) - _LOG_2PI - torch.log(self.std).sum()
        return torch.logsumexp(log_n, dim=1) - math.log(self.blades) - math.log(4.0)


# -- checkerboard -------------------------------------------------------------------------------


def _log1mexp(d: Tensor) -> Tensor:
    """log(1 - exp(d)) for d <= 0, accurate at both ends."""
    return torch.where(d > -math.log(2), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def _log_ndtr_diff(hi: Tensor, lo: Tensor) -> Tensor:
    """log(Phi(hi) - Phi(lo)) for hi > lo, by symmetry always on the side with small tails."""
    flip = hi + lo > 0
    hi, lo = torch.where(flip, -lo, hi), torch.where(flip, -hi, lo)
    log_hi = torch.special.log_ndtr(hi)
    return log_hi + _log1mexp(torch.special.log_ndtr(lo) - log_hi)


class Checkerboard(Toy2D):
    """Uniform on the 8 dark unit squares of a 4x4 board on [-2, 2]^2, plus N(0, sigma^2 I)."""

    name = "checkerboard"
    description = "uniform on 8 unit squares of a 4x4 board, smoothed by a Gaussian of std 0.05"
    sigma = 0.05

    def __init__(self) -> None:
        # var of uniform on [-2, 2] is 4/3; plus sigma^2.
        super().__init__(shift=(0.0, 0.0), scale=math.sqrt(4 / 3 + self.sigma**2))
        corners = [(i, j) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0]
        self.corners = torch.tensor(corners, dtype=torch.float64)  # (8, 2) lower-left corners

    def _sample_raw(self, n, generator):
        k = _categorical(torch.ones(len(self.corners), dtype=torch.float64), n, generator)
        return self.corners[k] + _uniform(n, generator, 2) + self.sigma * _normal(n, generator)

    def _log_prob_raw(self, z):
        lo = self.corners.to(z.device)  # (K, 2)
        d = z[:, None, :]  # (M, 1, 2)
        # P(a <= z - noise <= a + 1) per axis, for each square: (M, K, 2)
        per_axis = _log_ndtr_diff((d - lo) / self.sigma, (d - lo - 1.0) / self.sigma)
        return torch.logsumexp(per_axis.sum(-1), dim=1) - math.log(len(self.corners))


# -- rings --------------------------------------------------------------------------------------


class Rings(Toy2D):
    """Concentric circles, uniform in total arc length, plus N(0, sigma^2 I): a Bessel density."""

    name = "rings"
    description = "4 concentric circles (radii 1..4) uniform in arc length, Gaussian noise std 0.15"
    radii = (1.0, 2.0, 3.0, 4.0)
    sigma = 0.15

    def __init__(self) -> None:
        r = torch.tensor(self.radii, dtype=torch.float64)
        w = r / r.sum()  # arc-length uniform: weight proportional to circumference
        super().__init__(shift=(0.0, 0.0), scale=math.sqrt(float((w * r**2).sum()) / 2 + self.sigma**2))
        self.r, self.w = r, w

    def _sample_raw(self, n, generator):
        k = _categorical(self.w, n, generator)
        theta = 2 * math.pi * _uniform(n, generator)
        circle = torch.stack([torch.cos(theta), torch.sin(theta)], -1) * self.r[k, None]
        return circle + self.sigma * _normal(n, generator)

    def _log_prob_raw(self, z):
        # (1 / 2pi) int N(z; r (cos t, sin t), s^2 I) dt
        #   = exp(-(|z| - r)^2 / 2s^2) * i0e(r |z| / s^2) / (2 pi s^2),  i0e(u) = exp(-u) I0(u)
        rho = z.norm(dim=-1, keepdim=True)  # (M, 1)
        r, w, s2 = self.r.to(z.device), self.w.to(z.device), self.sigma**2
        log_k = -((rho - r) ** 2) / (2 * s2) + torch.log(torch.special.i0e(rho * r / s2))
        return torch.logsumexp(torch.log(w) + log_k, dim=1) - math.log(2 * math.pi * s2)


# -- curves plus noise --------------------------------------------------------------------------


class CurveNoise2D(Toy2D):
    """Curves ``c_a(u)`` at ``u = (j + 1/2) / nodes``, equally likely per arm, plus N(0, sigma^2 I).

    ``u`` is the probability scale of the curve parameter (a uniform ``u`` gives the intended
    parameter distribution), so this is the midpoint rule for
    ``sum_a w_a int_0^1 N(z; c_a(u), sigma^2 I) du``, taken as the definition.
    """

    arms: tuple = ()
    arm_weights: tuple = ()
    sigma: float = 0.1
    nodes: int = 256

    def __init__(self, shift, scale) -> None:
        super().__init__(shift, scale)
        u = (torch.arange(self.nodes, dtype=torch.float64) + 0.5) / self.nodes
        w = torch.tensor(self.arm_weights, dtype=torch.float64)
        w = w / w.sum()
        self._centers = torch.cat([arm(u) for arm in self.arms])  # (A * nodes, 2)
        self._log_w = torch.log(w).repeat_interleave(self.nodes) - math.log(self.nodes)  # (A * nodes,)

    def _sample_raw(self, n, generator):
        k = _categorical(torch.exp(self._log_w), n, generator)
        return self._centers[k] + self.sigma * _normal(n, generator)

    def _log_prob_raw(self, z):
        centers, log_w = self._centers.to(z.device), self._log_w.to(z.device)
        s2 = self.sigma**2
        # -|z - c|^2 / 2s^2 = (z . c - |c|^2 / 2) / s^2 - |z|^2 / 2s^2; the last term is per row
        bias = log_w - centers.square().sum(-1) / (2 * s2)  # (K,)
        out = torch.empty(len(z), dtype=z.dtype, device=z.device)
        for sl in _chunks(len(z), len(centers)):
            a = torch.addmm(bias, z[sl], centers.T, alpha=1.0 / s2)  # (M, K)
            top = a.amax(dim=1, keepdim=True)
            out[sl] = (a - top).exp_().sum(dim=1).log_() + top[:, 0]  # a cheaper logsumexp
        return out - z.square().sum(-1) / (2 * s2) - math.log(2 * math.pi * s2)

    def as_mixture(self):
        s = self.scale
        k = len(self._centers)
        covs = torch.eye(2, dtype=torch.float64).expand(k, 2, 2) * (self.sigma / s) ** 2
        return torch.exp(self._log_w), (self._centers - self.shift) / s, covs.clone()


def _moon_upper(u: Tensor) -> Tensor:
    t = math.pi * u
    return torch.stack([torch.cos(t), torch.sin(t)], -1)


def _moon_lower(u: Tensor) -> Tensor:
    t = math.pi * u
    return torch.stack([1.0 - torch.cos(t), 0.5 - torch.sin(t)], -1)


class Moons(CurveNoise2D):
    name = "moons"
    description = "two interleaved half circles (as in scikit-learn), Gaussian noise std 0.1"
    arms, arm_weights = (_moon_upper, _moon_lower), (1.0, 1.0)
    sigma, nodes = 0.1, 256  # node spacing pi / 256 = 0.012

    def __init__(self) -> None:
        super().__init__(shift=(0.5, 0.25), scale=0.712)


def _swiss(u: Tensor) -> Tensor:
    t = 1.5 * math.pi * (1.0 + 2.0 * u)  # t ~ U(1.5 pi, 4.5 pi), as scikit-learn's make_swiss_roll
    return torch.stack([t * torch.cos(t), t * torch.sin(t)], -1)


class SwissRoll(CurveNoise2D):
    name = "swissroll"
    description = "the 2-D swiss roll (t cos t, t sin t), t ~ U(1.5 pi, 4.5 pi), Gaussian noise std 0.5"
    arms, arm_weights = (_swiss,), (1.0,)
    sigma, nodes = 0.5, 700  # node spacing at most 14.2 * 3 pi / 700 = 0.19

    def __init__(self) -> None:
        super().__init__(shift=(2.0, 0.2), scale=6.8)


_SPIRAL_TURNS = 3 * math.pi


def _spiral(u: Tensor) -> Tensor:
    t = _SPIRAL_TURNS * torch.sqrt(u)  # density proportional to t: about uniform in arc length
    return torch.stack([-t * torch.cos(t), t * torch.sin(t)], -1)


def _spiral_mirror(u: Tensor) -> Tensor:
    return -_spiral(u)


class Spirals(CurveNoise2D):
    name = "spirals"
    description = "two interleaved spirals r = t, t up to 3 pi, about arc-length uniform, noise std 0.3"
    arms, arm_weights = (_spiral, _spiral_mirror), (1.0, 1.0)
    sigma, nodes = 0.3, 500  # node spacing 0.09 on the arms, 0.13 at the center

    def __init__(self) -> None:
        super().__init__(shift=(0.0, 0.0), scale=4.72)


def _build() -> dict[str, Toy2D]:
    sets = [_gaussians8(), _two_gaussians(), SwissRoll(), Moons(), Checkerboard(), Rings(),
            Spirals(), Pinwheel()]  # fmt: skip
    return {d.name: d for d in sets}


TOY2D: dict[str, Toy2D] = _build()
"""Every 2-D toy distribution by name."""


def get_toy2d(name: str) -> Toy2D:
    """The toy distribution called ``name``, or an error that lists them all."""
    try:
        return TOY2D[name]
    except KeyError:
        raise choice_error("toy2d distribution", name, TOY2D) from None
