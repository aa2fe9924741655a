"""Per-sample training losses (shape (B,)); the trainer reduces, weights and accumulates.

One function draws the noise level and the noise for a batch; one computes the loss of a
preconditioned network at those levels. Targets come from the preconditioning (eps, x0, v,
or EDM's F-target), so this module never repeats the prediction-type algebra.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .precond import EDMPrecond, Precond
from .processes.gaussian import DiscreteVP, EDMProcess, GaussianProcess
from .types import Cond, Generator
from .utils import choice_error, mean_flat, rand, randn, randn_like

LOSSES = ("l2", "l1")
WEIGHTINGS = ("none", "min-snr")


def sample_sigma(
    process: GaussianProcess,
    batch: int,
    *,
    generator: Generator = None,
    device=None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> Tensor:
    """Training noise levels (B,): uniform integer steps for a discrete VP schedule
    (Ho et al. Algorithm 1), log-normal ln sigma ~ N(p_mean, p_std^2) for EDM
    (Karras et al. 2022, sec. 5), uniform t otherwise."""
    if isinstance(process, DiscreteVP):
        u = rand((batch,), generator=generator, device=device, dtype=torch.float64)
        n = len(process._log_sigmas)
        i = (u * n).floor().clamp(max=n - 1)
        return process.sigma_at(i.cpu()).to(device=device, dtype=torch.float32)
    if isinstance(process, EDMProcess):
        z = randn((batch,), generator=generator, device=device)
        return (p_mean + p_std * z).exp()
    t = rand((batch,), generator=generator, device=device)
    return process.sigma(t).float()


def diffusion_loss(
    model: Precond,
    x0: Tensor,
    sigma: Tensor,
    noise: Tensor,
    cond: Cond = None,
    *,
    loss: str = "l2",
    weighting: str = "none",
    min_snr_gamma: float = 5.0,
) -> Tensor:
    """Per-sample loss || F(c_in x, c_noise) - target ||, x = x0 + sigma * noise; shape (B,).

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
    x = x0 + sigma.view(-1, *([1] * (x0.ndim - 1))) * noise
    out = model.raw(x, sigma, cond).float()
    target = model.target(x0, noise, sigma).float()
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

    ``forward(x0, sigma, noise, cond)`` returns the per-sample loss (B,).
    """

    def __init__(self, model: Precond, *, loss: str = "l2", weighting: str = "none", min_snr_gamma: float = 5.0):
        super().__init__()
        self.model = model
        self.loss, self.weighting, self.min_snr_gamma = loss, weighting, min_snr_gamma

    def forward(self, x0: Tensor, sigma: Tensor, noise: Tensor, cond: Cond = None) -> Tensor:
        return diffusion_loss(
            self.model, x0, sigma, noise, cond,
            loss=self.loss, weighting=self.weighting, min_snr_gamma=self.min_snr_gamma,
        )


def draw_noise(x0: Tensor, generator: Generator = None) -> Tensor:
    """The training noise for a batch (a named step so the trainer reads like the paper)."""
    return randn_like(x0, generator)
