"""Built-in data sets that need no download: ``builtin:digits`` and ``builtin:toy2d:NAME``."""

from __future__ import annotations

import torch

from ..utils import choice_error
from .base import Data, as_size, check_channels, resize_center_crop, to_channels
from .toy2d import TOY2D

DEFAULT_TOY2D_N = 20_000  # points drawn for builtin:toy2d:NAME when n is not given


def builtin_names() -> list[str]:
    """Every accepted ``builtin:`` name, without the prefix."""
    return ["digits", "shapes", "shapes:pairs"] + [f"toy2d:{name}" for name in TOY2D]


def load_digits(
    *,
    size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    source: str = "builtin:digits",
) -> Data:
    """scikit-learn's 1,797 8x8 handwritten digits as (N, 1, 8, 8) in [-1, 1], labels 0..9.

    The pixel values 0..16 map linearly onto [-1, 1]. ``size`` upsamples (bilinear) to an int
    or (H, W), e.g. 16 or 32; ``channels=3`` repeats the gray channel.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as e:
        raise ImportError(
            "builtin:digits needs scikit-learn (its digits ship inside the package): "
            "pip install scikit-learn, or install unblur[eval]"
        ) from e
    size_hw = as_size(size)
    check_channels(channels)
    bunch = sklearn_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 8.0 - 1.0  # (1797, 1, 8, 8)
    x = resize_center_crop(to_channels(x, channels), size_hw)
    notes = ["upsampled from 8x8 (bilinear)"] if size_hw not in (None, (8, 8)) else []
    return Data(
        x=x.contiguous(),
        kind="image",
        source=source,
        labels=torch.as_tensor(bunch.target, dtype=torch.long),
        class_names=[str(k) for k in range(10)],
        notes=notes,
    )


def load_toy2d(name: str, *, n: int = DEFAULT_TOY2D_N, seed: int = 0, source: str | None = None) -> Data:
    """``n`` points of the toy distribution ``name``, drawn with a generator seeded by ``seed``."""
    if name not in TOY2D:
        raise choice_error("toy2d distribution", name, TOY2D)
    if int(n) < 1:
        raise ValueError(f"n must be a positive number of points, got {n}")
    dist = TOY2D[name]
    x = dist.sample(int(n), torch.Generator().manual_seed(int(seed)))  # (n, 2)
    return Data(
        x=x,
        kind="vector",
        source=source or f"builtin:toy2d:{name}",
        distribution=dist,
        notes=[f"{n} points drawn with seed {seed}"],
    )
