"""Per-sample training losses (shape (B,)); the trainer reduces, weights and accumulates.

The process draws a batch's training pair (level, degraded input: ``Process.training_pair``);
this module computes the loss of a preconditioned network at those levels. Targets come from
the preconditioning (eps, x0, v, EDM's F-target, or x0 for a cold restorer), so this module
never repeats the prediction-type algebra.
"""

from __future__ import annotations

from torch import Tensor, nn

from .precond import EDMPrecond, Precond
from .types import Cond
from .utils import choice_error, mean_flat

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
