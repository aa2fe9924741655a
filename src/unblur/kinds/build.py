"""How a config and a data description become a network (by the model kind), a forward
process (by the process registry) and a denoiser (by the process's preconditioning row)."""

from __future__ import annotations

from torch import nn

from ..config import Config
from ..precond import ColdPrecond, ContinuousVPPrecond, EDMPrecond, VPPrecond
from ..processes import get_process
from ..types import DataInfo, Denoiser, Process


def build_net(cfg: Config, data_info: DataInfo) -> nn.Module:
    """The network of ``cfg``'s model kind for the data (``ModelKind.build_net``)."""
    from .base import kind_of

    return kind_of(cfg).build_net(cfg, data_info)


def build_process(cfg: Config, data_info: DataInfo | None = None) -> Process:
    """The forward process ``cfg.process.kind`` names, by its factory in ``processes.PROCESSES``;
    a cold process takes the image shape and the fitted start statistics from the data, and a
    degradation that mixes in a second data set (blend) has it read by ``blend_images``."""
    return get_process(cfg.process.kind)(cfg, data_info, read_data=blend_images)


def blend_images(source: str, shape: tuple[int, ...] | None):
    """The second data set of the blend process, at the model's image shape (C, H, W)."""
    from ..data import load_data

    if shape is None or len(shape) != 3:
        raise ValueError("the blend process needs the model's image shape to load its second data set")
    C, H, W = shape
    x = load_data(source, size=(H, W), channels=C).x
    if x.ndim != 4:
        raise ValueError(f"--blend-data {source!r} holds vectors, not images")
    return x


def data_info_of(data) -> DataInfo:
    """What a run must remember about its data to build and sample the same network."""
    import hashlib

    shape = (data.channels, *data.image_size) if data.kind == "image" else (data.dim,)
    digest = hashlib.sha256(data.x.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    return DataInfo(kind=data.kind, shape=tuple(shape), source=str(data.source), num_items=len(data),
                    class_names=tuple(data.class_names) if data.class_names else None, fingerprint=digest)


# The network -> denoiser wrapper of each preconditioning row a process names (``process.precond``).
PRECONDS = {
    "vp": lambda net, process, cfg: VPPrecond(net, process, cfg.objective.prediction),
    "vp-continuous": lambda net, process, cfg: ContinuousVPPrecond(net, process, cfg.objective.prediction),
    "edm": lambda net, process, cfg: EDMPrecond(net, process.sigma_data),
    "cold": lambda net, process, cfg: ColdPrecond(net, process),
}


def build_denoiser(cfg: Config, net: nn.Module, process: Process) -> Denoiser:
    """The network as a Denoiser D(x, level, cond) through its process's preconditioning."""
    return PRECONDS[process.precond](net, process, cfg)
