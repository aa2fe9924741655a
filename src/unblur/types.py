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
    never on ``isinstance`` or a kind string). Every member is implemented by every process.

    A *level* is what the denoiser takes as its second argument: the VE noise level sigma
    for Gaussian processes, the degradation level t in [0, 1] for cold ones.
    """

    # -- what it is and how it samples ----------------------------------------------------------
    kind: str  # the registry name (``unblur.processes.PROCESSES``): "edm", "vp", "blur", "jpeg", ...
    default_sampler: str  # the sampler used when neither the request nor the run names one
    samplers: tuple[str, ...]  # names of the samplers (``unblur.sampling.SAMPLERS``) that apply
    can_generate: bool  # whether there is an image-free start to generate from
    loss_key: str  # the ``objective`` config field naming the training loss ("loss" or "restore_loss")
    precond: str  # its row of the network -> denoiser table (``unblur.kinds.build.PRECONDS``)
    sigma_data: float  # the data standard deviation EDM's coefficients assume (Karras et al. 2022, Table 1)

    # -- what it does with a user's images ------------------------------------------------------
    restores: bool  # a restorer of degraded images (``unblur restore``, PSNR/SSIM); False: a noise process
    restore_sampler: str | None  # how a restorer restores by default (cold | one-shot); None where not ``restores``
    level_estimable: bool  # a degraded image's level can be estimated by re-degrading restorations
    inpaints: bool  # a run over it fills a user's mask (inpainting, outpainting)

    def levels(self, steps: int, grid: str) -> Tensor:
        """The decreasing 1-D grid of levels a sampler walks, ending at 0 (float64)."""
        ...

    def prior(self, shape: tuple[int, ...], generator: Generator = None, *, level: float,
              device: Any = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """A draw at ``level``, the grid's first level: the Gaussian prior or the cold start."""
        ...

    def degrade(self, x0: Tensor, level: Tensor | float, generator: Generator = None, *,
                layer: Tensor | None = None) -> Tensor:
        """x0 taken to ``level`` (a scalar or (B,)) as the denoiser sees it: x0 + sigma n in VE
        scale, or the cold degradation; ``layer`` reuses a random layer (the noise n), and
        ``degrade(x0, 0)`` is x0 exactly."""
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

    def fit_start(self, x: Tensor, *, seed: int = 0) -> dict:
        """Statistics of the start of generation fitted once to the training data x (saved with
        the run as ``DataInfo.cold_start``); empty when the start needs none."""
        ...


@dataclass(frozen=True)
class DataInfo:
    """What a run remembers about its data: enough to build, sample and check the same network.

    Saved as JSON in a run's ``model.safetensors`` metadata (``to_dict``/``from_dict``; keys a
    later version added are ignored by an older reader, and missing keys take the defaults).
    """

    kind: str  # "image" | "vector"
    shape: tuple[int, ...]  # (C, H, W) or (D,)
    source: str = ""  # the data spec the run was trained on
    num_items: int = 0
    class_names: tuple[str, ...] | None = None  # from class sub-folders, labels files or built-in sets
    text_dim: int | None = None  # width of the caption features the network was built for
    cold_start: dict | None = None  # a cold process's fitted start statistics
    fingerprint: str | None = None  # a hash of the training tensor: resume refuses other data
    latent: LatentRecord | None = None  # a latent run's autoencoder (path, sha256), shift, scale, image shape
    clip: ClipRecord | None = None  # a prior's or decoder's contrastive encoder (path, sha256, width)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of the data a user sees: the images a latent run decodes to, else ``shape``."""
        return tuple(self.latent.image_shape) if self.latent is not None else self.shape

    @property
    def is_image(self) -> bool:
        return self.kind == "image"

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind, "source": self.source, "num_items": self.num_items, "shape": list(self.shape),
             "class_names": list(self.class_names) if self.class_names else None}
        if self.text_dim is not None:
            d["text_dim"] = self.text_dim
        if self.cold_start is not None:
            d["cold_start"] = self.cold_start
        if self.fingerprint is not None:
            d["fingerprint"] = self.fingerprint
        if self.latent is not None:
            d["latent"] = self.latent.to_dict()
        if self.clip is not None:
            d["clip"] = self.clip.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataInfo:
        if "kind" not in d or "shape" not in d:
            raise ValueError(f"a run's data description needs 'kind' and 'shape', got keys {sorted(d)}")
        names = d.get("class_names")
        return cls(kind=str(d["kind"]), shape=tuple(int(v) for v in d["shape"]), source=str(d.get("source", "")),
                   num_items=int(d.get("num_items", 0)), class_names=tuple(names) if names else None,
                   text_dim=d.get("text_dim"), cold_start=d.get("cold_start") or None,
                   fingerprint=d.get("fingerprint"), latent=LatentRecord.of(d.get("latent") or None),
                   clip=ClipRecord.of(d.get("clip") or None))

    # Mapping-style reads (``info["shape"]``, ``info.get("class_names")``) for code written
    # against the plain dict a run's metadata holds: values as that JSON holds them (lists, and
    # the records' dict form).
    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        value = getattr(self, key)
        if isinstance(value, (LatentRecord, ClipRecord)):
            return value.to_dict()
        return list(value) if isinstance(value, tuple) else value

    def get(self, key: str, default: Any = None) -> Any:
        value = self[key] if key in self.__dataclass_fields__ else None
        return default if value is None else value


# -- the records a run keeps of the runs it was built on (``DataInfo.latent``, ``DataInfo.clip``) --

PRIOR_ROLE, DECODER_ROLE = "prior", "decoder"  # the words a run's JSON writes for ``ClipRecord.for_prior``


def _need(d: Mapping[str, Any], keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(repr(k) for k in missing)} (it has {sorted(d)}): the run's "
                         "model.safetensors is damaged or was not written by unblur; retrain the run")


@dataclass(frozen=True)
class LatentRecord:
    """A latent run's autoencoder and the scale measured on its data (``DataInfo.latent``); the
    latents the network sees are (ae.encode(x) - shift) * scale."""

    path: str  # the autoencoder's absolute path (an unblur run or a diffusers folder); JSON key "autoencoder"
    sha256: str  # of the autoencoder's weights: opening the run checks it
    kind: str  # the autoencoder's kind (``pipelines.autoencoder.KINDS``)
    shift: float  # subtracted from the autoencoder's latents
    scale: float  # multiplies them after the shift (1 / std: unit variance)
    image_shape: tuple[int, ...]  # (C, H, W) of the images the run draws
    latent_shape: tuple[int, ...] | None = None  # (c, H / f, W / f) of the latents the network sees
    embedded: bool = False  # a copy of the autoencoder lives in the run folder (``--embed-ae``)

    def to_dict(self) -> dict[str, Any]:
        return {"autoencoder": self.path, "sha256": self.sha256, "kind": self.kind, "shift": self.shift,
                "scale": self.scale, "image_shape": list(self.image_shape),
                "latent_shape": list(self.latent_shape) if self.latent_shape is not None else None,
                "embedded": self.embedded}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatentRecord:
        _need(d, ("autoencoder", "shift", "scale", "image_shape"), "a latent run's autoencoder record")
        shape = d.get("latent_shape")
        return cls(path=str(d["autoencoder"]), sha256=str(d.get("sha256") or ""), kind=str(d.get("kind") or ""),
                   shift=float(d["shift"]), scale=float(d["scale"]),
                   image_shape=tuple(int(v) for v in d["image_shape"]),
                   latent_shape=tuple(int(v) for v in shape) if shape else None, embedded=bool(d.get("embedded")))

    @classmethod
    def of(cls, value: LatentRecord | Mapping[str, Any] | None) -> LatentRecord | None:
        """The record itself, or the record of its dict form (a resume state's ``data_info``)."""
        return cls.from_dict(value) if isinstance(value, Mapping) else value


@dataclass(frozen=True)
class ClipRecord:
    """The contrastive encoder a prior or a decoder was trained with (``DataInfo.clip``)."""

    path: str  # the encoder run's absolute path
    sha256: str  # of its model.safetensors: a chain refuses an encoder with other weights
    dim: int  # the width of its embeddings
    for_prior: bool  # True: the run is a prior (text -> image embeddings); False: a decoder (embeddings -> images)
    image_shape: tuple[int, ...] | None = None  # (C, H, W) of the images the encoder reads

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "dim": self.dim,
                "role": PRIOR_ROLE if self.for_prior else DECODER_ROLE,
                "image_shape": list(self.image_shape) if self.image_shape is not None else None}

    @staticmethod
    def is_prior_role(role: str) -> bool:
        """``for_prior`` of the word a run's JSON holds ("prior" or "decoder")."""
        if role not in (PRIOR_ROLE, DECODER_ROLE):
            raise ValueError(f"an encoder record's role is {role!r}, not {PRIOR_ROLE!r} or {DECODER_ROLE!r}: the run's "
                             "model.safetensors is damaged or was written by a newer unblur; upgrade or retrain")
        return role == PRIOR_ROLE

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClipRecord:
        _need(d, ("dim", "role"), "a prior's or decoder's encoder record")
        shape = d.get("image_shape")
        return cls(path=str(d.get("path") or ""), sha256=str(d.get("sha256") or ""), dim=int(d["dim"]),
                   for_prior=cls.is_prior_role(d["role"]), image_shape=tuple(int(v) for v in shape) if shape else None)

    @classmethod
    def of(cls, value: ClipRecord | Mapping[str, Any] | None) -> ClipRecord | None:
        """The record itself, or the record of its dict form (a resume state's ``data_info``)."""
        return cls.from_dict(value) if isinstance(value, Mapping) else value
