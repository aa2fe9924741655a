"""Forward processes: how clean data becomes noisy (or degraded) at a given level, in closed form.

Every forward process is registered here by name (``PROCESSES``, the ``process.kind`` choices)
as a factory from a run's config (``processes.registry``); every cold degradation of
``processes.degradations.DEGRADATIONS`` is one. To add a process: its file in this package and
one ``register_process`` line below.
"""

from .cold import ColdProcess, cold_from_config
from .degradations import DEGRADATIONS
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
from .registry import PROCESSES, DataReader, ProcessFactory, get_process, register_process

register_process("edm", EDMProcess.from_config)
register_process("vp", DiscreteVP.from_config)
for _name in DEGRADATIONS:  # a cold process per degradation, under the degradation's name
    register_process(_name, cold_from_config)


def gaussian_processes() -> tuple[str, ...]:
    """The registered processes that are no cold degradation ("edm", "vp", ...)."""
    return tuple(name for name in PROCESSES if name not in DEGRADATIONS)


__all__ = [
    "DEGRADATIONS",
    "SCHEDULES",
    "GRIDS",
    "PROCESSES",
    "ColdProcess",
    "DataReader",
    "DiscreteVP",
    "EDMProcess",
    "GaussianProcess",
    "ProcessFactory",
    "VEProcess",
    "VPSDE",
    "alpha_bar_to_sigma",
    "cold_from_config",
    "ddim_grid",
    "discrete_grid",
    "gaussian_processes",
    "get_process",
    "karras_grid",
    "logsnr_grid",
    "make_betas",
    "make_grid",
    "register_process",
    "rescale_zero_terminal_snr",
    "sigma_to_alpha_bar",
]
