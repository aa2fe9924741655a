"""Noise-level grids for sampling: 1-D tensors of decreasing sigmas that end at 0.

A sampler never builds a schedule; it walks the grid it is given. One step goes from
``grid[i]`` to ``grid[i + 1]``; a grid of n + 1 levels is n steps.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..utils import choice_error

if TYPE_CHECKING:  # grids are built for processes; processes import grids, not the reverse
    from .gaussian import DiscreteVP, GaussianProcess

SPACINGS = ("leading", "trailing", "linspace")
GRIDS = ("karras", "logsnr", "leading", "trailing", "linspace", "ddim", "full")


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return int(steps)


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras_grid(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022 eq. 5: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho."""
    n = _check_steps(steps)
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def logsnr_grid(steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Uniform in log-SNR (= -2 log sigma) from sigma_max down to sigma_min, then 0."""
    n = _check_steps(steps)
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp())


def timesteps_for(steps: int, num_train_steps: int, spacing: str) -> Tensor:
    """Integer timestep indices (0-based, decreasing) as diffusers' schedulers space them.

    * ``leading``: 0, k, 2k, ... with k = T // n (DDIM's "uniform" sub-sequence; the
      largest index is below T - 1, so sampling starts short of the last step);
    * ``trailing``: T - 1, T - 1 - k, ... (Lin et al. 2024 table 2: starts at the last step);
    * ``linspace``: round(linspace(0, T - 1, n)).
    """
    n, T = _check_steps(steps), num_train_steps
    if n > T:
        raise ValueError(f"steps={n} exceeds the {T} training timesteps")
    if spacing == "leading":
        k = T // n
        ts = torch.arange(n) * k
    elif spacing == "trailing":
        k = T / n
        ts = (torch.arange(T, 0, -k).round() - 1).long()
        ts = ts.flip(0)
    elif spacing == "linspace":
        ts = torch.linspace(0, T - 1, n, dtype=torch.float64).round().long()
    else:
        raise choice_error("timestep spacing", spacing, SPACINGS)
    return ts.flip(0)


def discrete_grid(process: DiscreteVP, steps: int, spacing: str = "leading") -> Tensor:
    """The sigmas of a sub-sequence of a discrete schedule's timesteps, then 0."""
    ts = timesteps_for(steps, process.num_steps, spacing)
    return _append_zero(process.sigma_at(ts.to(torch.float64)))


def ddim_grid(process: DiscreteVP, steps: int) -> Tensor:
    """DDIM's uniform sub-sequence of the training timesteps (Song et al. 2021, sec. 4.2).

    tau_i = (i - 1) * (T // S) + 1 in the paper's 1-based steps: the ``leading`` spacing.
    With ``steps == T`` this is every training step, the grid on which DDPM is exact.
    """
    return discrete_grid(process, steps, "leading")


def make_grid(name: str, steps: int, process: GaussianProcess, *, rho: float = 7.0) -> Tensor:
    """A named grid for ``process``: karras, logsnr, leading, trailing, linspace, ddim, full.

    ``full`` is every training step of a discrete process (``steps`` is then ignored).
    Discrete spacings need a schedule of training steps (``process.num_steps``, a :class:`DiscreteVP`).
    """
    if name == "karras":
        return karras_grid(steps, process.sigma_min, process.sigma_max, rho)
    if name == "logsnr":
        return logsnr_grid(steps, process.sigma_min, process.sigma_max)
    if name in ("leading", "trailing", "linspace", "ddim", "full"):
        if process.num_steps is None:  # a continuous process: no training steps to space
            raise ValueError(f"grid {name!r} needs a discrete schedule; use karras or logsnr for {process!r}")
        if name == "full":
            return discrete_grid(process, process.num_steps, "leading")
        return discrete_grid(process, steps, "leading" if name == "ddim" else name)
    raise choice_error("grid", name, GRIDS)
