"""The contexts' algebra: the null context, condition dropout, and the small helpers the
kinds share (a low-resolution copy, a class given by name or index).

The nulls and the dropout groups come from the registered kinds (``KINDS``): every null has
the same keys, shapes and dtypes as a real context, so the conditional and unconditional
halves of guidance run as one batch, and dropout replaces entries in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..types import Cond, Generator
from ..utils import rand
from .base import KINDS, kind_of


def null_cond(cond: Cond, num_classes: int) -> Cond:
    """The null context with the same keys, shapes and dtypes as ``cond`` (None stays None)."""
    if cond is None:
        return None
    return {key: kind_of(key).null(key, value, num_classes=num_classes) for key, value in cond.items()}


def drop_cond(cond: Cond, p: float, generator: Generator, num_classes: int) -> Cond:
    """Replace each kind's entries by their null with probability ``p``, independently per kind
    and per sample.

    The keys of one kind (``text`` and ``text_mask``, say) are dropped together. Nothing is
    drawn when ``p == 0`` or there is no context, so an unconditional run keeps its random
    stream; one (B,) draw per kind present, in registry order, otherwise.
    """
    if cond is None or p <= 0:
        return cond
    for key in cond:
        kind_of(key)  # an unknown key is an error, not silently kept
    null = null_cond(cond, num_classes)
    out = dict(cond)
    for kind in KINDS.values():
        present = [k for k in kind.keys if k in cond]
        if not present:
            continue
        ref = cond[present[0]]
        drop = rand((ref.shape[0],), generator=generator, device=ref.device) < p  # (B,)
        for k in present:
            d = drop.view(-1, *([1] * (cond[k].ndim - 1)))  # (B, 1, ...)
            out[k] = torch.where(d, null[k], cond[k])
    return out


def make_lowres(x: Tensor, factor: int) -> Tensor:
    """(B, C, H, W) -> the same size after an area downsample by ``factor`` and a bicubic upsample."""
    if factor < 1:
        raise ValueError(f"cond.superres_factor must be >= 1, got {factor}")
    H, W = x.shape[-2:]
    if H % factor or W % factor:
        raise ValueError(f"cond.superres_factor={factor} must divide the image size {H}x{W}")
    low = F.avg_pool2d(x, factor)  # (B, C, H/f, W/f)
    return upsample_to(low, (H, W))


def upsample_to(low: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, h, w) -> (B, C, *size), bicubic and clamped to [-1, 1]; unchanged if already that size."""
    if tuple(low.shape[-2:]) == tuple(size):
        return low
    return F.interpolate(low, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)


def class_index(value: str | int, class_names: Sequence[str]) -> int:
    """A class given by name or index; an error naming the accepted ones otherwise."""
    names = list(class_names)
    s = str(value).strip()
    if s in names:
        return names.index(s)
    if s.lstrip("-").isdigit() and 0 <= int(s) < len(names):
        return int(s)
    raise ValueError(
        f"unknown class {s!r}; accepted: the names {', '.join(names[:50])}{' ...' if len(names) > 50 else ''} "
        f"or an index 0..{len(names) - 1}"
    )
