"""The loop's small parts: derived seeds and batches, the learning-rate and EMA schedules, the
distributed set-up, the stop flag of SIGINT/SIGTERM, and the speed line a run says."""

from __future__ import annotations

import math
import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..utils import resolve_device


def _mix(*ints: int) -> int:
    """A 63-bit seed from integers (splitmix64 finaliser over a running hash)."""
    h = 0x9E3779B97F4A7C15
    for v in ints:
        h = (h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available() or device_name.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local), device


def batch_indices(step: int, batch: int, n: int, seed: int) -> torch.Tensor:
    """The global batch of ``step``: items [step*B, (step+1)*B) of a stream of seeded epochs."""
    start, end = step * batch, (step + 1) * batch
    out = []
    pos = start
    while pos < end:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, epoch)))
        take = min(end - pos, n - offset)
        out.append(perm[offset : offset + take])
        pos += take
    return torch.cat(out)


def lr_at(step: int, cfg) -> float:
    """Linear warm-up, then constant or cosine decay to 0 at ``cfg.steps``."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        span = max(1, cfg.steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.lr_schedule != "constant":
        raise ValueError(f"train.lr_schedule must be constant or cosine, got {cfg.lr_schedule!r}")
    return cfg.lr


def ema_beta(nimg: int, batch: int, cfg) -> float:
    """EMA decay per step from a half-life in images, with EDM's ramp-up (Karras et al. 2022)."""
    halflife = cfg.ema_halflife_kimg * 1000
    if cfg.ema_rampup > 0:
        halflife = min(halflife, nimg * cfg.ema_rampup)
    return 0.5 ** (batch / max(halflife, 1e-8))


class _Stop:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and exits cleanly."""

    def __init__(self):
        self.requested = False
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = True
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def speed_line(steps_per_s: float, batch: int, *, step: int, steps: int, minutes: float | None,
               seconds_left: float) -> tuple[str, int]:
    """``speed: 12.3 steps/s (1,574 img/s); 10 min budget -> about 7,380 steps`` (or ``10,000
    steps -> about 13 min``) and the step the run should end at: its step budget, or where the
    time budget runs out at this speed."""
    head = f"speed: {steps_per_s:.3g} steps/s ({steps_per_s * batch:,.0f} img/s)"
    by_time = step + steps_per_s * seconds_left
    if by_time < steps:  # the clock stops it first
        return f"{head}; {minutes:g} min budget -> about {int(by_time):,} steps", int(by_time)
    left = _duration((steps - step) / max(steps_per_s, 1e-9))
    return f"{head}; {steps:,} steps -> about {left}", steps


SPEED_STEPS, SPEED_SECONDS = 10, 20.0  # the speed is measured over this many steps or seconds, whichever first
