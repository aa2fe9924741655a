"""What a job sends and keeps: the live previews of its sampler steps (a PNG grid per step, as a
data URL in a progress event) and its outputs (PNGs carrying their settings)."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import torch

from ..images import image_bytes, make_grid
from ..runs.pnginfo import text_chunks
from ..types import Callback, StepInfo
from .jobs import Job


def result(x: torch.Tensor, settings: dict) -> dict:
    """One output of a job: the PNG (carrying its settings) and the settings."""
    return {"png": image_bytes(x, "PNG", text_chunks(settings)), "settings": settings}


def previewer(job: Job, run, what: str, every: float, n: int) -> Callback:
    """The step callback of a job: stop when cancelled; else send the current x0_hat (and/or
    x_t) of every image, decoded for a latent run, as one PNG grid in a progress event."""
    last = [0.0]

    def callback(info: StepInfo) -> None:
        job.check()
        now = time.time()
        final = info.step + 1 >= info.total
        if what == "none" or (every > 0 and now - last[0] < every and not final):
            job.replace_progress({"type": "progress", "step": info.step + 1, "total": info.total})
            return
        last[0] = now
        ev: dict[str, Any] = {"type": "progress", "step": info.step + 1, "total": info.total,
                              "sigma": float(info.sigma_next)}
        if what in ("x0", "both"):
            ev["x0"] = grid_url(run, info.x0_hat, n)
        if what in ("xt", "both") and run.latent is None:
            ev["xt"] = grid_url(run, info.x, n, noisy=True)
        job.replace_progress(ev)

    return callback


def grid_url(run, x: torch.Tensor, n: int, *, noisy: bool = False) -> str:
    """A batch as one PNG grid (a row) in a data: URL; x_t is scaled into view by its noise."""
    with torch.no_grad():
        x = run.decode(x.detach()) if not noisy else x.detach()
    x = x.float().cpu()
    if noisy:
        x = x / x.flatten(1).abs().amax(1).clamp_min(1.0).view(-1, *[1] * (x.ndim - 1))
    img = make_grid(x, nrow=min(len(x), max(1, n)), pad=1)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
