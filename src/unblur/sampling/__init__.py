"""Samplers registered by name, and ``generate``: grid + prior + sampler in one call."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..types import Callback, Cond, Denoiser, Generator, Process
from ..utils import choice_error
from .cold import COLD_SAMPLERS, sample_cold, sample_cold_naive
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
    process: Process,
    sampler: str | None = None,
    steps: int = 20,
    grid: str | Tensor = "karras",
    cond: Cond = None,
    generator: Generator = None,
    callback: Callback | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    **options,
) -> Tensor:
    """Draw samples: the process's grid of levels, a draw from its prior (or cold start) at the
    first level, then the sampler.

    ``sampler`` defaults to the process's own; a sampler that does not apply to the process
    (a Gaussian sampler on a cold process, or the reverse) is an error that names the ones that
    do. Returns x0 in VE scale (the data scale) of shape ``shape``.
    """
    sampler = sampler or process.default_sampler
    fn = get_sampler(sampler)
    if sampler not in process.samplers:
        raise ValueError(f"the {sampler} sampler does not apply to the {process.kind} process; use one of: "
                         f"{', '.join(process.samplers)}")
    levels = process.levels(steps, grid) if isinstance(grid, str) else check_grid(grid).to(torch.float64)
    start_options = {k: options.pop(k) for k in ("start_noise",) if k in options}
    x = process.prior(shape, generator, level=float(levels[0]), device=device, dtype=dtype, **start_options)
    return fn(denoiser, x, levels, cond=cond, generator=generator, callback=callback, **process.sampler_options(),
              **options)


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
