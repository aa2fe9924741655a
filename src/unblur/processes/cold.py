"""Cold diffusion: deterministic (or seeded) degradations instead of Gaussian noise.

Bansal et al. 2022, "Cold Diffusion: Inverting Arbitrary Image Transforms Without Noise"
(arXiv 2208.09392). Each degradation is a closed form ``degrade(x0, t, generator=None)`` for a
continuous level t in [0, 1] (a scalar or one level per sample, shape (B,)): one operation
per call, never a one-step operator applied t times, with ``degrade(x0, 0) == x0``. Images
are (B, C, H, W) of any size (square or not) in the data range [-1, 1]; the output keeps
the input's shape, dtype and device.

=============  ===============================================================================
name           x_t = degrade(x0, t)
=============  ===============================================================================
blur           Gaussian blur of width sigma(t) (pixels), reflect padding, separable
pixelate       area down-sampling to a grid that shrinks geometrically with t, nearest up-sampling
mask           x0 (1 - m_t) + fill m_t; m_t a centre rectangle, seeded random patches or a
               Gaussian fade from the border inwards (Bansal et al.'s "defading")
desaturate     (1 - t) x0 + t grey(x0), grey = ITU-R 601 luma in every channel
snow           alpha compositing of a seeded procedural snow layer whose flakes appear as t grows
blend          (1 - t) x0 + t y, y an image of a second data set (animorphosis)
noise          x0 + sigma(t) z, z ~ N(0, I): the Gaussian ("hot") case under the same trainer
jpeg           JPEG compression at quality round(100 - 95 t) (Pillow)
=============  ===============================================================================

Each is one class in ``processes/degradations/`` (the registry ``DEGRADATIONS``);
``ColdProcess`` wraps one and does what they share (checks, the random layer, x0 exactly at
t = 0, the dtype), and implements the ``Process`` protocol of ``unblur.types``.

Randomness: ``snow``, ``blend`` and ``noise`` draw a random *layer* (flake thresholds, the
partner image, z) from ``generator`` (one ``torch.Generator`` or one per sample); without a
generator, snow uses the process's fixed seed. ``degrade(..., layer=L)`` reuses a layer, and
``layer_of(x_t, x0_hat, t)`` recovers it where x_t is linear in it (blend, noise), which the
cold samplers need to re-degrade consistently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from ..types import Generator
from ..utils import append_dims, rand
from .degradations import DEGRADATIONS, Degradation, get_degradation, wide

if TYPE_CHECKING:
    from ..config import Config
    from ..types import DataInfo
    from .registry import DataReader

COLD_PROCESSES = tuple(DEGRADATIONS)
COLD_SAMPLERS = ("cold", "cold-naive")  # the samplers of ``unblur.sampling.cold`` that apply
LEGACY_OPTIONS = {"seed": "cold_seed"}  # ColdProcess keyword -> ProcessConfig key, where they differ


def _levels(t: Tensor | float, x: Tensor) -> Tensor:
    """The level as a float64 (float32 on MPS) (B,) tensor on x's device, checked to lie in [0, 1]."""
    t = torch.as_tensor(t, dtype=wide(x.device), device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"level t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
    if bool(((t < 0) | (t > 1) | ~torch.isfinite(t)).any()):
        raise ValueError(f"level t must lie in [0, 1], got {t.tolist()}")
    return t


def _check_image(x: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"cold degradations act on (B, C, H, W) images, got shape {tuple(x.shape)}")


def _keys(cls: type[Degradation]) -> dict[str, str]:
    """ColdProcess keyword -> field of ``cls``: its config keys, and its other fields by name (e.g. ``others``)."""
    out = {key: f for f, key in cls.options.items()}
    out.update({f.name: f.name for f in dataclasses.fields(cls) if f.name not in cls.options})
    return out


def _fields(cls: type[Degradation], options: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``cls`` named by ColdProcess keywords; keywords of other degradations are ignored."""
    known = {k for c in DEGRADATIONS.values() for k in _keys(c)}
    mine = _keys(cls)
    out = {}
    for name, value in options.items():
        key = LEGACY_OPTIONS.get(name, name)
        if key not in known:
            raise TypeError(f"unknown cold process option {name!r}; accepted: {', '.join(sorted(known))}")
        if key in mine:
            out[mine[key]] = value
    return out


def _from_degradation(name: str, doc: str) -> property:
    """A read-only property of ``ColdProcess`` answered by its degradation's class attribute."""
    return property(lambda self: getattr(self.degradation, name), doc=doc)


@dataclass(frozen=True, init=False)
class ColdProcess:
    """A cold-diffusion forward process: one degradation, ``degrade(x0, t)`` and the start of generation.

    ``ColdProcess(kind, **options)`` with the options as the ``process.*`` config keys (e.g.
    ``blur_sigma_max``, ``mask_kind``; ``seed`` for ``cold_seed``; ``others`` the blend
    images), or ``ColdProcess(degradation=Blur(sigma_max=2.0))``; options of other
    degradations are ignored, as in the flat config. ``start_stats``: what ``fit_start``
    measured on the training data. The degradation's options read as attributes under their
    config keys (``p.mask_kind``) and its own names (``p.mask(...)``).
    ``dataclasses.replace(p, blur_start="means")`` changes options.
    """

    kind: str
    degradation: Degradation
    start_stats: dict | None = field(default=None, repr=False, compare=False)

    # The Process protocol (``unblur.types.Process``): levels are t in [0, 1].
    default_sampler: ClassVar[str] = "cold"
    samplers: ClassVar[tuple[str, ...]] = COLD_SAMPLERS
    loss_key: ClassVar[str] = "restore_loss"
    precond: ClassVar[str] = "cold"  # the network -> denoiser wrapper: ``unblur.precond.ColdPrecond``
    sigma_data: ClassVar[float] = 0.5  # for the rows of ``prediction`` that read it (noise: EDM's)
    restores: ClassVar[bool] = True  # restores degraded images (``unblur restore``, PSNR/SSIM)

    def __init__(self, kind: str | None = None, *, degradation: Degradation | None = None,
                 start_stats: dict | None = None, **options: Any):
        if kind is None and degradation is None:
            raise TypeError("ColdProcess needs a kind (one of: " + ", ".join(COLD_PROCESSES) + ") or a degradation")
        cls = get_degradation(kind) if kind is not None else type(degradation)
        if degradation is None:
            degradation = cls(**_fields(cls, options))
        else:
            if type(degradation) is not cls:
                raise ValueError(f"kind {kind!r} does not match the degradation {degradation.name!r}")
            if options:
                degradation = dataclasses.replace(degradation, **_fields(cls, options))
        object.__setattr__(self, "kind", cls.name)
        object.__setattr__(self, "degradation", degradation)
        object.__setattr__(self, "start_stats", start_stats)

    def __getattr__(self, name: str) -> Any:
        """The degradation's options under their config keys, then its own attributes."""
        deg = self.__dict__.get("degradation")
        if deg is None or name.startswith("_"):
            raise AttributeError(name)
        key = LEGACY_OPTIONS.get(name, name)
        for f, k in deg.options.items():
            if k == key:
                return getattr(deg, f)
        if hasattr(deg, name):
            return getattr(deg, name)
        raise AttributeError(f"the {self.kind} process has no attribute {name!r}")

    # -- what callers dispatch on ---------------------------------------------------------------
    stochastic = _from_degradation("stochastic", "Whether ``degrade`` draws a random layer (snow, blend, noise).")
    layer_linear = _from_degradation(
        "layer_linear", "Whether ``layer_of`` recovers the layer from x_t and x0_hat (blend, noise).")
    can_generate = _from_degradation(
        "can_generate", "Whether there is an image-free start at t = 1 (blur, mask, blend, noise).")
    level_estimable = _from_degradation(
        "level_estimable", "Whether a degraded image's level can be estimated by re-degrading (not noise, blend).")
    restore_sampler = _from_degradation(
        "restore_sampler", "How ``unblur restore`` restores by default: cold (the walk) or one-shot.")
    prediction = _from_degradation(
        "prediction", "The row of ``unblur.precond.coefficients`` a restorer over this process uses.")
    inpaints = _from_degradation(
        "inpaints", "Whether its restorer fills a user's mask (mask: ``unblur.editing.cold_inpaint``).")

    def precond_sigma(self, t: Tensor) -> Tensor:
        """The noise level at which the restorer's coefficients are read at level t (B,)."""
        return self.degradation.precond_sigma(t)

    # -- the forward process --------------------------------------------------------------------
    def degrade(self, x0: Tensor, t: Tensor | float, generator: Generator = None, *,
                layer: Tensor | None = None) -> Tensor:
        """x_t for clean images x0 (B, C, H, W) at level t (scalar or (B,)); see the module table."""
        _check_image(x0)
        tt = _levels(t, x0)  # (B,) in the working precision
        if self.stochastic and layer is None:
            layer = self.draw_layer(x0, generator)
        out = self.degradation.degrade(x0, tt, layer)
        # Exactly x0 at t = 0, whatever rounding the operator did.
        keep = append_dims(tt == 0, x0.ndim)
        return torch.where(keep, x0, out.to(x0.dtype))

    def draw_layer(self, x0: Tensor, generator: Generator = None) -> Tensor:
        """The random layer of a stochastic degradation, from ``generator`` (see the module doc)."""
        return self.degradation.draw_layer(x0, generator)

    def layer_of(self, x_t: Tensor, x0_hat: Tensor, t: Tensor | float) -> Tensor | None:
        """The random layer implied by x_t and an estimate of x0, where x_t is linear in it.

        noise: z = (x_t - x0) / sigma(t); blend: y = (x_t - (1 - t) x0) / t. None otherwise
        (deterministic degradations, and snow, whose layer the samplers draw once).
        """
        return self.degradation.layer_of(x_t, x0_hat, _levels(t, x_t))

    def picture(self, x0: Tensor, t: Tensor, generator: Generator = None) -> Tensor:
        """x_t = degrade(x0, t) clamped to [-1, 1], as a forward picture shows it."""
        return self.degrade(x0, t, generator).clamp(-1, 1)

    def training_pair(self, x0: Tensor, generator: Generator = None) -> tuple[Tensor, Tensor]:
        """(t (B,), x_t): levels t ~ U[0, 1] and x_t = degrade(x0, t), both from ``generator``."""
        t = rand((x0.shape[0],), generator=generator, device=x0.device)
        return t, self.degrade(x0, t, generator)

    # -- the start of generation ----------------------------------------------------------------
    def levels(self, steps: int, grid: str = "uniform") -> Tensor:
        """Uniform levels 1 -> 0 in ``steps`` steps (float64); the grid name is ignored."""
        return torch.linspace(1.0, 0.0, int(steps) + 1, dtype=torch.float64)

    def fit_start(self, x: Tensor, **options: Any) -> dict:
        """Statistics of the training images x (N, C, H, W) for ``start`` (blur; empty otherwise)."""
        return self.degradation.fit_start(x, **options)

    def start(self, shape: tuple[int, ...], generator: Generator = None, *, device: Any = None,
              dtype: torch.dtype = torch.float32, start_noise: float | None = None) -> Tensor:
        """A fully degraded x_1 to generate from (ValueError where there is none).

        blur: a draw from the mixture fitted to the training data (``process.blur_start``)
        plus blurred noise of std ``start_noise``; mask: the fully masked image; blend: a
        random image of the second set; noise: N(0, sigma_max^2 I).
        """
        return self.degradation.start(shape, generator, device=device, dtype=dtype, stats=self.start_stats,
                                      start_noise=start_noise)

    def prior(self, shape: tuple[int, ...], generator: Generator = None, *, level: float = 1.0, device: Any = None,
              dtype: torch.dtype = torch.float32, start_noise: float | None = None) -> Tensor:
        """The start of generation at ``level`` = 1, the first of ``levels`` (see ``start``)."""
        if float(level) != 1.0:
            raise ValueError(f"a cold process generates from the fully degraded level 1, not {float(level)}: "
                             "restore degraded images from a lower level with unblur.sampling.cold.restore")
        return self.start(shape, generator, device=device, dtype=dtype, start_noise=start_noise)

    def sampler_options(self) -> dict[str, Any]:
        """The cold samplers take the process itself."""
        return {"process": self}


def build_cold_process(p: Any, *, shape: tuple[int, ...] | None = None, start_stats: dict | None = None,
                       for_model: bool = True, others: Tensor | None = None) -> ColdProcess:
    """A ColdProcess from a ``ProcessConfig`` ``p`` for images of ``shape`` (C, H, W).

    ``others``: blend's second data set, loaded by the caller from ``p.blend_data``.
    ``for_model``: the process of a model over data of ``shape``, which must be able to learn
    something (desaturate needs colour images; on grey ones it is the identity).
    """
    cls = get_degradation(p.kind)
    if shape is not None and len(shape) != 3:
        raise ValueError(f"the {p.kind} process degrades images, but the data holds vectors of shape {tuple(shape)}")
    data = _fields(cls, {"others": others}) if others is not None else {}  # only blend takes images
    degradation = cls.from_config(p, **data)
    if shape is not None:
        degradation.check_shape(tuple(shape), for_model=for_model)
    return ColdProcess(degradation=degradation, start_stats=start_stats)


def cold_from_config(cfg: Config, data_info: DataInfo | None = None, *,
                     read_data: DataReader | None = None) -> ColdProcess:
    """The cold process ``cfg.process.kind`` names (a registry factory, ``processes.registry``):
    the image shape and fitted start statistics from ``data_info``, and the second data set of a
    degradation that mixes one in (``partner_data``: blend) read by ``read_data``."""
    p = cfg.process
    cls = get_degradation(p.kind)
    shape = data_info.shape if data_info is not None else None
    source = getattr(p, cls.partner_data) if cls.partner_data else None
    others = None
    if source:
        if read_data is None:
            raise ValueError(f"the {p.kind} process mixes in the images of process.{cls.partner_data}={source!r}: "
                             "build it with build_process (unblur.kinds.build), which reads them")
        others = read_data(source, shape)
    start = data_info.cold_start if data_info is not None else None
    return build_cold_process(p, shape=shape, start_stats=start, others=others)


def check_process_config(p: Any) -> None:
    """Validate every option of the cold degradation ``p.kind`` names, without data: a
    ValueError naming ``process.KEY`` and its value. Other kinds (Gaussian) pass unchecked."""
    if p.kind in DEGRADATIONS:
        DEGRADATIONS[p.kind].from_config(p)
