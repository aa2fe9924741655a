"""Editing with a Gaussian process: img2img (SDEdit), inpainting by replacement and RePaint.

Every function here works on any ``Denoiser`` ``D(x, sigma, cond)`` in VE scale and any data
shape (images (B, C, H, W) or vectors (B, D)), so the exact mixture denoisers of
``unblur.analytic`` test them against closed-form conditionals.

* **img2img** (Meng et al. 2022, SDEdit): the input noised to a level on the run's own grid,
  then the tail of the grid sampled down with any sampler. ``strength`` s in [0, 1] keeps the
  last round(s n) of the n steps (as diffusers and AUTOMATIC1111 count them); s = 1 starts from
  the prior draw itself, so it equals plain sampling with the same seed; s = 0 returns the input.
* **replace**: the denoiser's x0 estimate is overwritten by the input where the mask keeps it.
  Every sampler step then moves the kept region exactly as the forward process would (Euler and
  DDIM keep it at input + sigma n; ancestral steps draw it from q(x_s' | x_s, input)), so the
  network always sees the kept pixels noised to the current level (Song et al. 2021's
  imputation, the fast baseline of Lugmayr et al.).
* **repaint** (Lugmayr et al. 2022): the same, walked with ancestral steps, and every
  ``jump_length`` steps the state is noised back up ``jump_length`` levels by the forward process
  and walked down again, ``jump_n`` times in all, so the regenerated region has time to agree
  with the kept one.

The kept coordinates of every result equal the input exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..sampling import get_sampler
from ..sampling.samplers import _levels, check_grid, ddpm_step
from ..types import Callback, Cond, Denoiser, Generator, Process, StepInfo
from ..utils import randn_like

METHODS = ("replace", "repaint")


def check_strength(strength: float) -> float:
    """``strength`` as a float in [0, 1] (a ValueError naming the value otherwise)."""
    try:
        s = float(strength)
    except (TypeError, ValueError):
        s = math.nan
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"strength must lie in (0, 1] (1 = from pure noise, small = close to the input), "
                         f"got {strength!r}")
    return s


def strength_grid(grid: Tensor, strength: float) -> Tensor | None:
    """The tail of ``grid`` (n steps) that an edit of ``strength`` walks: its last
    max(1, round(strength n)) steps, or None for strength 0 (nothing to do)."""
    strength = check_strength(strength)
    grid = check_grid(grid)
    n = len(grid) - 1
    if strength == 0:
        return None
    k = min(n, max(1, round(strength * n)))
    return grid[n - k :]


def noised_start(x0: Tensor, grid: Tensor, process: Process, generator: Generator = None, *, full: bool) -> Tensor:
    """The start of an edit at ``grid[0]``: the process's prior draw when ``full`` (strength 1:
    the same draw as plain sampling), else ``process.degrade(x0, grid[0])`` = x0 + grid[0] n
    (the input noised to that level)."""
    level = float(grid[0])
    if full:
        return process.prior(tuple(x0.shape), generator, level=level, device=x0.device, dtype=x0.dtype)
    return process.degrade(x0, level, generator)


def keep_known(denoiser: Denoiser, known: Tensor, mask: Tensor) -> Denoiser:
    """``denoiser`` whose x0 estimate is ``known`` wherever ``mask`` is False (kept).

    ``mask`` (True = regenerate) broadcasts against the data, e.g. (B, 1, H, W) or (D,).
    """
    keep = ~mask.to(device=known.device, dtype=torch.bool)

    def D(x: Tensor, sigma: Tensor, cond: Cond = None) -> Tensor:
        return torch.where(keep, known.to(x.dtype), denoiser(x, sigma, cond))

    return D


def repaint_moves(n: int, jump_length: int = 10, jump_n: int = 10) -> list[int]:
    """RePaint's walk over a grid of n steps as +1 (a step down) and -1 (a level back up).

    With r = ``steps remaining``: at r = 0, j, 2j, ... below n - j (j = ``jump_length``) the walk
    goes back up j levels ``jump_n - 1`` times before going on (Lugmayr et al. 2022, sec. 4.2).
    """
    for name, v in (("jump_length", jump_length), ("jump_n", jump_n)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    j = int(jump_length)
    left = {r: int(jump_n) - 1 for r in range(0, n - j, j)}
    moves, p = [], 0
    while p < n:
        p += 1
        moves.append(1)
        r = n - p
        if left.get(r, 0) > 0:
            left[r] -= 1
            moves.extend([-1] * j)
            p -= j
    return moves


def repaint_nfe(n: int, jump_length: int = 10, jump_n: int = 10) -> int:
    """Denoiser evaluations of a RePaint walk over n steps (its steps down)."""
    return sum(m > 0 for m in repaint_moves(n, jump_length, jump_n))


@torch.no_grad()
def sample_repaint(denoiser: Denoiser, x: Tensor, grid: Tensor, *, known: Tensor, mask: Tensor,
                   jump_length: int = 10, jump_n: int = 10, cond: Cond = None, generator: Generator = None,
                   callback: Callback | None = None) -> Tensor:
    """RePaint (Lugmayr et al. 2022, Algorithm 1) on a VE-scale grid: ancestral (DDPM posterior)
    steps with the kept region's x0 estimate set to ``known``, and jumps back up the grid.

    A jump from level s up to s' > s adds forward noise, x' = x + sqrt(s'^2 - s^2) z (the VP
    q(x_s' | x_s) in VE scale). The callback sees each step down, numbered 0 .. NFE - 1.
    """
    den = keep_known(denoiser, known, mask)
    sig, sl = _levels(grid, x)
    n = len(sl) - 1
    moves = repaint_moves(n, jump_length, jump_n)
    total = sum(m > 0 for m in moves)
    p, k = 0, 0
    for m in moves:
        if m > 0:
            s, s_next = sl[p], sl[p + 1]
            x0 = den(x, sig[p].expand(x.shape[0]), cond)
            x = ddpm_step(x, x0, s, s_next, generator)
            if callback is not None:
                callback(StepInfo(step=k, total=total, x=x, sigma=sig[p], sigma_next=sig[p + 1], x0_hat=x0))
            p, k = p + 1, k + 1
        else:
            x = x + math.sqrt(sl[p - 1] ** 2 - sl[p] ** 2) * randn_like(x, generator)
            p -= 1
    return x


@torch.no_grad()
def edit(denoiser: Denoiser, x0: Tensor, *, process: Process, sampler: str | None = None, steps: int = 20,
         grid: str | Tensor = "karras", strength: float = 1.0, mask: Tensor | None = None, method: str = "replace",
         jump_length: int = 10, jump_n: int = 10, cond: Cond = None, generator: Generator = None,
         callback: Callback | None = None) -> Tensor:
    """img2img (no ``mask``) or inpainting (``mask``: True = regenerate) of ``x0`` at ``strength``.

    ``sampler`` walks the grid (the process's default when None); ``method="repaint"`` walks
    ancestral steps with RePaint's jumps instead, so it takes no other sampler. Returns the
    edited batch in the data scale; kept coordinates equal ``x0`` exactly.
    """
    if method not in METHODS:
        from ..utils import choice_error

        raise choice_error("inpainting method", method, METHODS)
    strength = check_strength(strength)
    levels = process.levels(steps, grid) if isinstance(grid, str) else check_grid(grid).to(torch.float64)
    tail = strength_grid(levels, strength)
    if tail is None:
        return x0.clone()
    x = noised_start(x0, tail, process, generator, full=len(tail) == len(levels))
    if mask is None:
        if method == "repaint":
            raise ValueError("repaint resamples the region a mask regenerates: give a mask, or use method 'replace'")
        sampler = sampler or process.default_sampler
        fn = get_sampler(sampler)
        return fn(denoiser, x, tail, cond=cond, generator=generator, callback=callback, **process.sampler_options())
    mask = mask.to(device=x0.device, dtype=torch.bool)
    if method == "repaint":
        if sampler not in (None, "ddpm"):
            raise ValueError(f"repaint walks ancestral (ddpm) steps with its own jumps, so it takes no other "
                             f"sampler (asked for {sampler!r}): drop the sampler, or use method 'replace'")
        out = sample_repaint(denoiser, x, tail, known=x0, mask=mask, jump_length=jump_length, jump_n=jump_n,
                             cond=cond, generator=generator, callback=callback)
    else:
        fn = get_sampler(sampler or process.default_sampler)
        out = fn(keep_known(denoiser, x0, mask), x, tail, cond=cond, generator=generator, callback=callback,
                 **process.sampler_options())
    return torch.where(mask, out, x0)
