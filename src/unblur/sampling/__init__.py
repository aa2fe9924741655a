"""Samplers registered by name, and ``generate``: grid + prior + sampler in one call."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..processes.gaussian import GaussianProcess
from ..processes.grids import make_grid
from ..types import Callback, Cond, Denoiser, Generator
from ..utils import choice_error, randn
from .cold import COLD_SAMPLERS, generate_cold, sample_cold, sample_cold_naive
from .samplers import (
    check_grid,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_pc_langevin,
)

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "euler-ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpmpp-2m": sample_dpmpp_2m,
    "dpmpp-2m-sde": sample_dpmpp_2m_sde,
    "pc-langevin": sample_pc_langevin,
    "cold": sample_cold,  # cold processes only (Bansal et al. Algorithm 2)
    "cold-naive": sample_cold_naive,  # cold processes only (Bansal et al. Algorithm 1)
}


def get_sampler(name: str) -> Callable[..., Tensor]:
    """The sampler registered under ``name`` (ValueError listing the names otherwise)."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise choice_error("sampler", name, SAMPLERS) from None


def nfe(name: str, steps: int, **options) -> int:
    """Denoiser evaluations a sampler makes over ``steps`` steps (the cost axis of sweeps)."""
    get_sampler(name)
    if name == "heun":
        return 2 * steps - 1
    if name == "pc-langevin":
        return steps * (1 + int(options.get("corrector_steps", 1)))
    return steps


def generate(
    denoiser: Denoiser,
    shape: tuple[int, ...],
    *,
    process: GaussianProcess,
    sampler: str = "dpmpp-2m",
    steps: int = 20,
    grid: str | Tensor = "karras",
    cond: Cond = None,
    generator: Generator = None,
    callback: Callback | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    **options,
) -> Tensor:
    """Draw samples: build the grid, draw x_T from the process's prior, run the sampler.

    Returns x0 in VE scale (the data scale) of shape ``shape``.
    """
    fn = get_sampler(sampler)
    if sampler in COLD_SAMPLERS or not isinstance(process, GaussianProcess):  # cold diffusion: levels t in [0, 1]
        return generate_cold(denoiser, shape, process=process, sampler=sampler, steps=steps, cond=cond,
                             generator=generator, callback=callback, device=device, dtype=dtype, **options)
    sigmas = make_grid(grid, steps, process) if isinstance(grid, str) else check_grid(grid)
    sigmas = sigmas.to(torch.float64)  # coefficients stay float64; samplers move levels to x.device
    x = randn(shape, generator=generator, device=device, dtype=dtype) * process.prior_std(float(sigmas[0]))
    return fn(denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, **options)


__all__ = [
    "COLD_SAMPLERS",
    "SAMPLERS",
    "check_grid",
    "generate",
    "get_sampler",
    "nfe",
    "sample_cold",
    "sample_cold_naive",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_pc_langevin",
]
