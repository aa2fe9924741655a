"""Build a network from its kind and config, count its parameters and its FLOPs."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..utils import choice_error
from .counting import count_parameters, forward_flops
from .mlp import MLPConfig, MLPDenoiserNet
from .unet import UNet, UNetConfig

__all__ = ["NETS", "build_net", "config_from_dict", "count_parameters", "forward_flops"]

NETS: dict[str, tuple[type, type[nn.Module]]] = {
    "unet": (UNetConfig, UNet),
    "mlp": (MLPConfig, MLPDenoiserNet),
}


def config_from_dict(cls: type, d: Mapping[str, Any]):
    """A config dataclass from a mapping (e.g. JSON): unknown keys are errors, lists -> tuples."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in d.items():
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(
                f"unknown {cls.__name__} key {key!r}{hint}; accepted: {', '.join(names)}"
            )
        hint = typing.get_type_hints(cls)[key]
        if isinstance(value, list) and "tuple" in str(hint):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def build_net(kind: str, cfg: Any = None) -> nn.Module:
    """``build_net("unet", UNetConfig(...))`` or ``build_net("mlp", {"dim": 2})``."""
    if kind not in NETS:
        raise choice_error("network kind", kind, NETS)
    cfg_cls, net_cls = NETS[kind]
    if cfg is None:
        cfg = cfg_cls()
    elif isinstance(cfg, Mapping):
        cfg = config_from_dict(cfg_cls, cfg)
    elif not isinstance(cfg, cfg_cls):
        raise TypeError(f"build_net({kind!r}) needs a {cfg_cls.__name__} or a dict, got {cfg!r}")
    return net_cls(cfg)
