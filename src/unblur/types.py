"""The contracts every part of unblur speaks, defined once.

* ``Net``: the raw network, ``net(x_in, c_noise, cond) -> out``. It knows nothing about
  schedules; ``c_noise`` is whatever scalar per sample the preconditioning feeds it.
* ``Denoiser``: ``D(x, sigma, cond) -> x0_hat`` in "VE scale", ``x = x0 + sigma * n``.
  Every sampler, loss and guidance wrapper sees only this.
* ``Cond``: a small mapping of conditioning tensors (``"class"``, ``"text"``,
  ``"text_mask"``, ``"image"``) or ``None`` for unconditional.
* ``Process``: how clean data becomes degraded at a level (Gaussian noise or a cold
  degradation): its start draw, its training pair, its forward picture, its samplers.
* ``StepInfo``: what a sampler tells its callback after each step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


class Process(Protocol):
    """A forward process, Gaussian or cold, as every caller sees it (dispatch on the object,
    never on ``isinstance`` or a kind string).

    A *level* is what the denoiser takes as its second argument: the VE noise level sigma
    for Gaussian processes, the degradation level t in [0, 1] for cold ones.
    """

    kind: str  # the registry name: "edm", "vp", "blur", "jpeg", ...
    default_sampler: str  # the sampler used when neither the request nor the run names one
    samplers: tuple[str, ...]  # names of the samplers (``unblur.sampling.SAMPLERS``) that apply
    can_generate: bool  # whether there is an image-free start to generate from
    loss_key: str  # the ``objective`` config field naming the training loss ("loss" or "restore_loss")

    def levels(self, steps: int, grid: str) -> Tensor:
        """The decreasing 1-D grid of levels a sampler walks, ending at 0 (float64)."""
        ...

    def prior(self, shape: tuple[int, ...], generator: Generator = None, *, level: float,
              device: Any = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """A draw at ``level``, the grid's first level: the Gaussian prior or the cold start."""
        ...

    def training_pair(self, x0: Tensor, generator: Generator = None) -> tuple[Tensor, Tensor]:
        """(level (B,), x_t): levels from the process's own training distribution and the
        degraded batch at those levels, both drawn from ``generator``."""
        ...

    def picture(self, x0: Tensor, t: Tensor, generator: Generator = None) -> Tensor:
        """x0 (B, C, H, W) at the fraction t (B,) in [0, 1] of the way to fully degraded, as
        shown in a forward picture (in [-1, 1]; t = 0 is x0 exactly)."""
        ...

    def sampler_options(self) -> dict[str, Any]:
        """Keyword arguments this process's samplers need besides the shared signature."""
        ...
