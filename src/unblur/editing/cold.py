"""Editing with a cold-diffusion run: img2img as degrade-then-restore, and inpainting of a
user's mask with the restorer of a degradation that masks pixels (``process.inpaints``: mask).

A ``mask`` run learns to restore the training pattern (a centre rectangle of side t, patches,
a fade) at each level t. A user's mask M has its own shape, so its degradation is built from
M: m_t = clamp(depth - (1 - t) dmax, 0, 1) on M, depth the chessboard distance of a masked
pixel to the nearest kept one, dmax its largest value: at t = 1 the whole hole is masked and as
t falls the hole closes from its border inwards, as the centre rectangle does. The restorer is
told the training level whose masked area equals the area of m_t, and the walk is Bansal et
al.'s Algorithm 2, x_s' = x_s - D(x0_hat, s) + D(x0_hat, s'), with D the user-mask degradation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..processes.cold import ColdProcess
from ..processes.degradations import DEGRADATIONS
from ..sampling.cold import level_grid
from ..types import Callback, Cond, Denoiser, StepInfo


def mask_depth(mask: Tensor) -> Tensor:
    """Chessboard distance (B, 1, H, W), float, from each masked pixel to the nearest kept pixel
    (1 at the hole's border, 0 outside it); pixels beyond the image count as masked."""
    cur = mask.float()
    depth = torch.zeros_like(cur)
    for _ in range(sum(mask.shape[-2:])):
        if not bool(cur.any()):
            break
        depth += cur
        cur = -F.max_pool2d(-F.pad(cur, (1, 1, 1, 1), value=1.0), 3, stride=1)  # erosion by a 3x3 square
    return depth


def user_mask_levels(process: ColdProcess, mask: Tensor) -> tuple:
    """(m_t, network level) for a user's mask (B, 1, H, W): ``m(t)`` the masked fraction of each
    pixel at t in [0, 1], ``net_level(m)`` the training level whose pattern covers the same area."""
    depth = mask_depth(mask.bool())
    dmax = depth.flatten(1).amax(1).clamp_min(1.0)[:, None, None, None]
    H, W = mask.shape[-2:]
    ts = np.linspace(0.0, 1.0, 101)
    pattern = process.mask(torch.tensor(ts, dtype=torch.float64), (H, W))  # (101, 1, H, W)
    areas = pattern.flatten(1).mean(1).numpy()
    areas = np.maximum.accumulate(areas)  # non-decreasing, for interpolation

    def m(t: float) -> Tensor:
        return (depth - (1 - t) * dmax).clamp(0, 1)

    def net_level(m_t: Tensor) -> Tensor:
        a = m_t.flatten(1).double().mean(1).cpu().numpy()
        return torch.from_numpy(np.interp(a, areas, ts)).to(m_t.device)

    return m, net_level


@torch.no_grad()
def cold_inpaint(restorer: Denoiser, x0: Tensor, mask: Tensor, *, process: ColdProcess, steps: int = 20,
                 cond: Cond = None, callback: Callback | None = None) -> Tensor:
    """Fill the ``mask`` (True = regenerate, (B or 1, 1, H, W)) of images x0 (B, C, H, W) with the
    restorer of a cold process that ``inpaints`` (mask; Algorithm 2 over the user-mask
    degradation, its ``mask`` pattern read for the levels); kept pixels are x0's."""
    if not (process.restores and process.inpaints):
        kinds = " | ".join(name for name, cls in DEGRADATIONS.items() if cls.inpaints)
        raise ValueError(f"inpainting with a cold run needs a run whose degradation masks pixels (unblur train "
                         f"--process {kinds}); this run's process is {process.kind!r}")
    mask = mask.to(x0.device).bool().expand(x0.shape[0], 1, *x0.shape[-2:])
    m, net_level = user_mask_levels(process, mask.cpu())
    fill = float(process.fill)

    def degrade(x: Tensor, t: float) -> Tensor:
        mt = m(t).to(device=x.device, dtype=x.dtype)
        return x * (1 - mt) + fill * mt

    levels = level_grid(1.0, steps).tolist()
    x = degrade(x0, 1.0)
    n = len(levels) - 1
    for i in range(n):
        s, s_next = levels[i], levels[i + 1]
        t = net_level(m(s)).to(dtype=x.dtype)
        x0_hat = torch.where(mask, restorer(x, t, cond), x0)
        x = x - degrade(x0_hat, s) + degrade(x0_hat, s_next)
        if callback is not None:
            callback(StepInfo(step=i, total=n, x=x, sigma=torch.tensor(s), sigma_next=torch.tensor(s_next),
                              x0_hat=x0_hat))
    return torch.where(mask, x, x0)
