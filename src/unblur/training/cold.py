"""Restoration metrics a restorer's training run logs with its sample grids."""

from __future__ import annotations

import torch
from torch import Tensor

from ..processes.cold import ColdProcess


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
