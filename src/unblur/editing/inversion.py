"""Inversion (an image to the noise that regenerates it), reconstruction and interpolation.

The deterministic samplers ``euler`` and ``ddim`` (eta 0) take the same step on the
probability-flow ODE (Karras et al. 2022 eq. 3; Song et al. 2021's DDIM in VE scale):
x_s' = D + (s'/s) (x_s - D) with D = D(x_s, s). Inverting one step means finding the x_s that
this step maps to a given x_s'. DDIM inversion (Song et al. 2021 sec. 4.3; Dhariwal & Nichol
2021) evaluates D at x_s' instead, which is only exact as the step size goes to 0; here that
estimate is the first of ``iterations`` fixed-point refinements of
x_s = x_s' + (1 - s'/s) (x_s - D(x_s, s)), a contraction for a denoiser whose Jacobian has
eigenvalues in [0, 1] (every Gaussian and, away from the boundaries between modes, every
mixture), so the walk down the same grid returns the image up to the fixed-point residual.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..sampling.samplers import _levels, sample_euler
from ..types import Callback, Cond, Denoiser, StepInfo


@torch.no_grad()
def invert(denoiser: Denoiser, x0: Tensor, grid: Tensor, *, cond: Cond = None, iterations: int = 3,
           tol: float = 0.0, callback: Callback | None = None) -> Tensor:
    """The state at ``grid[0]`` whose Euler (= DDIM) walk down ``grid`` returns ``x0``.

    Walks the grid upwards: each step starts from DDIM inversion's estimate and refines it by
    ``iterations`` fixed-point iterations (0 = plain DDIM inversion), stopping early once the
    largest change is below ``tol``. The callback sees each step, numbered upwards.
    """
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    sig, sl = _levels(grid, x0)
    n = len(sl) - 1
    x_low = x0
    for k, i in enumerate(reversed(range(n))):
        s, s_low = sl[i], sl[i + 1]
        c = 1 - s_low / s
        sigma = sig[i].expand(x0.shape[0])
        x = x_low
        for it in range(int(iterations) + 1):
            d = denoiser(x, sigma, cond)
            x_new = x_low + c * (x - d)
            change = float((x_new - x).abs().max()) if it else math.inf
            x = x_new
            if change <= tol:
                break
        if callback is not None:
            callback(StepInfo(step=k, total=n, x=x, sigma=sig[i + 1], sigma_next=sig[i], x0_hat=d))
        x_low = x
    return x_low


@torch.no_grad()
def reconstruct(denoiser: Denoiser, x: Tensor, grid: Tensor, *, cond: Cond = None,
                callback: Callback | None = None) -> Tensor:
    """The deterministic walk down ``grid`` from ``x`` at ``grid[0]`` (Euler = DDIM with eta 0)."""
    return sample_euler(denoiser, x, grid, cond=cond, callback=callback)


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation per sample between a and b (B, ...), t in [0, 1] (Shoemake 1985):
    sin((1 - t) w) / sin(w) a + sin(t w) / sin(w) b with w the angle between them; the norm
    moves linearly between theirs, so a Gaussian noise stays typical. Linear where w is ~0."""
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    na, nb = fa.norm(dim=1, keepdim=True), fb.norm(dim=1, keepdim=True)
    cos = ((fa / na.clamp_min(1e-30)) * (fb / nb.clamp_min(1e-30))).sum(1, keepdim=True).clamp(-1, 1)
    w = torch.arccos(cos)
    sw = torch.sin(w)
    lin = sw.abs() < 1e-6
    ca = torch.where(lin, torch.full_like(w, 1 - t), torch.sin((1 - t) * w) / torch.where(lin, 1, sw))
    cb = torch.where(lin, torch.full_like(w, t), torch.sin(t * w) / torch.where(lin, 1, sw))
    return (ca * fa + cb * fb).reshape(a.shape).to(a.dtype)


def interpolate_states(x0_a: Tensor, x_a: Tensor, x0_b: Tensor, x_b: Tensor, level: float,
                       ts: list[float]) -> Tensor:
    """States at ``level`` between two inverted images: the clean parts linearly and the noises
    (x - x0) / level spherically, x(t) = lerp(x0_a, x0_b, t) + level slerp(n_a, n_b, t).

    ``x0_*`` (B, ...) the images, ``x_*`` their inverted states; returns (len(ts), B, ...);
    t = 0 and t = 1 give back x_a and x_b up to rounding.
    """
    n_a, n_b = (x_a - x0_a) / level, (x_b - x0_b) / level
    return torch.stack([torch.lerp(x0_a, x0_b, t) + level * slerp(n_a, n_b, t) for t in ts])


def blend_denoisers(denoiser_a: Denoiser, denoiser_b: Denoiser, t: float) -> Denoiser:
    """(1 - t) D_a + t D_b: the x0 estimate between two contexts (two classes, two prompts, each
    with its own guidance), walked from one fixed noise to morph one into the other."""

    def D(x: Tensor, sigma: Tensor, cond: Cond = None) -> Tensor:
        if t == 0:
            return denoiser_a(x, sigma, cond)
        if t == 1:
            return denoiser_b(x, sigma, cond)
        return torch.lerp(denoiser_a(x, sigma, cond), denoiser_b(x, sigma, cond), t)

    return D
