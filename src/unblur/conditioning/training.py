"""The training side: per-item contexts of a data set, precomputed once, and batch contexts
with condition dropout."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..config import Config
from ..types import Cond, Generator
from .base import KINDS, Items
from .contexts import drop_cond, null_cond


class Conditioner:
    """Per-item contexts of a data set, precomputed once, and the batch contexts of training.

    ``tables`` holds one ``Items`` per kind that ``cfg.cond`` turns on, in registry order.
    """

    def __init__(self, cfg: Config, data, out: str | Path, device: torch.device, *, progress: bool = True):
        self.cfg, self.device = cfg, device
        self.p = float(cfg.cond.dropout)
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"cond.dropout must be in [0, 1], got {cfg.cond.dropout}")
        self.tables: dict[str, Items] = {
            kind.name: kind.items(cfg, data, out, device, progress=progress)
            for kind in KINDS.values() if kind.enabled(cfg)
        }
        self.info: dict = {k: v for table in self.tables.values() for k, v in table.info.items()}
        self.num_classes = max((t.num_classes for t in self.tables.values()), default=0)

    @property
    def active(self) -> bool:
        return bool(self.tables)

    def items(self, idx: Tensor) -> Cond:
        """The context of the items ``idx`` (a LongTensor on the device), before dropout."""
        if not self.active:
            return None
        return {k: v for table in self.tables.values() for k, v in table.items(idx).items()}

    def batch(self, idx: Tensor, generator: Generator) -> Cond:
        """The training context of the items ``idx``, with condition dropout applied."""
        return drop_cond(self.items(idx), self.p, generator, self.num_classes)

    @property
    def guidance(self) -> float:
        """The guidance of training grids: the configured scale for class or text, 1 for images only."""
        if not any(t.guides for t in self.tables.values()):
            return 1.0
        return float(self.cfg.cond.guidance)

    def null(self, cond: Cond) -> Cond:
        return null_cond(cond, self.num_classes)

    def grid_cond(self, n: int) -> Cond:
        """Contexts of a training grid: the classes in turn, and captions / images spread over the data."""
        if not self.active:
            return None
        N = len(next(iter(self.tables.values())))
        idx = torch.linspace(0, N - 1, n).round().long().to(self.device)  # (n,)
        return {k: v for table in self.tables.values() for k, v in table.grid(idx, n).items()}
