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
=============  ===============================================================================

Randomness: ``snow``, ``blend`` and ``noise`` draw a random *layer* (flake thresholds, the
partner image, z) from ``generator`` (one ``torch.Generator`` or one per sample); without a
generator, snow uses the process's fixed seed. ``degrade(..., layer=L)`` reuses a layer, and
``layer_of(x_t, x0_hat, t)`` recovers it where x_t is linear in it (blend, noise), which the
cold samplers need to re-degrade consistently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..types import Generator
from ..utils import append_dims, choice_error, rand, randn

COLD_PROCESSES = ("blur", "pixelate", "mask", "desaturate", "snow", "blend", "noise")
BLUR_SCHEDULES = ("linear", "sqrt", "quadratic")
BLUR_STARTS = ("blurred", "means")
MASK_KINDS = ("centre", "patches", "fade")


def wide(device: torch.device | str | None) -> torch.dtype:
    """The working precision of the degradations: float64, or float32 on Apple's MPS (which has no float64)."""
    return torch.float32 if torch.device(device or "cpu").type == "mps" else torch.float64


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


def blur_matrix(sigma: Tensor, n: int) -> Tensor:
    """(B, n, n) matrices of 1-D Gaussian blurs of width ``sigma`` (B,) with reflect padding.

    Row i holds the normalized sampled Gaussian centred on pixel i, folded back into the
    image by half-sample symmetric reflection (``d c b a | a b c d | d c b a``) as often as
    its width needs, so each row sums to 1, a width of 0 gives the identity and an infinite
    width the mean. float64 throughout (float32 on MPS).
    """
    sigma = sigma.to(wide(sigma.device)).clamp(min=1e-8)
    period = 2 * n
    # Beyond a width of 4n the kernel wrapped onto one period is uniform to within exp(-80).
    flat = sigma > 4 * n
    s = torch.where(flat, torch.ones_like(sigma), sigma)
    radius = int(math.ceil(4 * float(s.max()))) + 1
    d = torch.arange(-radius, radius + 1, device=sigma.device)  # (K,)
    g = torch.exp(-0.5 * (d[None].to(s.dtype) / s[:, None]) ** 2)  # (B, K)
    g = g / g.sum(1, keepdim=True)
    wrapped = torch.zeros(len(sigma), period, dtype=s.dtype, device=sigma.device)
    wrapped.scatter_add_(1, (d % period)[None].expand(len(sigma), -1), g)  # weight of each offset mod 2n
    wrapped = torch.where(flat[:, None], torch.full_like(wrapped, 1.0 / period), wrapped)
    # Offset d from pixel i lands on pixel j when i + d = j or i + d = 2n - 1 - j (mod 2n).
    i = torch.arange(n, device=sigma.device)[:, None]
    j = torch.arange(n, device=sigma.device)[None]
    return wrapped[:, (j - i) % period] + wrapped[:, (period - 1 - j - i) % period]


def _coverage(n: int, lo: Tensor, hi: Tensor) -> Tensor:
    """(B, n): the length of pixel [i, i+1] inside [lo, hi] (per sample)."""
    i = torch.arange(n, dtype=lo.dtype, device=lo.device)[None]
    return (torch.minimum(i + 1, hi[:, None]) - torch.maximum(i, lo[:, None])).clamp(0, 1)


@dataclass(frozen=True)
class ColdProcess:
    """A cold-diffusion forward process: ``degrade(x0, t)`` and the start of generation.

    Options (the ``process.*`` config keys of the same names):
        blur_sigma_max, blur_schedule: blur width at t = 1 in pixels, and sigma(t) =
            max * t (linear), max * sqrt(t) (sqrt: variance linear in t, as repeated blurs)
            or max * t^2 (quadratic).
        pixelate_min: the coarsest grid's side at t = 1 (the grid's longer side shrinks
            geometrically from the image's to this).
        mask_kind, mask_fill, mask_patch, fade_width: centre | patches | fade, the value of
            masked pixels, the patch side in pixels, the fade's radial width (fraction of
            the image's half-diagonal).
        snow_density, snow_flake: the fraction of pixels seeding a flake at t = 1 and the
            flake's Gaussian radius in pixels.
        noise_sigma_max: noise standard deviation at t = 1 (sigma(t) = max * t).
        blur_start, start_noise: blur generation's start (see ``start``): ``blurred`` (a
            mixture fitted to the fully blurred images in their principal subspace) or
            ``means`` (a mixture fitted to the per-channel means, as Bansal et al.), and the
            std of the small symmetry-breaking noise (None: the fitted residual std).
        seed: the fixed seed of the patch order and of snow without a generator.
        others: blend only: (N2, C, H, W) images of the second data set.
    """

    kind: str
    blur_sigma_max: float = 3.0
    blur_schedule: str = "linear"
    pixelate_min: int = 1
    mask_kind: str = "centre"
    mask_fill: float = 0.0
    mask_patch: int = 2
    fade_width: float = 0.5
    snow_density: float = 0.08
    snow_flake: float = 0.7
    noise_sigma_max: float = 1.0
    blur_start: str = "blurred"
    start_noise: float | None = None
    seed: int = 0
    others: Tensor | None = field(default=None, repr=False, compare=False)
    start_stats: dict | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in COLD_PROCESSES:
            raise choice_error("cold process", self.kind, COLD_PROCESSES)
        if self.kind == "blur" and self.blur_schedule not in BLUR_SCHEDULES:
            raise choice_error("process.blur_schedule", self.blur_schedule, BLUR_SCHEDULES)
        if self.kind == "blur" and self.blur_start not in BLUR_STARTS:
            raise choice_error("process.blur_start", self.blur_start, BLUR_STARTS)
        if self.start_noise is not None and self.start_noise < 0:
            raise ValueError(f"process.start_noise must be >= 0 (unset: the fitted scale), got {self.start_noise}")
        if self.kind == "mask" and self.mask_kind not in MASK_KINDS:
            raise choice_error("process.mask_kind", self.mask_kind, MASK_KINDS)
        if self.blur_sigma_max <= 0 or self.noise_sigma_max <= 0:
            raise ValueError("process.blur_sigma_max and process.noise_sigma_max must be positive")
        if self.pixelate_min < 1 or self.mask_patch < 1:
            raise ValueError(f"process.pixelate_min and process.mask_patch must be >= 1, "
                             f"got {self.pixelate_min} and {self.mask_patch}")
        if not 0 < self.snow_density <= 1:
            raise ValueError(f"process.snow_density must be in (0, 1], got {self.snow_density}")
        if self.kind == "blend" and self.others is None:
            raise ValueError("the blend process mixes each image with an image of a second data set: pass "
                             "--blend-data D2 (or --set process.blend_data=D2) with a folder, .npy or builtin set")

    # -- the forward process ----------------------------------------------------------------
    @property
    def stochastic(self) -> bool:
        """Whether ``degrade`` draws a random layer (snow, blend, noise)."""
        return self.kind in ("snow", "blend", "noise")

    def degrade(self, x0: Tensor, t: Tensor | float, generator: Generator = None, *,
                layer: Tensor | None = None) -> Tensor:
        """x_t for clean images x0 (B, C, H, W) at level t (scalar or (B,)); see the module table."""
        _check_image(x0)
        tt = _levels(t, x0)  # (B,) in the working precision
        fn = getattr(self, f"_{self.kind}")
        if self.stochastic:
            if layer is None:
                layer = self.draw_layer(x0, generator)
            out = fn(x0, tt, layer)
        else:
            out = fn(x0, tt)
        # Exactly x0 at t = 0, whatever rounding the operator did.
        keep = append_dims(tt == 0, x0.ndim)
        return torch.where(keep, x0, out.to(x0.dtype))

    def draw_layer(self, x0: Tensor, generator: Generator = None) -> Tensor:
        """The random layer of a stochastic degradation, from ``generator`` (see the module doc)."""
        B, C, H, W = x0.shape
        if self.kind == "noise":
            return randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if self.kind == "snow":
            if generator is None:  # the fixed layer of the process's seed, the same for every image
                g = torch.Generator().manual_seed(self.seed)
                return rand((1, 1, H, W), generator=g, device=x0.device).expand(B, -1, -1, -1)
            return rand((B, 1, H, W), generator=generator, device=x0.device, dtype=torch.float32)
        if self.kind == "blend":
            assert self.others is not None
            if tuple(self.others.shape[1:]) != (C, H, W):
                raise ValueError(f"the blend data holds images of shape {tuple(self.others.shape[1:])}, "
                                 f"but the images to degrade have shape {(C, H, W)}")
            u = rand((B,), generator=generator, device=x0.device, dtype=torch.float64)
            i = (u * len(self.others)).floor().long().clamp(max=len(self.others) - 1)
            return self.others.to(x0.device)[i.cpu()].to(x0.dtype)
        raise ValueError(f"the {self.kind} degradation is deterministic and has no random layer")

    def layer_of(self, x_t: Tensor, x0_hat: Tensor, t: Tensor | float) -> Tensor | None:
        """The random layer implied by x_t and an estimate of x0, where x_t is linear in it.

        noise: z = (x_t - x0) / sigma(t); blend: y = (x_t - (1 - t) x0) / t. None otherwise
        (deterministic degradations, and snow, whose layer the samplers draw from a seed).
        """
        tt = append_dims(_levels(t, x_t), x_t.ndim).to(x_t.dtype)
        if self.kind == "noise":
            return (x_t - x0_hat) / (self.noise_sigma_max * tt).clamp(min=1e-12)
        if self.kind == "blend":
            return (x_t - (1 - tt) * x0_hat) / tt.clamp(min=1e-12)
        return None

    def blur_sigma(self, t: Tensor) -> Tensor:
        """Blur width in pixels at level t."""
        s = {"linear": t, "sqrt": t.sqrt(), "quadratic": t * t}[self.blur_schedule]
        return self.blur_sigma_max * s

    def noise_sigma(self, t: Tensor) -> Tensor:
        return self.noise_sigma_max * t

    def _blur(self, x0: Tensor, t: Tensor) -> Tensor:
        _, _, H, W = x0.shape
        sigma = self.blur_sigma(t)
        kh, kw = blur_matrix(sigma, H), blur_matrix(sigma, W)  # (B, H, H), (B, W, W)
        x = x0.to(t.dtype)
        return torch.einsum("bij,bcjk,blk->bcil", kh, x, kw)

    def pixel_grid(self, t: Tensor, size: tuple[int, int]) -> list[tuple[int, int]]:
        """The (h, w) grid each sample is pixelated to at level t."""
        H, W = size
        side = max(H, W)
        lo = min(self.pixelate_min, side)
        out = []
        for tv in t.tolist():
            s = side * (lo / side) ** tv  # geometric from side to lo
            f = s / side
            out.append((max(1, min(H, round(H * f))), max(1, min(W, round(W * f)))))
        return out

    def _pixelate(self, x0: Tensor, t: Tensor) -> Tensor:
        _, _, H, W = x0.shape
        grids = self.pixel_grid(t, (H, W))
        out = torch.empty_like(x0)
        for hw in set(grids):
            idx = [i for i, g in enumerate(grids) if g == hw]
            xi = x0[idx].float()
            small = F.adaptive_avg_pool2d(xi, hw)
            out[idx] = F.interpolate(small, size=(H, W), mode="nearest").to(x0.dtype)
        return out

    def mask(self, t: Tensor, size: tuple[int, int], device=None) -> Tensor:
        """The masked fraction m_t (B, 1, H, W) in [0, 1] at level t."""
        H, W = size
        t = t.to(device=device, dtype=wide(device))
        if self.mask_kind == "centre":
            # A centered rectangle of t * H by t * W; each pixel counts the fraction it covers.
            ch = _coverage(H, (1 - t) * H / 2, (1 + t) * H / 2)  # (B, H)
            cw = _coverage(W, (1 - t) * W / 2, (1 + t) * W / 2)  # (B, W)
            return (ch[:, :, None] * cw[:, None, :])[:, None]
        if self.mask_kind == "patches":
            p = self.mask_patch
            gh, gw = -(-H // p), -(-W // p)
            n = gh * gw
            rank = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).to(device)  # (n,)
            # Patch of rank r is masked once t * n passes r, partly in between.
            m = (t[:, None] * n - rank[None].to(t.dtype)).clamp(0, 1)  # (B, n)
            m = m.reshape(-1, 1, gh, gw).repeat_interleave(p, 2).repeat_interleave(p, 3)
            return m[..., :H, :W]
        # fade: visibility exp(-t / (1 - t) * (0.1 + r^2 / w^2)), the border first, all at t = 1.
        yy = (torch.arange(H, dtype=t.dtype, device=device) + 0.5 - H / 2) / (H / 2)
        xx = (torch.arange(W, dtype=t.dtype, device=device) + 0.5 - W / 2) / (W / 2)
        r2 = (yy[:, None] ** 2 + xx[None] ** 2) / 2  # squared distance / half-diagonal^2, (H, W)
        rate = torch.where(t < 1, t / (1 - t).clamp(min=1e-12), torch.full_like(t, math.inf))
        vis = torch.exp(-rate[:, None, None] * (0.1 + r2[None] / self.fade_width**2))
        vis = torch.where(t[:, None, None] == 0, torch.ones_like(vis), vis)
        return (1 - vis)[:, None]

    def _mask(self, x0: Tensor, t: Tensor) -> Tensor:
        m = self.mask(t, tuple(x0.shape[-2:]), x0.device)
        return x0.to(m.dtype) * (1 - m) + self.mask_fill * m

    def _desaturate(self, x0: Tensor, t: Tensor) -> Tensor:
        x = x0.to(t.dtype)
        if x.shape[1] == 3:
            luma = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
            grey = (x * luma[None, :, None, None]).sum(1, keepdim=True).expand_as(x)
        else:
            grey = x.mean(1, keepdim=True).expand_as(x)
        tt = append_dims(t, x.ndim)
        return (1 - tt) * x + tt * grey

    def snow_alpha(self, layer: Tensor, t: Tensor) -> Tensor:
        """Snow opacity (B, 1, H, W): flakes seeded where the layer's uniform value < density * t,
        each a Gaussian blob of radius ``snow_flake`` (reflect padding)."""
        seeds = (layer.to(t.dtype) < self.snow_density * append_dims(t, 4)).to(t.dtype)  # (B, 1, H, W)
        width = torch.full_like(t, self.snow_flake)
        kh, kw = blur_matrix(width, layer.shape[-2]), blur_matrix(width, layer.shape[-1])
        blob = torch.einsum("bij,bcjk,blk->bcil", kh, seeds, kw)
        n = 1 + 2 * math.ceil(4 * self.snow_flake)
        peak = float(blur_matrix(width[:1], n)[0, n // 2, n // 2]) ** 2  # a lone flake's centre
        return (blob / peak).clamp(0, 1)

    def _snow(self, x0: Tensor, t: Tensor, layer: Tensor) -> Tensor:
        a = self.snow_alpha(layer, t)
        return x0.to(a.dtype) * (1 - a) + 1.0 * a

    def _blend(self, x0: Tensor, t: Tensor, layer: Tensor) -> Tensor:
        tt = append_dims(t, x0.ndim)
        return (1 - tt) * x0.to(t.dtype) + tt * layer.to(t.dtype)

    def _noise(self, x0: Tensor, t: Tensor, layer: Tensor) -> Tensor:
        return x0.to(t.dtype) + append_dims(self.noise_sigma(t), x0.ndim) * layer.to(t.dtype)

    # -- the start of generation ------------------------------------------------------------
    def fit_start(self, x: Tensor, *, components: int = 10, seed: int = 0, max_images: int = 4096,
                  max_dims: int = 16, keep: float = 0.9999, max_values: int = 1024) -> dict:
        """Statistics for ``start`` measured on the training images x (N, C, H, W).

        blur, both starts: ``gmm``, a Gaussian mixture fitted (EM) to the per-channel means of
        the images, as Bansal et al. do, and ``residual_std``, the standard deviation of the
        fully blurred images around their means (the scale of the symmetry-breaking noise);
        ``blurred``: the mean and principal directions of the fully blurred images D(x, 1)
        (as many as hold ``keep`` of their variance, at most ``max_dims``; average-pooled to at
        most ``max_values`` values), a mixture fitted to their coordinates there, and the std
        of what those directions leave out.
        """
        if self.kind != "blur":
            return {}
        means = x.double().mean((2, 3))  # (N, C)
        gmm = fit_gmm(means, min(components, len(x)), seed=seed)
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_images]
        xb = self.degrade(x[idx].double(), 1.0)
        resid = float((xb - xb.mean((2, 3), keepdim=True)).std())
        # Fitted on a grid of at most max_values values (the blurred images are smooth); start
        # draws on it and interpolates back, so that the saved fit stays small for large images.
        pool = max(1, math.ceil(math.sqrt(xb[0].numel() / max_values)))
        small = F.avg_pool2d(xb, pool, ceil_mode=True) if pool > 1 else xb
        flat = small.flatten(1)  # (n, D)
        mu = flat.mean(0)
        _, S, Vh = torch.linalg.svd(flat - mu, full_matrices=False)
        frac = (S**2).cumsum(0) / (S**2).sum().clamp(min=1e-30)
        k = max(1, int(min(max_dims, len(flat) - 1, int((frac < keep).sum()) + 1)))
        coords = (flat - mu) @ Vh[:k].T  # (n, k)
        rest = flat - mu - coords @ Vh[:k]
        return {"gmm": gmm, "residual_std": resid,
                "blurred": {"image_shape": list(xb.shape[1:]), "shape": list(small.shape[1:]),
                            "mean": mu.tolist(), "basis": Vh[:k].tolist(),
                            "gmm": fit_gmm(coords, min(components, len(flat)), seed=seed),
                            "residual_std": float(rest.std())}}

    def start(self, shape: tuple[int, ...], generator: Generator = None, *, device=None,
              dtype=torch.float32, start_noise: float | None = None) -> Tensor:
        """A fully degraded x_1 to generate from.

        blur (``blur_start``): ``blurred`` draws a fully blurred image from the mixture fitted to
        the training images' D(x, 1) in their principal subspace; ``means`` draws a constant
        image per channel from the mixture fitted to the channel means (Bansal et al.). Both
        add blurred Gaussian noise of std ``start_noise`` (argument, else ``self.start_noise``,
        else the fitted residual std) that breaks the symmetry between equal starts. mask: the
        fully masked image; blend: a random image of the second set; noise:
        N(0, sigma_max^2); pixelate, desaturate and snow need a clean image to start from and
        raise.
        """
        B, C, H, W = shape
        if self.kind == "blur":
            if not self.start_stats:
                raise ValueError("generation by blur needs the start statistics fitted on the training data; "
                                 "this run has none (train it again with this version)")
            if self.blur_start == "blurred":
                if "blurred" not in self.start_stats:
                    raise ValueError("this run's start statistics predate process.blur_start=blurred: sample it "
                                     "with --set process.blur_start=means, or train it again")
                fit = self.start_stats["blurred"]
                mean = torch.tensor(fit["mean"], dtype=torch.float64)
                c, h, w = fit["shape"]
                if list(fit["image_shape"]) != [C, H, W]:
                    raise ValueError(f"the start was fitted to images of shape {tuple(fit['image_shape'])}, "
                                     f"asked for shape {tuple(shape)}")
                coords = sample_gmm(fit["gmm"], B, generator)  # (B, k)
                m = (mean + coords @ torch.tensor(fit["basis"], dtype=torch.float64)).reshape(B, c, h, w)
                if (h, w) != (H, W):
                    m = F.interpolate(m, size=(H, W), mode="bilinear", align_corners=False)
                default_scale = fit["residual_std"]
            else:
                m = sample_gmm(self.start_stats["gmm"], B, generator)[:, :, None, None]  # (B, C, 1, 1)
                default_scale = self.start_stats["residual_std"]
            # The symmetry-breaking noise, blurred like x_1 so that it lies in the degradation's range
            # (white noise would survive the improved sampler's walk into the sample).
            scale = start_noise if start_noise is not None else self.start_noise
            scale = default_scale if scale is None else scale
            n = self.degrade(randn(shape, generator=generator, device="cpu", dtype=torch.float64), 1.0)
            n = n / n.flatten(1).std(1).clamp(min=1e-12)[:, None, None, None]
            return (m + scale * n).to(device=device, dtype=dtype)
        if self.kind == "mask":
            x = torch.zeros(shape, device=device, dtype=dtype)
            return self.degrade(x, 1.0)
        if self.kind == "noise":
            return self.noise_sigma_max * randn(shape, generator=generator, device=device, dtype=dtype)
        if self.kind == "blend":
            return self.draw_layer(torch.zeros(shape, device=device, dtype=dtype), generator)
        raise ValueError(f"the {self.kind} degradation does not destroy the image at t = 1, so there is no "
                         "image-free start to generate from: use `unblur restore` on degraded images instead")


def sample_gmm(gmm: dict, n: int, generator: Generator = None) -> Tensor:
    """n draws (n, D) from a mixture as ``fit_gmm`` returns it (float64, on the CPU)."""
    u = rand((n,), generator=generator, device="cpu", dtype=torch.float64)
    w = torch.tensor(gmm["weights"], dtype=torch.float64).cumsum(0)
    k = torch.searchsorted(w / w[-1], u).clamp(max=len(w) - 1)  # (n,)
    mu = torch.tensor(gmm["means"], dtype=torch.float64)[k]  # (n, D)
    L = torch.linalg.cholesky(torch.tensor(gmm["covs"], dtype=torch.float64))[k]  # (n, D, D)
    z = randn(mu.shape, generator=generator, device="cpu", dtype=torch.float64)
    return mu + (L @ z[..., None])[..., 0]


def fit_gmm(x: Tensor, k: int, *, seed: int = 0, iters: int = 100) -> dict:
    """A k-component full-covariance Gaussian mixture fitted to x (N, D) by EM (float64).

    Returns plain lists (weights (k,), means (k, D), covs (k, D, D)) so that it can be saved
    as JSON with a run.
    """
    x = x.double()
    N, D = x.shape
    g = torch.Generator().manual_seed(seed)
    mu = x[torch.randperm(N, generator=g)[:k]].clone()  # (k, D)
    var = x.var(0, correction=0).clamp(min=1e-6)
    cov = torch.diag_embed(var).expand(k, D, D).clone()
    w = torch.full((k,), 1.0 / k, dtype=torch.float64)
    reg = 1e-6 * torch.eye(D, dtype=torch.float64)
    for _ in range(iters):
        dist = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov + reg)
        logp = dist.log_prob(x[:, None, :]) + w.log()  # (N, k)
        r = (logp - logp.logsumexp(1, keepdim=True)).exp()  # (N, k)
        nk = r.sum(0) + 1e-10
        w = nk / N
        mu = (r.T @ x) / nk[:, None]
        d = x[:, None, :] - mu[None]  # (N, k, D)
        cov = torch.einsum("nk,nki,nkj->kij", r, d, d) / nk[:, None, None] + reg
    return {"weights": w.tolist(), "means": mu.tolist(), "covs": cov.tolist()}


def build_cold_process(p, *, shape: tuple[int, ...] | None = None, start_stats: dict | None = None,
                       for_model: bool = True) -> ColdProcess:
    """A ColdProcess from a ``ProcessConfig`` ``p``; blend loads ``p.blend_data`` at ``shape`` (C, H, W).

    ``for_model``: the process of a model over data of ``shape``, which must be able to learn
    something (desaturate needs colour images; on grey ones it is the identity).
    """
    if shape is not None and len(shape) != 3:
        raise ValueError(f"the {p.kind} process degrades images, but the data holds vectors of shape {tuple(shape)}")
    if for_model and p.kind == "desaturate" and shape is not None and shape[0] != 3:
        raise ValueError(f"desaturate fades colour towards grey, but the data has {shape[0]} channel(s): train it on "
                         "RGB images (--set data.channels=3 makes grey images RGB, which leaves nothing to restore)")
    others = None
    if p.kind == "blend" and p.blend_data:
        from ..data import load_data

        if shape is None:
            raise ValueError("the blend process needs the image shape to load its second data set")
        C, H, W = shape
        others = load_data(p.blend_data, size=(H, W), channels=C).x
        if others.ndim != 4:
            raise ValueError(f"--blend-data {p.blend_data!r} holds vectors, not images")
    return ColdProcess(
        kind=p.kind, blur_sigma_max=p.blur_sigma_max, blur_schedule=p.blur_schedule, pixelate_min=p.pixelate_min,
        mask_kind=p.mask_kind, mask_fill=p.mask_fill, mask_patch=p.mask_patch, fade_width=p.fade_width,
        snow_density=p.snow_density, snow_flake=p.snow_flake, noise_sigma_max=p.noise_sigma_max, seed=p.cold_seed,
        blur_start=p.blur_start, start_noise=p.start_noise,
        others=others, start_stats=start_stats,
    )


class ColdPrecond(torch.nn.Module):
    """The restorer R(x_t, t) -> x0_hat as a Denoiser ``D(x, t, cond)`` (the level t in place of sigma).

    ``D = c_skip x + c_out F(c_in x, c_noise = 1000 t)``: a residual restorer (c_skip = c_out =
    c_in = 1), whose zero-initialized output layer starts as the identity, for every
    degradation but ``noise``, which uses EDM's coefficients at sigma(t) (Karras et al. 2022,
    Table 1) with sigma_data = 0.5.
    """

    def __init__(self, net: torch.nn.Module, process: ColdProcess):
        super().__init__()
        self.net = net
        self.process = process

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.process.kind == "noise":
            sd2 = 0.25
            s = self.process.noise_sigma(t)
            c_in = (s * s + sd2).rsqrt()
            return sd2 / (s * s + sd2), s * 0.5 * c_in, c_in
        one = torch.ones_like(t)
        return one, one, one

    def forward(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in self.coefficients(t))
        out = self.net(c_in * x, 1000.0 * t, cond)
        return c_skip * x + c_out * out.to(x.dtype)
