"""The forward processes by name (``process.kind``), as factories from a run's config.

A factory is ``factory(cfg, data_info=None, *, read_data=None) -> Process``: it reads its
options from ``cfg`` (a ``Config``), the data's shape and fitted start statistics from
``data_info`` (a ``DataInfo``; None before the data is known), and, where the process mixes in
a second data set (blend), reads it with ``read_data(source, shape) -> Tensor``, which the
caller supplies because the data readers sit above this package. ``build_process``
(``unblur.kinds.build``) looks the kind up here and nothing else.

To add a forward process: one file in ``processes/`` with its class (implementing
``unblur.types.Process``) and its factory, and one ``register_process`` line in
``processes/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from torch import Tensor

from ..utils import choice_error

if TYPE_CHECKING:
    from ..config import Config
    from ..types import DataInfo, Process

DataReader = Callable[[str, "tuple[int, ...] | None"], Tensor]
"""``read_data(source, shape)``: the images of a data source at the model's shape (C, H, W)."""


class ProcessFactory(Protocol):
    """Builds one kind of forward process from a run's config (see the module doc)."""

    def __call__(self, cfg: Config, data_info: DataInfo | None = None, *,
                 read_data: DataReader | None = None) -> Process: ...


PROCESSES: dict[str, ProcessFactory] = {}
"""Every forward process by name, in registration order (the ``process.kind`` choices)."""


def register_process(name: str, factory: ProcessFactory) -> ProcessFactory:
    """Add a forward process to ``PROCESSES`` under ``name``."""
    if not name or name in PROCESSES:
        raise ValueError(f"a forward process needs a new name, got {name!r} (taken: {', '.join(PROCESSES)})")
    if not callable(factory):
        raise TypeError(f"process {name!r} needs a factory factory(cfg, data_info) -> Process, got {factory!r}")
    PROCESSES[name] = factory
    return factory


def get_process(name: str) -> ProcessFactory:
    """The factory registered under ``name`` (a ValueError listing the names otherwise)."""
    try:
        return PROCESSES[name]
    except KeyError:
        raise choice_error("process", name, PROCESSES) from None
