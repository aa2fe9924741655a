"""What a run needs besides its network: the sampling grid it walks and the U-Net's size
multiple; the builders themselves (network, process, denoiser) are ``kinds.build``'s, named here
for the callers that open runs."""

from __future__ import annotations

from torch import nn

from ..config import Config
from ..kinds.build import PRECONDS, blend_images, build_denoiser, build_net, build_process, data_info_of
from ..processes import PROCESSES as PROCESSES  # the process.kind choices, by name (re-exported)

__all__ = ["PRECONDS", "PROCESSES", "blend_images", "build_denoiser", "build_net", "build_process", "data_info_of",
           "downsampling", "sampling_grid"]


DISCRETE_GRIDS = ("leading", "trailing", "linspace", "ddim", "full")


def sampling_grid(cfg: Config, override: str | None = None) -> str:
    """The grid a run samples on: ``override`` (a command-line ``--grid``) or ``sample.grid``.

    ``auto`` is trailing timesteps for a discrete VP model (Karras' rho-grid, made for EDM's
    sigma range, starts too coarse on a linear-beta schedule at 10 steps and fewer) and
    Karras otherwise. A run's saved discrete spacing falls back to Karras on a continuous
    process, where timestep spacings have no meaning.
    """
    if override:
        return override
    g = cfg.sample.grid
    vp = cfg.process.kind == "vp"
    if g == "auto":
        return "trailing" if vp else "karras"
    return g if vp or g not in DISCRETE_GRIDS else "karras"


def downsampling(net: nn.Module) -> int:
    """The factor a network's input H and W must be multiples of: 2^(levels - 1) for a U-Net."""
    from ..nets import UNet

    return next((2 ** (m.cfg.levels - 1) for m in net.modules() if isinstance(m, UNet)), 1)
