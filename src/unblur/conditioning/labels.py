"""The class kind: ``"class"`` (B,) long, an index into the data's class names; index
``num_classes`` is the learned null class. Turned on by ``cond.classes``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import Config
from .base import Items, Kind, Requests, register
from .contexts import class_index


def no_labels(source: str) -> ValueError:
    return ValueError(
        f"cond.classes=true but {source!r} has no class labels: use a folder with one sub-folder per class, "
        "a NAME.labels.npy beside NAME.npy, or builtin:digits"
    )


class LabelItems(Items):
    """The labels of a data set (N,) on the device."""

    def __init__(self, labels: Tensor, num_classes: int) -> None:
        self.labels, self.num_classes, self.info = labels, num_classes, {}

    def __len__(self) -> int:
        return len(self.labels)

    def items(self, idx: Tensor) -> dict[str, Tensor]:
        return {"class": self.labels[idx]}  # (B,)

    def grid(self, idx: Tensor, n: int) -> dict[str, Tensor]:
        """The classes in turn."""
        return {"class": torch.arange(n, device=self.labels.device) % self.num_classes}  # (n,)


class ClassRequests(Requests):
    """Classes asked for by name or index; a class-conditional run given none draws them in turn."""

    def __init__(self, names: list[str], classes: list[int]) -> None:
        self.class_names, self.num_classes, self.choices = names, len(names), classes
        self.conditional = self.guides = self.num_classes > 0

    def fill(self, i: int) -> int | None:
        return i % self.num_classes if self.num_classes else None

    def cond(self, reqs: list[dict], device: torch.device) -> dict[str, Tensor]:
        if not self.num_classes:
            return {}
        # A request with no class (e.g. a prompt alone on a run with classes and captions) gets the null class.
        rows = [self.num_classes if r["class"] is None else r["class"] for r in reqs]
        return {"class": torch.tensor(rows, dtype=torch.long, device=device)}  # (B,)

    def record(self, req: dict) -> dict[str, Any]:
        k = req.get("class")
        return {} if k is None else {"class": k, "class_name": self.class_names[k]}


@register
class ClassKind(Kind):
    name = "class"
    keys = ("class",)
    field = "class"
    options = ("classes",)
    flag = "--class"
    off = "is not class-conditional (it was trained with cond.classes=false)"

    def enabled(self, cfg: Config) -> bool:
        return bool(cfg.cond.classes)

    def unet_changes(self, cfg: Config, data_info, ucfg) -> dict[str, Any]:
        names = data_info.get("class_names")
        if not names:
            raise no_labels(data_info["source"])
        return {"num_classes": len(names)}

    def null(self, key: str, value: Tensor, *, num_classes: int) -> Tensor:
        return torch.full_like(value, num_classes)

    def items(self, cfg: Config, data, out: str | Path, device: torch.device, *, progress: bool) -> LabelItems:
        if data.labels is None or not data.class_names:
            raise no_labels(data.source)
        return LabelItems(data.labels.to(device), len(data.class_names))

    def requests(self, cfg: Config, info, device: torch.device, asked: dict[str, Any], *,
                 run: str) -> ClassRequests:
        names = list(info.get("class_names") or [])
        return ClassRequests(names, [class_index(v, names) for v in asked.get("classes") or ()])
