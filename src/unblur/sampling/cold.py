"""Cold-diffusion samplers (Bansal et al. 2022), restoration and level estimation.

Both samplers share the Gaussian samplers' signature, with the process as an option::

    sample_cold(restorer, x, grid, *, process, cond=None, generator=None, callback=None) -> x0

``x`` is the degraded image at level ``grid[0]`` (<= 1), ``grid`` a decreasing 1-D tensor of
levels ending at 0, ``restorer`` a Denoiser ``R(x_t, t, cond) -> x0_hat``. No state survives
a call. Where the degradation draws a random layer, both samplers re-degrade with one layer
for the whole walk: the one implied by x_s and x0_hat where x_s is linear in it (noise:
the samplers then reduce to DDIM; blend), else one drawn once from ``generator`` (snow).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..processes.cold import COLD_SAMPLERS as COLD_SAMPLERS  # the names below (re-exported)
from ..processes.cold import ColdProcess
from ..types import Callback, Cond, Denoiser, Generator, StepInfo
from ..utils import mean_flat
from .samplers import check_grid


def _walk(restorer: Denoiser, x: Tensor, grid: Tensor, process: ColdProcess, cond: Cond, generator: Generator,
          callback: Callback | None, improved: bool) -> Tensor:
    name = "cold" if improved else "cold-naive"
    if name not in process.samplers:
        raise ValueError(f"the {name} sampler does not apply to the {process.kind} process; use one of: "
                         f"{', '.join(process.samplers)}")
    g = check_grid(grid)
    if float(g[0]) > 1:
        raise ValueError(f"cold levels lie in [0, 1]; the grid starts at {float(g[0])}")
    levels = g.double().tolist()
    # A stochastic degradation not linear in its layer (snow) re-degrades with one layer drawn
    # for the whole walk; one linear in it (noise, blend) with the layer implied at each step.
    fixed_layer = process.draw_layer(x, generator) if process.stochastic and not process.layer_linear else None
    n = len(levels) - 1
    for i in range(n):
        s, s_next = levels[i], levels[i + 1]
        t = torch.full((x.shape[0],), s, device=x.device, dtype=x.dtype)
        x0 = restorer(x, t, cond)  # 1. R(x_s, s) = x0_hat
        layer = process.layer_of(x, x0, s) if process.layer_linear else fixed_layer
        if improved:
            # 2. Algorithm 2: x_{s-1} = x_s - D(x0_hat, s) + D(x0_hat, s-1).
            x = x - process.degrade(x0, s, layer=layer) + process.degrade(x0, s_next, layer=layer)
        else:
            # 2. Algorithm 1: x_{s-1} = D(x0_hat, s-1).
            x = process.degrade(x0, s_next, layer=layer)
        if callback is not None:
            callback(StepInfo(step=i, total=n, x=x, sigma=g[i], sigma_next=g[i + 1], x0_hat=x0))
    return x


@torch.no_grad()
def sample_cold(restorer: Denoiser, x: Tensor, grid: Tensor, *, process: ColdProcess, cond: Cond = None,
                generator: Generator = None, callback: Callback | None = None) -> Tensor:
    """Improved cold sampling, Algorithm 2 of Bansal et al.: x_{s-1} = x_s - D(x0_hat, s) + D(x0_hat, s-1)."""
    return _walk(restorer, x, grid, process, cond, generator, callback, improved=True)


@torch.no_grad()
def sample_cold_naive(restorer: Denoiser, x: Tensor, grid: Tensor, *, process: ColdProcess, cond: Cond = None,
                      generator: Generator = None, callback: Callback | None = None) -> Tensor:
    """Naive cold sampling, Algorithm 1 of Bansal et al.: x_{s-1} = D(R(x_s, s), s-1)."""
    return _walk(restorer, x, grid, process, cond, generator, callback, improved=False)


COLD_SAMPLER_FNS = {"cold": sample_cold, "cold-naive": sample_cold_naive}  # by COLD_SAMPLERS (a test keeps them so)


def level_grid(level: float, steps: int) -> Tensor:
    """Uniform levels from ``level`` to 0, with about ``steps * level`` steps (at least 1)."""
    if not 0 < level <= 1:
        raise ValueError(f"the level must lie in (0, 1], got {level}")
    n = max(1, math.ceil(steps * level - 1e-9))
    return torch.linspace(level, 0.0, n + 1, dtype=torch.float64)


def generate_cold(restorer: Denoiser, shape: tuple[int, ...], *, process: ColdProcess, sampler: str = "cold",
                  steps: int = 20, cond: Cond = None, generator: Generator = None, callback: Callback | None = None,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  start_noise: float | None = None) -> Tensor:
    """Generate from a fully degraded start (``process.start``) by walking levels 1 -> 0."""
    if sampler not in COLD_SAMPLER_FNS:
        from ..utils import choice_error

        raise choice_error("sampler for a cold process", sampler, COLD_SAMPLER_FNS)
    if sampler not in process.samplers:
        raise ValueError(f"the {sampler} sampler does not apply to the {process.kind} process; use one of: "
                         f"{', '.join(process.samplers)}")
    x = process.start(shape, generator, device=device, dtype=dtype, start_noise=start_noise)
    return COLD_SAMPLER_FNS[sampler](restorer, x, level_grid(1.0, steps), process=process, cond=cond,
                                     generator=generator, callback=callback)


@torch.no_grad()
def restore(restorer: Denoiser, x_t: Tensor, level: float | Tensor, *, process: ColdProcess, sampler: str = "cold",
            steps: int = 20, cond: Cond = None, generator: Generator = None,
            callback: Callback | None = None) -> Tensor:
    """Restore degraded images x_t (B, C, H, W) from ``level`` (a scalar or one per image, (B,)).

    ``sampler="one-shot"`` returns R(x_t, level) directly; ``cold`` and ``cold-naive`` walk
    about ``steps * level`` steps down to 0. Images sharing a level are restored together.
    """
    level = torch.as_tensor(level, dtype=torch.float64).reshape(-1).cpu()
    if level.numel() == 1:
        level = level.expand(x_t.shape[0])
    out = torch.empty_like(x_t)
    for lv in sorted(set(level.tolist())):
        idx = (level == lv).nonzero()[:, 0].to(x_t.device)
        xi = x_t[idx]
        ci = None if cond is None else {k: v[idx] for k, v in cond.items()}
        if lv == 0:
            out[idx] = xi
        elif sampler == "one-shot":
            out[idx] = restorer(xi, torch.full((len(xi),), lv, device=xi.device, dtype=xi.dtype), ci)
        else:
            if sampler not in COLD_SAMPLER_FNS:
                from ..utils import choice_error

                raise choice_error("restoration sampler", sampler, (*COLD_SAMPLER_FNS, "one-shot"))
            out[idx] = COLD_SAMPLER_FNS[sampler](restorer, xi, level_grid(lv, steps), process=process, cond=ci,
                                                 generator=generator, callback=callback)
    return out


@torch.no_grad()
def estimate_level(restorer: Denoiser, x: Tensor, *, process: ColdProcess, candidates: int = 20,
                   cond: Cond = None) -> Tensor:
    """Each image's degradation level (B,): the candidate t whose restoration re-degrades
    closest to the image, argmin_t || D(R(x, t), t) - x ||^2 over ``candidates`` levels in (0, 1].

    The degradation must not need an unknown random layer (not noise, not blend).
    """
    if not process.level_estimable:
        raise ValueError(f"the level of a {process.kind} degradation cannot be estimated by re-degrading "
                         "(any level explains the image): give --level")
    levels = torch.linspace(1.0 / candidates, 1.0, candidates, dtype=torch.float64)
    errs = []
    for lv in levels.tolist():
        t = torch.full((x.shape[0],), lv, device=x.device, dtype=x.dtype)
        x0 = restorer(x, t, cond)
        errs.append(mean_flat((process.degrade(x0, lv) - x).double() ** 2).cpu())
    return levels[torch.stack(errs, 1).argmin(1)]
