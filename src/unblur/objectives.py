"""Per-sample training losses (shape (B,)); the trainer reduces, weights and accumulates.

Diffusion and restoration losses first; at the end the autoencoder's terms (KL to N(0, I),
SSIM and image-gradient structure terms, the PatchGAN hinge losses).

The process draws a batch's training pair (level, degraded input: ``Process.training_pair``);
this module computes the loss of a preconditioned network at those levels. Targets come from
the preconditioning (eps, x0, v, EDM's F-target, or x0 for a cold restorer), so this module
never repeats the prediction-type algebra.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .precond import EDMPrecond, Precond
from .types import Cond
from .utils import choice_error, mean_flat, sum_flat

LOSSES = ("l2", "l1")
WEIGHTINGS = ("none", "min-snr")


def diffusion_loss(
    model: Precond,
    x0: Tensor,
    sigma: Tensor,
    x: Tensor,
    cond: Cond = None,
    *,
    loss: str = "l2",
    weighting: str = "none",
    min_snr_gamma: float = 5.0,
) -> Tensor:
    """Per-sample loss || raw(x, sigma) - target(x0, x, sigma) ||; shape (B,).

    ``x`` is the degraded batch at level ``sigma`` from ``process.training_pair`` (for a
    Gaussian process x = x0 + sigma * noise and ``raw`` is the network output F(c_in x,
    c_noise); for a cold restorer ``raw`` is the restored image and the target x0).

    ``weighting="min-snr"`` multiplies by the min-SNR-gamma weight of Hang et al. 2023,
    written for the model's own target: min(SNR, gamma) / SNR for eps, min(SNR, gamma) for
    x0 and min(SNR, gamma) / (SNR + 1) for v (SNR = 1 / sigma^2). EDM's loss weighting
    lambda(sigma) = 1 / c_out^2 makes the F-target loss unweighted, so EDM models use
    ``weighting="none"`` (Karras et al. 2022, eq. 8 and Table 1).
    """
    if loss not in LOSSES:
        raise choice_error("loss", loss, LOSSES)
    if weighting not in WEIGHTINGS:
        raise choice_error("loss weighting", weighting, WEIGHTINGS)
    out = model.raw(x, sigma, cond).float()
    target = model.target(x0, x, sigma).float()
    diff = out - target
    per_sample = mean_flat(diff.square() if loss == "l2" else diff.abs())
    if weighting == "min-snr":
        if isinstance(model, EDMPrecond):
            raise ValueError("min-snr weighting applies to VP models; EDM models are already weighted")
        snr = sigma.float() ** -2
        clipped = snr.clamp(max=min_snr_gamma)
        w = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[model.prediction]
        per_sample = per_sample * w
    return per_sample


class LossModule(nn.Module):
    """The training step's forward pass as one module, so DistributedDataParallel can wrap it.

    ``forward(x0, level, x, cond)`` returns the per-sample loss (B,).
    """

    def __init__(self, model: Precond, *, loss: str = "l2", weighting: str = "none", min_snr_gamma: float = 5.0):
        super().__init__()
        self.model = model
        self.loss, self.weighting, self.min_snr_gamma = loss, weighting, min_snr_gamma

    def forward(self, x0: Tensor, sigma: Tensor, x: Tensor, cond: Cond = None) -> Tensor:
        return diffusion_loss(
            self.model, x0, sigma, x, cond,
            loss=self.loss, weighting=self.weighting, min_snr_gamma=self.min_snr_gamma,
        )


# -- the autoencoder's terms (model.kind = autoencoder; Rombach et al. 2022, app. G) ------------

PERCEPTUAL = ("none", "ssim", "gradient", "ssim+gradient")  # the structure terms (config.PERCEPTUAL)


def kl_normal(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) of each sample, summed over its latent: (B,).

    The closed form 0.5 * sum(mean^2 + var - 1 - logvar) (Kingma & Welling 2014, app. B), as
    diffusers' ``DiagonalGaussianDistribution.kl`` sums it; the trainer averages over the batch.
    """
    return 0.5 * sum_flat(mean.float().square() + logvar.float().exp() - 1.0 - logvar.float())


def _ssim_window(side: int, device, dtype) -> Tensor:
    """A normalised Gaussian window (sigma 1.5) of at most 7 pixels, odd, no wider than ``side``."""
    size = max(1, min(7, side if side % 2 else side - 1))
    r = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-r.square() / (2 * 1.5**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]  # (size, size)


def ssim_loss(x: Tensor, ref: Tensor) -> Tensor:
    """1 - SSIM (Wang et al. 2004, eq. 13) of each image of x against ref, both (B, C, H, W) in
    [-1, 1]: (B,). Differentiable; computed on [0, 1] images with a Gaussian window (sigma 1.5,
    7 pixels or the largest odd size that fits) under reflect padding, averaged over pixels and channels."""
    a, b = (x.float() + 1) / 2, (ref.float() + 1) / 2
    C = a.shape[1]
    w = _ssim_window(min(a.shape[-2:]), a.device, a.dtype)
    k = w[None, None].expand(C, 1, *w.shape)  # (C, 1, size, size): one window per channel
    p = w.shape[-1] // 2

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.pad(t, (p, p, p, p), mode="reflect") if p else t, k, groups=C)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.square()
    var_b = blur(b * b) - mu_b.square()
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2  # (K1 L)^2, (K2 L)^2 with data range L = 1
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2))
    return 1 - mean_flat(s)


def gradient_loss(x: Tensor, ref: Tensor, *, scales: int = 3) -> Tensor:
    """L1 between the horizontal and vertical finite differences of x and ref at ``scales`` scales
    (each a 2x average-pooling of the last), averaged: (B,). Edges and texture, with no download."""
    a, b = x.float(), ref.float()
    out = []
    for _ in range(scales):
        if min(a.shape[-2:]) < 2:
            break
        dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
        dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
        out.append((mean_flat(dx.abs()) + mean_flat(dy.abs())) / 2)
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return torch.stack(out).mean(0) if out else a.new_zeros(a.shape[0])


def perceptual_loss(x: Tensor, ref: Tensor, kind: str) -> Tensor:
    """The structure term ``kind`` (one of ``PERCEPTUAL``) of each image: (B,)."""
    if kind not in PERCEPTUAL:
        raise choice_error("perceptual term", kind, PERCEPTUAL)
    out = x.new_zeros(x.shape[0], dtype=torch.float32)
    if "ssim" in kind:
        out = out + ssim_loss(x, ref)
    if "gradient" in kind:
        out = out + gradient_loss(x, ref)
    return out


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """The discriminator's hinge loss 0.5 (E relu(1 - D(x)) + E relu(1 + D(x_hat))) of each sample,
    averaged over its patches: (B,) (Lim & Ye 2017, as taming-transformers' ``hinge_d_loss``)."""
    return 0.5 * (mean_flat(F.relu(1.0 - logits_real.float())) + mean_flat(F.relu(1.0 + logits_fake.float())))


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    """The generator's adversarial term -E D(x_hat), averaged over each sample's patches: (B,)."""
    return -mean_flat(logits_fake.float())


def info_nce(image: Tensor, text: Tensor, scale: Tensor | float) -> Tensor:
    """The symmetric InfoNCE loss of CLIP (Radford et al. 2021, fig. 3), per pair (B,).

    With unit embeddings ``image`` and ``text`` (B, E), pair i matching row i, and logits
    ``s * image @ text.T``, pair i's loss is the mean of its image->text and text->image
    cross-entropies:

        l_i = ( -log softmax_j(s <u_i, v_j>)_i  -  log softmax_j(s <u_j, v_i>)_i ) / 2

    so ``info_nce(...).mean()`` is (CE(logits, arange) + CE(logits.T, arange)) / 2.
    """
    logits = scale * image.float() @ text.float().T  # (B, B)
    target = torch.arange(len(logits), device=logits.device)
    rows = F.cross_entropy(logits, target, reduction="none")
    cols = F.cross_entropy(logits.T, target, reduction="none")
    return 0.5 * (rows + cols)
