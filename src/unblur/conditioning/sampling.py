"""The sampling side: what ``unblur sample`` (or ``Run.sample``) asks for, turned into one
request per sample, the batch contexts, the guided denoiser and each sample's record."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor, nn

from ..config import Config
from ..types import Cond
from .base import KINDS, Requests
from .contexts import null_cond


class SampleContext:
    """The contexts ``unblur sample`` asks for: classes, prompts, a negative prompt, an image.

    ``asked`` holds the kinds' options (``classes=[...]``, ``prompts=[...]``, ``negative=...``,
    ``image=PATH``). Every combination of the given classes and prompts gets ``n`` samples; a
    class-conditional run given no class draws the classes in turn. ``guidance`` defaults to
    ``cond.guidance`` for class and text contexts and to 1 for an image alone.
    """

    def __init__(self, cfg: Config, info, net: nn.Module | None, device: torch.device, *,
                 guidance: float | None = None, run: str = "this run", **asked: Any):
        self.cfg, self.net, self.device = cfg, net, device
        options = {opt: kind for kind in KINDS.values() for opt in kind.options}
        unknown = sorted(set(asked) - set(options))
        if unknown:
            raise TypeError(f"unknown sampling option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(options))}")
        self.parts: dict[str, Requests] = {}
        for kind in KINDS.values():
            part = kind.sampling(cfg, info, device, {o: asked.get(o) for o in kind.options}, run=run)
            if part is not None:
                self.parts[kind.name] = part
        self.num_classes = max((p.num_classes for p in self.parts.values()), default=0)
        self.conditional = any(p.conditional for p in self.parts.values())
        if guidance is not None and not self.conditional:
            raise ValueError(f"--guidance needs a context to guide towards, and {run} is given none: add --class, "
                             "--prompt or --image, or drop --guidance")
        if guidance is None:
            guidance = float(cfg.cond.guidance) if any(p.guides for p in self.parts.values()) else 1.0
        self.guidance = float(guidance)
        if self.guidance < 0:
            raise ValueError(f"--guidance must be >= 0, got {guidance}")

    def requests(self, n: int) -> list[dict]:
        """``n`` requests per combination of the asked values, one dict per sample, e.g.
        ``{"class": index or None, "prompt": text or None}`` (one entry per kind's field)."""
        fields = [kind.field for kind in KINDS.values() if kind.field]
        parts = {kind.field: self.parts.get(kind.name) for kind in KINDS.values() if kind.field}
        asked = {f: list(p.choices) for f, p in parts.items() if p is not None and p.choices}
        if asked:
            combos = itertools.product(*(asked.get(f) or [None] for f in fields))
            return [dict(zip(fields, combo)) for combo in combos for _ in range(n)]
        return [{f: parts[f].fill(i) if parts[f] is not None else None for f in fields} for i in range(n)]

    def record(self, req: dict) -> dict:
        """What samples.jsonl says about a sample's context (JSON values only)."""
        out: dict = {"guidance": self.guidance if self.conditional else None}
        for part in self.parts.values():
            out.update(part.record(req))
        return out

    def cond(self, reqs: list[dict]) -> tuple[Cond, Cond]:
        """(context, unconditional context) of a batch of requests, same keys and shapes."""
        if not self.conditional:
            return None, None
        cond: dict[str, Tensor] = {}
        for part in self.parts.values():
            cond.update(part.cond(reqs, self.device))
        uncond = null_cond(cond, self.num_classes)
        for part in self.parts.values():
            uncond.update(part.negative(len(reqs), self.device))
        return cond, uncond

    def denoiser(self, base, cond: Cond, uncond: Cond):
        """``base`` guided towards ``cond`` (one batched forward for both halves)."""
        if cond is None or self.guidance == 1.0:
            return base
        from ..guidance import cfg as guide

        return guide(base, self.guidance, uncond)
