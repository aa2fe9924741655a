"""Samplers registered by name, and ``generate``: grid + prior + sampler in one call.

To add a sampler: its function in ``samplers.py`` (the shared signature, its paper's equation in
the docstring) and one ``register_sampler`` line below; its name in ``config.SAMPLERS`` (a test
keeps them equal). The contract tests in ``tests/test_samplers.py`` run over ``SAMPLERS``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..processes.cold import COLD_SAMPLERS
from ..types import Callback, Cond, Denoiser, Generator, Process
from .cold import sample_cold, sample_cold_naive
from .registry import (
    SAMPLERS,
    Sampler,
    a1111_name,
    get_sampler,
    nfe,
    register_sampler,
    resolve_sampler,
    sampler_aliases,
    sampler_error,
    sampler_help,
)
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

# name, function, help; whether it draws noise (or the options that make it); its web UIs' names; its cost.
register_sampler(Sampler("ddpm", sample_ddpm, "ancestral, Ho et al. 2020 Algorithm 2", stochastic=True,
                         comfyui="ddpm"))
register_sampler(Sampler("ddim", sample_ddim, "Song et al. 2021, eta=0 deterministic",
                         noise_options={"eta": 1.0}, a1111="DDIM", comfyui="ddim"))
register_sampler(Sampler("euler", sample_euler, "probability-flow ODE, Karras et al. 2022",
                         noise_options={"churn": 10.0}, a1111="Euler", comfyui="euler"))
register_sampler(Sampler("euler-ancestral", sample_euler_ancestral, "Euler with fresh noise each step",
                         stochastic=True, a1111="Euler a", comfyui="euler_ancestral"))
register_sampler(Sampler("heun", sample_heun, "2nd order, Karras et al. 2022 Algorithm 2",
                         noise_options={"churn": 10.0}, a1111="Heun", comfyui="heun",
                         evals=lambda steps, **options: 2 * int(steps) - 1))  # 1 NFE on the last step
register_sampler(Sampler("dpmpp-2m", sample_dpmpp_2m, "DPM-Solver++(2M), Lu et al. 2022",
                         a1111="DPM++ 2M", comfyui="dpmpp_2m"))
register_sampler(Sampler("dpmpp-2m-sde", sample_dpmpp_2m_sde, "SDE-DPM-Solver++(2M), Lu et al. 2022",
                         stochastic=True, a1111="DPM++ 2M SDE", comfyui="dpmpp_2m_sde"))
register_sampler(Sampler("pc-langevin", sample_pc_langevin, "predictor-corrector, Song et al. 2021", stochastic=True,
                         evals=lambda steps, corrector_steps=1, **options: int(steps) * (1 + int(corrector_steps))))
register_sampler(Sampler("cold", sample_cold, "cold processes: Bansal et al. 2022 Algorithm 2"))
register_sampler(Sampler("cold-naive", sample_cold_naive, "cold processes: Bansal et al. 2022 Algorithm 1"))


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
    "Sampler",
    "a1111_name",
    "check_grid",
    "generate",
    "get_sampler",
    "nfe",
    "register_sampler",
    "resolve_sampler",
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
    "sampler_aliases",
    "sampler_error",
    "sampler_help",
]
