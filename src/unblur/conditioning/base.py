"""The protocol of a conditioning kind and the registry ``KINDS`` that holds one of each.

A kind (class labels, captions, a low-resolution image, ...) owns everything about its part
of a ``Cond`` mapping:

* whether a run's config turns it on (``enabled``), from one field of ``cfg.cond``;
* its network hook: the changes it makes to the U-Net config (``unet_changes``) and an
  optional wrapper around the built network (``wrap_net``);
* its keys in a ``Cond`` (``keys``, dropped together by condition dropout) and their null
  values (``null``), which keep the keys, shapes and dtypes of a real context;
* its per-item tensors over a data set for training (``items`` -> an ``Items``);
* its sampling requests (``sampling`` -> a ``Requests``): parsing what the user asked for,
  the batch context, and what a sample's record says about it.

Adding a kind is one subclass decorated with ``@register``, one config field and the U-Net
hook it needs; the contexts' algebra, the trainer's ``Conditioner``, ``SampleContext`` and
``condition_net`` all iterate the registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..config import Config

KINDS: dict[str, Kind] = {}
"""Every registered kind by name, in registration order (the order of keys and random draws)."""


def register(cls: type[Kind]) -> type[Kind]:
    """Class decorator: add one instance of ``cls`` to ``KINDS``; its keys must be new."""
    kind = cls()
    taken = {key: other.name for other in KINDS.values() for key in other.keys}
    clash = [key for key in kind.keys if key in taken]
    if kind.name in KINDS or clash:
        raise ValueError(f"conditioning kind {kind.name!r} clashes with a registered one "
                         f"(name or keys {clash}): choose a new name and new Cond keys")
    KINDS[kind.name] = kind
    return cls


def kind_of(key: str) -> Kind:
    """The kind that owns the ``Cond`` key ``key``."""
    for kind in KINDS.values():
        if key in kind.keys:
            return kind
    known = ", ".join(sorted(k for kind in KINDS.values() for k in kind.keys))
    raise ValueError(f"unknown conditioning key {key!r}; registered keys: {known} "
                     "(a new key belongs to a kind registered in unblur.conditioning)")


def given(value: Any) -> bool:
    """Whether a sampling option was given: not None and not an empty list."""
    return value is not None and not (isinstance(value, (list, tuple)) and not value)


class Items:
    """Training side of one kind: its per-item tensors over a data set, on the device."""

    num_classes: int = 0  # the null class index (only the class kind has one)
    guides: bool = True  # whether training grids are guided with cond.guidance
    info: dict[str, Any]  # what the kind adds to the run's data description

    def __len__(self) -> int:
        raise NotImplementedError

    def items(self, idx: Tensor) -> dict[str, Tensor]:
        """The entries of the items ``idx`` (a LongTensor on the device), each with batch dim first."""
        raise NotImplementedError

    def grid(self, idx: Tensor, n: int) -> dict[str, Tensor]:
        """The entries of a training grid of ``n`` pictures spread over the items ``idx``."""
        return self.items(idx)


class Requests:
    """Sampling side of one kind: what the user asked for, parsed and checked."""

    num_classes: int = 0  # the null class index (only the class kind has one)
    choices: Sequence[Any] = ()  # the values of ``field`` asked for; samples cover every combination
    conditional: bool = False  # whether it gives the samples a context to guide towards
    guides: bool = False  # whether the default guidance is cond.guidance (else 1)

    def fill(self, i: int) -> Any:
        """The value of ``field`` for sample ``i`` when nothing was asked for."""
        return None

    def cond(self, reqs: list[dict], device: torch.device) -> dict[str, Tensor]:
        """The kind's entries of the context of a batch of requests; ``{}`` when it adds none."""
        return {}

    def negative(self, batch: int, device: torch.device) -> dict[str, Tensor]:
        """Entries that replace the null in the unconditional half (a negative prompt); ``{}``: none."""
        return {}

    def record(self, req: dict) -> dict[str, Any]:
        """What samples.jsonl says about this kind for the request ``req`` (JSON values only)."""
        return {}


class Kind:
    """One conditioning kind. Subclasses set the class attributes and override the hooks."""

    name: ClassVar[str]  # registry name, e.g. "class"
    keys: ClassVar[tuple[str, ...]]  # its Cond keys; one dropout group (dropped together)
    field: ClassVar[str | None] = None  # its per-sample request field ("class", "prompt"), if any
    options: ClassVar[tuple[str, ...]] = ()  # the SampleContext keywords it parses
    flag: ClassVar[str] = ""  # the command-line option named in "drop ..." errors
    off: ClassVar[str] = ""  # why a run without it refuses its options, e.g. "has no text conditioning"

    def enabled(self, cfg: Config) -> bool:
        """Whether ``cfg.cond`` turns this kind on (an invalid setting is a ValueError)."""
        raise NotImplementedError

    # -- network ---------------------------------------------------------------------------

    def unet_changes(self, cfg: Config, data_info, ucfg) -> dict[str, Any]:
        """The changes this kind makes to the U-Net config ``ucfg`` (a ``UNetConfig``)."""
        return {}

    def wrap_net(self, cfg: Config, net: nn.Module) -> nn.Module:
        """The built network, wrapped if the kind needs a module in front of it."""
        return net

    # -- contexts --------------------------------------------------------------------------

    def null(self, key: str, value: Tensor, *, num_classes: int) -> Tensor:
        """The null entry for ``key`` with the shape and dtype of ``value``: zeros by default."""
        return torch.zeros_like(value)

    # -- training --------------------------------------------------------------------------

    def items(self, cfg: Config, data, out: str | Path, device: torch.device, *, progress: bool) -> Items:
        """Per-item tensors of ``data`` (a ``unblur.data.Data``); caches go under ``out``."""
        raise NotImplementedError

    # -- sampling --------------------------------------------------------------------------

    def sampling(self, cfg: Config, info, device: torch.device, asked: dict[str, Any], *,
                 run: str) -> Requests | None:
        """The parsed requests of ``asked`` (this kind's options), or None when the kind is off.

        Asking a run that does not have the kind is a ValueError naming the option to drop.
        """
        if not self.enabled(cfg):
            if any(given(v) for v in asked.values()):
                raise ValueError(f"{run} {self.off}: drop {self.flag}")
            return None
        return self.requests(cfg, info, device, asked, run=run)

    def requests(self, cfg: Config, info, device: torch.device, asked: dict[str, Any], *,
                 run: str) -> Requests | None:
        """Parse and check ``asked`` for a run that has the kind (None: nothing to add)."""
        raise NotImplementedError
