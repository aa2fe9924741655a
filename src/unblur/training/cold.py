"""The cold-diffusion pieces of the trainer: the restoration loss, a batch's levels, and metrics."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..processes.cold import ColdProcess
from ..processes.degradations import DEGRADATIONS
from ..types import Cond, Generator
from ..utils import choice_error, mean_flat

RESTORE_LOSSES = ("l1", "l2")
# Degradations with an image-free start at t = 1 (``ColdProcess.can_generate``; kept for older callers).
GENERATIVE = tuple(name for name, cls in DEGRADATIONS.items() if cls.can_generate)


class ColdLossModule(nn.Module):
    """Per-sample restoration loss || R(x_t, t) - x0 || (L1 as Bansal et al., or L2), shape (B,).

    ``forward(x0, t, x_t, cond)``; one module so that DistributedDataParallel can wrap it.
    """

    def __init__(self, restorer: nn.Module, *, loss: str = "l1"):
        super().__init__()
        if loss not in RESTORE_LOSSES:
            raise choice_error("objective.restore_loss", loss, RESTORE_LOSSES)
        self.model, self.loss = restorer, loss

    def forward(self, x0: Tensor, t: Tensor, x_t: Tensor, cond: Cond = None) -> Tensor:
        diff = self.model(x_t, t, cond).float() - x0.float()
        return mean_flat(diff.abs() if self.loss == "l1" else diff.square())


def cold_batch(process: ColdProcess, x0: Tensor, generator: Generator) -> tuple[Tensor, Tensor]:
    """Levels t ~ U[0, 1] (B,) and the degraded batch x_t = degrade(x0, t), from ``generator``
    (``ColdProcess.training_pair``)."""
    return process.training_pair(x0, generator)


@torch.no_grad()
def restoration_metrics(restorer, process: ColdProcess, x0: Tensor, *, level: float = 1.0, steps: int = 20,
                        sampler: str = "cold") -> dict:
    """Mean PSNR and SSIM of restored and of degraded images at ``level`` (empty without scikit-image)."""
    from ..eval.restoration import psnr, ssim
    from ..sampling.cold import restore
    from ..utils import seeded_generators

    gens = seeded_generators(range(len(x0)), device=x0.device)
    x_t = process.degrade(x0, level, gens)
    x_hat = restore(restorer, x_t, level, process=process, sampler=sampler, steps=steps,
                    generator=torch.Generator(x0.device).manual_seed(0))
    try:
        out = {"restore_psnr": float(psnr(x_hat, x0).mean()), "degraded_psnr": float(psnr(x_t, x0).mean())}
        if min(x0.shape[-2:]) >= 3:
            out["restore_ssim"] = float(ssim(x_hat, x0).mean())
            out["degraded_ssim"] = float(ssim(x_t, x0).mean())
    except ImportError:
        return {}
    return {"level": level, **out}
