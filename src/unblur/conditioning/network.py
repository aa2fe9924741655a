"""The network of a run: the U-Net with the inputs of every conditioning kind the run turns on."""

from __future__ import annotations

import dataclasses

from torch import nn

from ..config import Config
from .base import KINDS
from .text import text_dim_of

__all__ = ["condition_net", "text_dim_of"]


def condition_net(cfg: Config, data_info, ucfg) -> nn.Module:
    """The U-Net of ``ucfg`` (a ``UNetConfig``) with the class, text and image inputs that
    ``cfg.cond`` asks for, each kind's ``unet_changes`` applied and its ``wrap_net`` around it.

    ``data_info`` is the run's data description (``class_names``, ``text_dim``, ``source``).
    """
    from ..nets import UNet

    kinds = [kind for kind in KINDS.values() if kind.enabled(cfg)]
    changes: dict = {}
    for kind in kinds:
        changes.update(kind.unet_changes(cfg, data_info, ucfg))
    net: nn.Module = UNet(dataclasses.replace(ucfg, **changes))
    for kind in kinds:
        net = kind.wrap_net(cfg, net)
    return net
