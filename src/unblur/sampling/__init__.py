"""Samplers registered by name, and ``generate``: grid + prior + sampler in one call."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

import torch
from torch import Tensor

from ..types import Callback, Cond, Denoiser, Generator, Process
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


# The names AUTOMATIC1111's web UI and ComfyUI give the samplers (matched case-insensitively,
# runs of spaces as one): name -> (sampler, grid or None). A "Karras" name also asks for the
# Karras grid.
SAMPLER_ALIASES: dict[str, tuple[str, str | None]] = {
    "euler a": ("euler-ancestral", None),  # AUTOMATIC1111
    "dpm++ 2m": ("dpmpp-2m", None),
    "dpm++ 2m karras": ("dpmpp-2m", "karras"),
    "dpm++ 2m sde": ("dpmpp-2m-sde", None),
    "dpm++ 2m sde karras": ("dpmpp-2m-sde", "karras"),
    "euler_ancestral": ("euler-ancestral", None),  # ComfyUI
    "dpmpp_2m": ("dpmpp-2m", None),
    "dpmpp_2m_sde": ("dpmpp-2m-sde", None),
}


def _squash(name: str) -> str:
    """A name with case, spaces, dashes and underscores gone and "++" read as "pp": the key near misses share."""
    return re.sub(r"[\s_-]+", "", name.lower().replace("++", "pp"))


def sampler_error(name: str) -> ValueError:
    """An unknown sampler name: the one it nearly spells (ignoring case, spaces, dashes and
    underscores, "++" as "pp"), else the closest by spelling, and every accepted name."""
    def offer(key: str) -> str:  # the sampler an alias names, or the alias itself where it picks a grid too
        sampler, grid = SAMPLER_ALIASES.get(key, (key, None))
        return key if grid else sampler

    by_squash = {_squash(k): offer(k) for k in [*SAMPLERS, *SAMPLER_ALIASES]}
    near = by_squash.get(_squash(name))
    if near is None:  # "euler ancestal": the closest spelling, the "a" / SDE variants kept apart from their namesakes
        close = difflib.get_close_matches(name.lower(), [*SAMPLERS, *SAMPLER_ALIASES], n=1, cutoff=0.75)
        near = offer(close[0]) if close else None
    hint = f" (did you mean {near!r}?)" if near else ""
    aliases = ", ".join(f"{k!r}" for k in SAMPLER_ALIASES)
    return ValueError(f"unknown sampler {name!r}{hint}; accepted: {', '.join(SAMPLERS)}, and the web UIs' names "
                      f"{aliases} (any case; 'DPM++ 2M Karras' and 'DPM++ 2M SDE Karras' also pick the karras grid)")


def resolve_sampler(name: str) -> tuple[str, str | None]:
    """(sampler, grid or None) for a sampler name or a web UI's alias ("Euler a", "DPM++ 2M Karras").

    The grid is that of a "Karras" alias and None otherwise; an unknown name is a ValueError
    with the nearest accepted one and the list.
    """
    key = " ".join(str(name).lower().split())
    if key in SAMPLERS:
        return key, None
    if key in SAMPLER_ALIASES:
        return SAMPLER_ALIASES[key]
    raise sampler_error(name)


def get_sampler(name: str) -> Callable[..., Tensor]:
    """The sampler registered under ``name`` (ValueError listing the names otherwise; an alias
    is resolved by ``resolve_sampler`` first)."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise sampler_error(name) from None


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
    "SAMPLER_ALIASES",
    "check_grid",
    "generate",
    "get_sampler",
    "nfe",
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
]
