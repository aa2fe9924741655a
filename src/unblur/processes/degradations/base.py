"""The contract of a cold-diffusion degradation, and the registry that holds them.

Bansal et al. 2022, "Cold Diffusion: Inverting Arbitrary Image Transforms Without Noise"
(arXiv 2208.09392): a degradation is a closed form x_t = D(x0, t) for a continuous level t in
[0, 1], with D(x0, 0) = x0. A degradation here is one small frozen dataclass whose fields are
its options; ``ColdProcess`` (``processes/cold.py``) wraps it and does what every degradation
shares: it checks the images and the levels, draws the random layer, returns x0 exactly at
t = 0 and restores the input's dtype. So ``Degradation.degrade`` only ever sees images
(B, C, H, W) and levels t (B,) already checked, in the working precision (``wide``).

A new degradation is one file in this package and one ``register`` line in its
``__init__.py``; the contract tests run over the registry.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor

from ...types import Generator
from ...utils import choice_error


def wide(device: torch.device | str | None) -> torch.dtype:
    """The working precision of the degradations: float64, or float32 on Apple's MPS (which has no float64)."""
    return torch.float32 if torch.device(device or "cpu").type == "mps" else torch.float64


def full_level(x: Tensor) -> Tensor:
    """The level t = 1 for every image of x, (B,) in the working precision on x's device."""
    return torch.ones(x.shape[0], dtype=wide(x.device), device=x.device)


class Degradation:
    """Base of the degradations: subclasses are ``@dataclass(frozen=True, kw_only=True)``.

    Class attributes (what callers dispatch on, never on the name):
        name: the registry name (``process.kind``).
        options: field -> ``ProcessConfig`` key it is read from (``process.KEY``).
        stochastic: ``degrade`` needs a random layer (``draw_layer``).
        layer_linear: x_t is linear in the layer, so ``layer_of`` recovers it from x_t and an
            estimate of x0 (the samplers re-degrade with it); a stochastic degradation that is
            not linear in its layer is re-degraded with one layer drawn for the whole walk.
        can_generate: there is an image-free start at t = 1 (``start``).
        level_estimable: a degraded image's level can be found by re-degrading restorations
            (not where an unknown random layer explains any level: noise, blend).
        prediction: the row of ``unblur.precond.coefficients`` a restorer over it uses, at
            the noise level ``precond_sigma(t)``.
        restore_sampler: how ``unblur restore`` restores by default: ``cold`` (Algorithm 2's
            walk) for degradations smooth in t, ``one-shot`` (R(x_t, t)) where re-degrading
            adds artefacts of its own (jpeg: the walk adds the difference of two JPEG
            encodings at every step, -3 dB at t = 0.7 on the digits, where one-shot gains +3 dB).
        inpaints: it masks pixels (``mask(t, size, device)`` the masked fraction at level t,
            ``fill`` their value), so its restorer fills a user's mask (``editing.cold_inpaint``).
        partner_data: the ``ProcessConfig`` key naming a second data set whose images it mixes
            in (blend), read by the caller and passed as ``others``; None: it needs none.
    """

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, str]] = {}
    stochastic: ClassVar[bool] = False
    layer_linear: ClassVar[bool] = False
    can_generate: ClassVar[bool] = False
    level_estimable: ClassVar[bool] = True
    prediction: ClassVar[str] = "residual"
    restore_sampler: ClassVar[str] = "cold"
    inpaints: ClassVar[bool] = False
    partner_data: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        self.check()

    # -- options --------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, p: Any, **data: Any) -> Degradation:
        """The degradation with its options read from the ``ProcessConfig`` ``p`` (validated);
        ``data``: fields that are not config keys (e.g. blend's partner images)."""
        return cls(**{f: getattr(p, key) for f, key in cls.options.items()}, **data)

    def check(self) -> None:
        """Raise ValueError naming ``process.KEY`` and the bad value of any invalid option."""

    def bad_option(self, option: str, expected: str) -> ValueError:
        """The error for an invalid option: its config key, its value and what it must be."""
        return ValueError(f"process.{self.options[option]} must be {expected}, got {getattr(self, option)!r}")

    def check_choice(self, option: str, choices: tuple[str, ...]) -> None:
        if getattr(self, option) not in choices:
            raise choice_error(f"process.{self.options[option]}", getattr(self, option), choices)

    def check_shape(self, shape: tuple[int, ...], *, for_model: bool) -> None:
        """Raise ValueError if images of ``shape`` (C, H, W) cannot be degraded (``for_model``:
        or if a model over them would have nothing to learn)."""

    # -- the forward process --------------------------------------------------------------------
    def degrade(self, x0: Tensor, t: Tensor, layer: Tensor | None = None) -> Tensor:
        """x_t for x0 (B, C, H, W) at checked levels t (B,); ``layer`` when ``stochastic``."""
        raise NotImplementedError

    def draw_layer(self, x0: Tensor, generator: Generator = None) -> Tensor:
        """The random layer of a stochastic degradation for the images x0, from ``generator``."""
        raise ValueError(f"the {self.name} degradation is deterministic and has no random layer")

    def layer_of(self, x_t: Tensor, x0_hat: Tensor, t: Tensor) -> Tensor | None:
        """The layer implied by x_t and an estimate of x0 at levels t (B,) where ``layer_linear``, else None."""
        return None

    def precond_sigma(self, t: Tensor) -> Tensor:
        """The noise level at which a restorer's coefficients are read (the level itself by default)."""
        return t

    # -- the start of generation ----------------------------------------------------------------
    def fit_start(self, x: Tensor, **options: Any) -> dict:
        """Statistics of the training images x (N, C, H, W) that ``start`` needs (none by default)."""
        return {}

    def start(self, shape: tuple[int, ...], generator: Generator = None, *, device: Any = None,
              dtype: torch.dtype = torch.float32, stats: dict | None = None,
              start_noise: float | None = None) -> Tensor:
        """A fully degraded x_1 (B, C, H, W) to generate from, where ``can_generate``."""
        raise ValueError(f"the {self.name} degradation does not destroy the image at t = 1, so there is no "
                         "image-free start to generate from: use `unblur restore` on degraded images instead")


DEGRADATIONS: dict[str, type[Degradation]] = {}
"""Every degradation by name, in registration order (``COLD_PROCESSES``)."""


def register(cls: type[Degradation]) -> type[Degradation]:
    """Add a degradation class to ``DEGRADATIONS`` under its ``name``."""
    if not cls.name or cls.name in DEGRADATIONS:
        raise ValueError(f"a degradation needs a new name, got {cls.name!r} (taken: {', '.join(DEGRADATIONS)})")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"degradation {cls.name!r} must be a dataclass (its fields are its options)")
    DEGRADATIONS[cls.name] = cls
    return cls


def get_degradation(name: str) -> type[Degradation]:
    """The degradation class registered under ``name`` (a ValueError listing the names otherwise)."""
    try:
        return DEGRADATIONS[name]
    except KeyError:
        raise choice_error("cold process", name, DEGRADATIONS) from None
