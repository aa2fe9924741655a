"""How a config and a data description become a network, a process and a denoiser."""

from __future__ import annotations

from torch import nn

from ..config import Config
from ..types import DataInfo


def build_net(cfg: Config, data_info: DataInfo) -> nn.Module:
    """The network of ``cfg``'s model kind for the data (``ModelKind.build_net``)."""
    from .base import kind_of

    return kind_of(cfg).build_net(cfg, data_info)


def build_process(*args, **kwargs):
    from ..runs.build import build_process as f

    return f(*args, **kwargs)


def build_denoiser(*args, **kwargs):
    from ..runs.build import build_denoiser as f

    return f(*args, **kwargs)


def data_info_of(*args, **kwargs):
    from ..runs.build import data_info_of as f

    return f(*args, **kwargs)
