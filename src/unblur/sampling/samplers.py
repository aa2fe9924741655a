"""Samplers: pure functions that walk a noise-level grid with a denoiser.

All share one signature::

    sample_x(denoiser, x, grid, *, cond=None, generator=None, callback=None, **options) -> x0

``x`` is the start in VE scale (``x = x0 + sigma * n`` at ``grid[0]``), ``grid`` a 1-D
tensor of decreasing noise levels ending at 0, ``generator`` one ``torch.Generator`` or one
per sample. No state survives a call: the history a multistep method needs is a local.

The signature and the loop head repeat in every sampler on purpose (a duplicate finder lists
them as same-shape runs): each sampler reads top to bottom as its paper's algorithm, as in
k-diffusion, and the algebra they share lives in named helpers (``_levels``, ``_denoise``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..types import Callback, Cond, Denoiser, Generator, StepInfo
from ..utils import randn_like


def check_grid(grid: Tensor, x: Tensor | None = None) -> Tensor:
    """Validate a grid (1-D, finite, strictly decreasing, positive, ending at 0)."""
    grid = torch.as_tensor(grid)
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(f"a grid must be a 1-D tensor of at least 2 noise levels, got shape {tuple(grid.shape)}")
    if not torch.isfinite(grid).all():
        raise ValueError(f"a grid must be finite, got {grid.tolist()}")
    if grid[-1] != 0:
        raise ValueError(f"a grid must end at 0, got last level {grid[-1].item()!r}: append a zero")
    if (grid[:-1] <= 0).any() or (grid[1:] >= grid[:-1]).any():
        raise ValueError(f"a grid must be strictly decreasing and positive before its final 0, got {grid.tolist()}")
    if x is not None:
        return grid.to(device=x.device, dtype=x.dtype)
    return grid


def _levels(grid: Tensor, x: Tensor) -> tuple[Tensor, list[float]]:
    """The grid as tensors for the denoiser and as float64 Python numbers for coefficients.

    Coefficients computed from Python floats cost no tensor op, no device sync on a GPU,
    and keep float64 precision whatever the sample's dtype (1 - alpha_bar ratios of ~1e-4).
    """
    g = check_grid(grid)
    return g.to(device=x.device, dtype=x.dtype), g.double().tolist()


def _check_option(name: str, value: float, lo: float = 0.0, hi: float = math.inf) -> float:
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    return float(value)


def _report(callback, i, n, x, sig, x0):
    if callback is not None:
        callback(StepInfo(step=i, total=n, x=x, sigma=sig[i], sigma_next=sig[i + 1], x0_hat=x0))


def _denoise(denoiser: Denoiser, x: Tensor, sigma: float | Tensor, cond: Cond) -> Tensor:
    sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
    return denoiser(x, sigma.expand(x.shape[0]), cond)


@torch.no_grad()
def sample_ddpm(
    denoiser: Denoiser,
    x: Tensor,
    grid: Tensor,
    *,
    cond: Cond = None,
    generator: Generator = None,
    callback: Callback | None = None,
    variance: str = "beta_tilde",
) -> Tensor:
    """Ancestral sampling, Algorithm 2 of Ho et al. 2020, on any sub-sequence of steps.

    Between consecutive levels s > s' of the grid, with alpha_bar = 1 / (1 + sigma^2),
    alpha = alpha_bar_s / alpha_bar_s' and beta = 1 - alpha, x_{t-1} is drawn from the
    posterior q(x_{t-1} | x_t, x0_hat) (Ho et al. eq. 6-7): mean
    sqrt(alpha_bar_s') beta / (1 - alpha_bar_s) x0_hat + sqrt(alpha) (1 - alpha_bar_s') / (1 - alpha_bar_s) x_t
    and variance beta_tilde (``variance="beta_tilde"``) or beta (``"beta"``), which is
    the eps-form 1/sqrt(alpha) (x_t - beta / sqrt(1 - alpha_bar) eps) + sigma z rewritten.
    No noise is added on the last step (z = 0 at t = 1).
    """
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    sig, sl = _levels(grid, x)
    n = len(sl) - 1
    for i in range(n):
        x0 = _denoise(denoiser, x, sig[i], cond)
        x = ddpm_step(x, x0, sl[i], sl[i + 1], generator, variance)
        _report(callback, i, n, x, sig, x0)
    return x


def ddpm_step(x: Tensor, x0: Tensor, s: float, s_next: float, generator: Generator = None,
              variance: str = "beta_tilde") -> Tensor:
    """One draw from the posterior q(x_{s'} | x_s, x0) in VE scale (the step of ``sample_ddpm``)."""
    # 1. VP quantities between the two levels.
    ab, ab_next = 1 / (1 + s * s), 1 / (1 + s_next * s_next)
    alpha = ab / ab_next
    beta = 1 - alpha
    # 2. Posterior mean (Ho et al. eq. 7) in VP scale x_t = sqrt(alpha_bar) x, divided by
    #    sqrt(alpha_bar') to return to VE scale.
    c_x0 = beta / (1 - ab)
    c_xt = math.sqrt(alpha) * (1 - ab_next) / (1 - ab) * math.sqrt(ab / ab_next)
    x_next = torch.add(x0 * c_x0, x, alpha=c_xt)
    # 3. Add sigma_t z except on the last step.
    if s_next > 0:
        var = beta * (1 - ab_next) / (1 - ab) if variance == "beta_tilde" else beta
        x_next = x_next.add_(randn_like(x, generator), alpha=math.sqrt(var / ab_next))
    return x_next


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    x: Tensor,
    grid: Tensor,
    *,
    cond: Cond = None,
    generator: Generator = None,
    callback: Callback | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM, Song et al. 2021 eq. 12; eta = 0 is deterministic, eta = 1 is DDPM-like.

    x_{t'} = sqrt(ab') x0 + sqrt(1 - ab' - s_eta^2) eps + s_eta z with
    s_eta = eta sqrt((1 - ab') / (1 - ab)) sqrt(1 - ab / ab'); in VE scale (divided by
    sqrt(ab'), eps = (x - x0) / sigma) the deterministic part is lerp(x0, x, c).
    """
    eta = _check_option("eta", eta)
    sig, sl = _levels(grid, x)
    n = len(sl) - 1
    for i in range(n):
        s, s_next = sl[i], sl[i + 1]
        x0 = _denoise(denoiser, x, sig[i], cond)
        ab, ab_next = 1 / (1 + s * s), 1 / (1 + s_next * s_next)
        s_eta = eta * math.sqrt((1 - ab_next) / (1 - ab) * (1 - ab / ab_next))
        dir_coef = math.sqrt(max(1 - ab_next - s_eta**2, 0.0))
        x_next = torch.lerp(x0, x, dir_coef / (math.sqrt(ab_next) * s))
        if s_eta > 0 and s_next > 0:
            x_next = x_next.add_(randn_like(x, generator), alpha=s_eta / math.sqrt(ab_next))
        x = x_next
        _report(callback, i, n, x, sig, x0)
    return x


def _churn(x, s, n, generator, churn, s_tmin, s_tmax, s_noise):
    """EDM Algorithm 2 lines 4-6: raise the level to s_hat = s (1 + gamma) with fresh noise."""
    if churn == 0 or not s_tmin <= s <= s_tmax:
        return x, s
    gamma = min(churn / n, math.sqrt(2) - 1)
    s_hat = s * (1 + gamma)
    return x + math.sqrt(s_hat**2 - s**2) * s_noise * randn_like(x, generator), s_hat


@torch.no_grad()
def sample_euler(
    denoiser: Denoiser,
    x: Tensor,
    grid: Tensor,
    *,
    cond: Cond = None,
    generator: Generator = None,
    callback: Callback | None = None,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> Tensor:
    """Euler steps of the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. eq. 3).

    x' = x + (s' - s) (x - x0) / s = lerp(x0, x, s' / s).
    """
    _check_option("churn", churn)
    sig, sl = _levels(grid, x)
    n = len(sl) - 1
    for i in range(n):
        s, s_next = sl[i], sl[i + 1]
        x, s_hat = _churn(x, s, n, generator, churn, s_tmin, s_tmax, s_noise)
        x0 = _denoise(denoiser, x, s_hat, cond)
        x = torch.lerp(x0, x, s_next / s_hat)
        _report(callback, i, n, x, sig, x0)
    return x


@torch.no_grad()
def sample_heun(
    denoiser: Denoiser,
    x: Tensor,
    grid: Tensor,
    *,
    cond: Cond = None,
    generator: Generator = None,
    callback: Callback | None = None,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> Tensor:
    """Heun's second-order method with EDM's stochastic churn (Karras et al. 2022, Algorithm 2).

    2 NFE per step, 1 on the last step (to sigma = 0), where the Euler step is kept.
    """
    _check_option("churn", churn)
    sig, sl = _levels(grid, x)
    n = len(sl) - 1
    for i in range(n):
        s, s_next = sl[i], sl[i + 1]
        x_hat, s_hat = _churn(x, s, n, generator, churn, s_tmin, s_tmax, s_noise)
        x0 = _denoise(denoiser, x_hat, s_hat, cond)
        d = (x_hat - x0) / s_hat
        x = x_hat + (s_next - s_hat) * d
        if s_next > 0:
            x0_next = _denoise(denoiser, x, sig[i + 1], cond)
            d_next = (x - x0_next) / s_next
            x = x_hat + (s_next - s_hat) / 2 * (d + d_next)
        _report(callback, i, n, x, sig, x0)
    return x


@torch.no_grad()
def sample_euler_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    grid: Tensor,
    *,
    cond: Cond = None,
    generator: Generator = None,
    callback: Callback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Euler step down to sigma_down, then fresh noise of std sigma_up (ancestral sampling).

    sigma_up = min(s', eta sqrt(s'^2 (s^2 - s'^2) / s^2)), sigma_down = sqrt(s'^2 - sigma_up^2),
    so that the marginal at s' has variance s'^2 around x0 as the forward process does.
    """
    eta = _check_option("eta", eta)
    sig, sl = _levels(grid, x)
    n = len(sl) - 1
    for i in range(n):
        s, s_next = sl[i], sl[i + 1]
        x0 = _denoise(denoiser, x, sig[i], cond)
        s_up = min(s_next, eta * math.sqrt(s_next**2 * (s**2 - s_next**2) / s**2))
        s_down = math.sqrt(s_next**2 - s_up**2)
        x = torch.lerp(x0, x, s_down / s)
        if s_next > 0 and s_up > 0:
            x = x.add_(randn_like(x, generator), alpha=s_up * s_noise)
        _report(callback, i, n, x, sig, x0)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    x: Tensor,
    grid: Tensor,
    *,
    cond: Cond = None,
    generator: Generator = None,
    callback: Callback | None = None,
) -> Tensor:
    """DPM-Solver++(2M), Lu et al. 2022 (arXiv 2211.01095) Algorithm 2, in VE scale.

    With lambda = -log sigma and h = lambda' - lambda:
    x' = (sigma'/sigma) x - expm1(-h) D_hat, D_hat = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1},
    r = h_{i-1} / h_i; first order on the first step and on the last (to sigma = 0).
    """
    sig, sl = _levels(grid, x)
    n = len(sl) - 1
    x0_prev, h_prev = None, None
    for i in range(n):
        s, s_next = sl[i], sl[i + 1]
        x0 = _denoise(denoiser, x, sig[i], cond)
        if s_next == 0:
            x = x0
        else:
            h = math.log(s / s_next)
            c = -math.expm1(-h)
            if x0_prev is None:
                x = torch.add(x * (s_next / s), x0, alpha=c)
            else:
                half_r = 1 / (2 * (h_prev / h))
                x = torch.add(x * (s_next / s), x0, alpha=c * (1 + half_r)).add_(x0_prev, alpha=-c * half_r)
            h_prev = h
        x0_prev = x0
        _report(callback, i, n, x, sig, x0)
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    denoiser: Denoiser,
    x: Tensor,
    grid: Tensor,
    *,
    cond: Cond = None,
    generator: Generator = None,
    callback: Callback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """SDE-DPM-Solver++(2M), Lu et al. 2022 (arXiv 2211.01095) sec. 4 / appendix, midpoint form.

    First-order part (eta = 1): x' = (sigma'/sigma) e^{-h} x + (1 - e^{-2h}) D + sigma' sqrt(1 - e^{-2h}) z;
    eta in [0, 1] interpolates towards the ODE solver (eta = 0 is DPM-Solver++(2M)).
    """
    eta = _check_option("eta", eta)
    sig, sl = _levels(grid, x)
    n = len(sl) - 1
    x0_prev, h_prev = None, None
    for i in range(n):
        s, s_next = sl[i], sl[i + 1]
        x0 = _denoise(denoiser, x, sig[i], cond)
        if s_next == 0:
            x = x0
        else:
            h = math.log(s / s_next)
            eta_h = eta * h
            c = -math.expm1(-h - eta_h)
            x = torch.add(x * (s_next / s * math.exp(-eta_h)), x0, alpha=c)
            if x0_prev is not None:
                half_r = 0.5 * h / h_prev
                x = x.add_(x0, alpha=c * half_r).add_(x0_prev, alpha=-c * half_r)
            if eta > 0:
                x = x.add_(randn_like(x, generator), alpha=s_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise)
            h_prev = h
        x0_prev = x0
        _report(callback, i, n, x, sig, x0)
    return x


@torch.no_grad()
def sample_pc_langevin(
    denoiser: Denoiser,
    x: Tensor,
    grid: Tensor,
    *,
    cond: Cond = None,
    generator: Generator = None,
    callback: Callback | None = None,
    snr: float = 0.16,
    corrector_steps: int = 1,
    norm: str = "sample",
) -> Tensor:
    """Predictor-corrector sampling, Song et al. 2021 (Algorithms 2 and 4), VE form.

    At each level: ``corrector_steps`` Langevin steps x += e g + sqrt(2e) z with the score
    g = (D(x, s) - x) / s^2 and e = 2 (snr ||z|| / ||g||)^2 (per sample); then the reverse
    diffusion predictor x' = x + (s^2 - s'^2) g + sqrt(s^2 - s'^2) z (no noise on the step to 0).

    ``norm="sample"`` takes ||g|| and ||z|| per sample, so an image does not depend on its
    batch; this suits images, where the norms of many dimensions concentrate. For
    low-dimensional data the per-sample ratio is heavy-tailed (||g|| vanishes near a mode
    and the step explodes): ``norm="batch"`` averages the norms over the batch as Song et
    al.'s reference code does, at the price of batch independence.
    """
    if norm not in ("sample", "batch"):
        raise ValueError(f"norm must be 'sample' or 'batch', got {norm!r}")
    snr = _check_option("snr", snr)
    if int(corrector_steps) != corrector_steps or corrector_steps < 0:
        raise ValueError(f"corrector_steps must be an integer >= 0, got {corrector_steps!r}")
    sig, sl = _levels(grid, x)
    n = len(sl) - 1
    B = x.shape[0]
    for i in range(n):
        s, s_next = sl[i], sl[i + 1]
        # 1. Corrector: Langevin MCMC at the current level (Algorithm 4).
        for _ in range(int(corrector_steps)):
            g = (_denoise(denoiser, x, sig[i], cond) - x) / s**2
            z = randn_like(x, generator)
            g_norm = g.reshape(B, -1).norm(dim=1)
            z_norm = z.reshape(B, -1).norm(dim=1)
            if norm == "batch":
                g_norm, z_norm = g_norm.mean().expand(B), z_norm.mean().expand(B)
            step = 2 * (snr * z_norm / g_norm.clamp(min=1e-20)) ** 2
            step = step.reshape(B, *([1] * (x.ndim - 1)))
            x = x + step * g + (2 * step).sqrt() * z
        # 2. Predictor: one step of the reverse-time VE SDE (reverse diffusion, Algorithm 2).
        x0 = _denoise(denoiser, x, sig[i], cond)
        x = torch.lerp(x, x0, (s**2 - s_next**2) / s**2)  # x + (s^2 - s'^2) (x0 - x) / s^2
        if s_next > 0:
            x = x.add_(randn_like(x, generator), alpha=math.sqrt(s**2 - s_next**2))
        _report(callback, i, n, x, sig, x0)
    return x
