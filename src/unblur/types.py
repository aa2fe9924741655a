"""The contracts every part of unblur speaks, defined once.

* ``Net``: the raw network, ``net(x_in, c_noise, cond) -> out``. It knows nothing about
  schedules; ``c_noise`` is whatever scalar per sample the preconditioning feeds it.
* ``Denoiser``: ``D(x, sigma, cond) -> x0_hat`` in "VE scale", ``x = x0 + sigma * n``.
  Every sampler, loss and guidance wrapper sees only this.
* ``Cond``: a small mapping of conditioning tensors (``"class"``, ``"text"``,
  ``"text_mask"``, ``"image"``) or ``None`` for unconditional.
* ``StepInfo``: what a sampler tells its callback after each step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

Cond = Mapping[str, Tensor] | None
"""Conditioning: e.g. ``{"class": (B,), "text": (B, L, D), "text_mask": (B, L)}``."""

Generator = torch.Generator | Sequence[torch.Generator] | None
"""One generator for the batch, or one per sample (an image then does not depend on its batch)."""


class Denoiser(Protocol):
    """``D(x, sigma, cond) -> x0_hat`` with ``x = x0 + sigma * n`` and ``sigma`` of shape (B,)."""

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond = None) -> Tensor: ...


class Net(Protocol):
    """The raw network: ``net(x_in, c_noise, cond) -> out``; ``c_noise`` has shape (B,)."""

    def __call__(self, x: Tensor, c_noise: Tensor, cond: Cond = None) -> Tensor: ...


@dataclass(frozen=True)
class StepInfo:
    """One sampler step, as seen by progress bars, live previews and trajectory pictures."""

    step: int  # 0-based index of the step just taken
    total: int  # number of steps in the grid (len(grid) - 1)
    x: Tensor  # the state after the step, at noise level ``sigma_next``
    sigma: Tensor  # noise level the step started from, scalar tensor
    sigma_next: Tensor  # noise level the step ended at, scalar tensor
    x0_hat: Tensor  # the denoiser's estimate of the clean sample during the step


Callback = Callable[[StepInfo], None]
