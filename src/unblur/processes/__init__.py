"""Forward processes: how clean data becomes noisy (or degraded) at a given level, in closed form."""

from .gaussian import (
    SCHEDULES,
    VPSDE,
    DiscreteVP,
    EDMProcess,
    GaussianProcess,
    VEProcess,
    alpha_bar_to_sigma,
    make_betas,
    rescale_zero_terminal_snr,
    sigma_to_alpha_bar,
)
from .grids import GRIDS, ddim_grid, discrete_grid, karras_grid, logsnr_grid, make_grid

__all__ = [
    "SCHEDULES",
    "GRIDS",
    "DiscreteVP",
    "EDMProcess",
    "GaussianProcess",
    "VEProcess",
    "VPSDE",
    "alpha_bar_to_sigma",
    "ddim_grid",
    "discrete_grid",
    "karras_grid",
    "logsnr_grid",
    "make_betas",
    "make_grid",
    "rescale_zero_terminal_snr",
    "sigma_to_alpha_bar",
]
