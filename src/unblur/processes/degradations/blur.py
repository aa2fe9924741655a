"""Gaussian blur of width sigma(t) pixels, reflect padding, separable (Bansal et al. 2022, sec. 4.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...analytic import fit_gmm, sample_gmm
from ...types import Generator
from ...utils import randn
from .base import Degradation, full_level, wide

BLUR_SCHEDULES = ("linear", "sqrt", "quadratic")
BLUR_STARTS = ("blurred", "means")


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
    radius = (4 * s).ceil() + 1  # (B,) each width's own support, so that a row does not depend on its batch
    d = torch.arange(-int(radius.max()), int(radius.max()) + 1, device=sigma.device)  # (K,)
    g = torch.exp(-0.5 * (d[None].to(s.dtype) / s[:, None]) ** 2)  # (B, K)
    g = torch.where(d[None].abs() <= radius[:, None], g, torch.zeros_like(g))
    g = g / g.sum(1, keepdim=True)
    wrapped = torch.zeros(len(sigma), period, dtype=s.dtype, device=sigma.device)
    wrapped.scatter_add_(1, (d % period)[None].expand(len(sigma), -1), g)  # weight of each offset mod 2n
    wrapped = torch.where(flat[:, None], torch.full_like(wrapped, 1.0 / period), wrapped)
    # Offset d from pixel i lands on pixel j when i + d = j or i + d = 2n - 1 - j (mod 2n).
    i = torch.arange(n, device=sigma.device)[:, None]
    j = torch.arange(n, device=sigma.device)[None]
    return wrapped[:, (j - i) % period] + wrapped[:, (period - 1 - j - i) % period]


def blur(x: Tensor, sigma: Tensor) -> Tensor:
    """x (B, C, H, W) blurred with width sigma (B,) per image: K_H x K_W^T in sigma's precision."""
    kh, kw = blur_matrix(sigma, x.shape[-2]), blur_matrix(sigma, x.shape[-1])  # (B, H, H), (B, W, W)
    return torch.einsum("bij,bcjk,blk->bcil", kh, x.to(kh.dtype), kw)


@dataclass(frozen=True, kw_only=True)
class Blur(Degradation):
    """x_t = G_{sigma(t)} * x0, a Gaussian blur of width sigma(t) = sigma_max s(t) pixels with
    s(t) = t (linear), sqrt(t) (sqrt: variance linear in t, as repeated blurs) or t^2 (quadratic).

    Generation starts from ``start_from``: ``blurred`` (a mixture fitted to the fully blurred
    training images in their principal subspace) or ``means`` (a mixture fitted to the
    per-channel means, as Bansal et al.), plus blurred noise of std ``start_noise`` (None: the
    fitted residual std).
    """

    name = "blur"
    options = {"sigma_max": "blur_sigma_max", "schedule": "blur_schedule", "start_from": "blur_start",
               "start_noise": "start_noise"}
    can_generate = True

    sigma_max: float = 3.0  # width at t = 1, pixels
    schedule: str = "linear"  # linear | sqrt | quadratic
    start_from: str = "blurred"  # blurred | means
    start_noise: float | None = None  # std of the start's symmetry-breaking noise; None: fitted

    def check(self) -> None:
        if not self.sigma_max > 0:
            raise self.bad_option("sigma_max", "a positive width in pixels")
        self.check_choice("schedule", BLUR_SCHEDULES)
        self.check_choice("start_from", BLUR_STARTS)
        if self.start_noise is not None and not self.start_noise >= 0:
            raise self.bad_option("start_noise", ">= 0 (unset: the fitted scale)")

    def sigma(self, t: Tensor) -> Tensor:
        """Blur width in pixels at level t."""
        s = {"linear": t, "sqrt": t.sqrt(), "quadratic": t * t}[self.schedule]
        return self.sigma_max * s

    def degrade(self, x0: Tensor, t: Tensor, layer: Tensor | None = None) -> Tensor:
        return blur(x0, self.sigma(t))

    # -- the start of generation ----------------------------------------------------------------
    def fit_start(self, x: Tensor, *, components: int = 10, seed: int = 0, max_images: int = 4096,
                  max_dims: int = 16, keep: float = 0.9999, max_values: int = 1024, **_: Any) -> dict:
        """Statistics for ``start`` measured on the training images x (N, C, H, W).

        Both starts: ``gmm``, a Gaussian mixture fitted (EM) to the per-channel means of the
        images, as Bansal et al. do, and ``residual_std``, the standard deviation of the fully
        blurred images around their means (the scale of the symmetry-breaking noise);
        ``blurred``: the mean and principal directions of the fully blurred images D(x, 1) (as
        many as hold ``keep`` of their variance, at most ``max_dims``; average-pooled to at most
        ``max_values`` values), a mixture fitted to their coordinates there, and the std of
        what those directions leave out.
        """
        means = x.double().mean((2, 3))  # (N, C)
        gmm = fit_gmm(means, min(components, len(x)), seed=seed)
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_images]
        xb = self.degrade(x[idx].double(), full_level(x[idx])).double()
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

    def start(self, shape: tuple[int, ...], generator: Generator = None, *, device: Any = None,
              dtype: torch.dtype = torch.float32, stats: dict | None = None,
              start_noise: float | None = None) -> Tensor:
        """A fully blurred x_1: ``blurred`` draws D(x, 1) from the mixture fitted in its principal
        subspace; ``means`` a constant image per channel from the mixture fitted to the channel
        means (Bansal et al.). Both add blurred Gaussian noise of std ``start_noise`` (argument,
        else the option, else the fitted residual std) that breaks the symmetry between equal starts."""
        B, C, H, W = shape
        if not stats:
            raise ValueError("generation by blur needs the start statistics fitted on the training data; "
                             "this run has none (train it again with this version)")
        if self.start_from == "blurred":
            if "blurred" not in stats:
                raise ValueError("this run's start statistics predate process.blur_start=blurred: sample it "
                                 "with --set process.blur_start=means, or train it again")
            fit = stats["blurred"]
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
            m = sample_gmm(stats["gmm"], B, generator)[:, :, None, None]  # (B, C, 1, 1)
            default_scale = stats["residual_std"]
        # The symmetry-breaking noise, blurred like x_1 so that it lies in the degradation's range
        # (white noise would survive the improved sampler's walk into the sample).
        scale = start_noise if start_noise is not None else self.start_noise
        scale = default_scale if scale is None else scale
        n = randn(shape, generator=generator, device="cpu", dtype=torch.float64)
        n = self.degrade(n, full_level(n)).double()
        n = n / n.flatten(1).std(1).clamp(min=1e-12)[:, None, None, None]
        return (m + scale * n).to(device=device, dtype=dtype)
