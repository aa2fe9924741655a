"""The in-memory data set every loader returns, and the few tensor helpers they share.

Everything lives in one float32 tensor ``x``: images (N, C, H, W) scaled to [-1, 1], or
vectors (N, D) in data units. ``Data`` is also a ``torch.utils.data.Dataset``, so the trainer
can hand it to a ``DataLoader`` with a ``DistributedSampler``.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..types import Generator
from ..utils import rand


class DataWarning(UserWarning):
    """Something in the data was skipped or assumed (unreadable files, a guessed value range)."""


@dataclass(eq=False)
class Data(torch.utils.data.Dataset):
    """A whole data set in memory.

    ``__getitem__`` returns a dict that the default collate function batches:
    ``{"x": (C, H, W) or (D,), "index": int}``, plus ``"label": int`` when the set has labels
    and ``"caption": str`` when it has captions (``""`` for an item without one, which is
    also what the null condition of classifier-free guidance trains on).
    """

    x: Tensor  # float32, (N, C, H, W) in [-1, 1] for images, (N, D) in data units for vectors
    kind: str  # "image" or "vector"
    source: str  # the spec it was loaded from
    labels: Tensor | None = None  # int64 (N,), indices into class_names
    class_names: list[str] | None = None
    captions: list[str | None] | None = None  # one per item, None where an item has none
    paths: list[str] | None = None  # one per item, for folders
    pixels: Tensor | None = None  # a latent set's images (x holds their latents): conditions made in pixels
    embeddings: Tensor | None = None  # (N, E) per-item vectors a run conditions on (cond.clip), made before training
    distribution: Any = None  # the known density (a Toy2D) for builtin:toy2d sets
    notes: list[str] = field(default_factory=list)  # what was assumed or skipped, for summary()

    def __post_init__(self) -> None:
        if self.kind not in ("image", "vector"):
            raise ValueError(f"kind must be 'image' or 'vector', got {self.kind!r}")
        want = 4 if self.kind == "image" else 2
        if self.x.ndim != want:
            raise ValueError(f"{self.kind} data needs a {want}-D x, got shape {tuple(self.x.shape)}")
        n = len(self.x)
        for name in ("labels", "captions", "paths", "embeddings"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} items")

    # -- shape ---------------------------------------------------------------------------

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images."""
        self._need("image", "image_size")
        return (int(self.x.shape[2]), int(self.x.shape[3]))

    @property
    def channels(self) -> int:
        self._need("image", "channels")
        return int(self.x.shape[1])

    @property
    def dim(self) -> int:
        """Length of each vector."""
        self._need("vector", "dim")
        return int(self.x.shape[1])

    @property
    def num_classes(self) -> int:
        """Number of classes, 0 when the set has no labels."""
        return len(self.class_names) if self.labels is not None and self.class_names else 0

    @property
    def has_captions(self) -> bool:
        return self.captions is not None and any(c for c in self.captions)

    def _need(self, kind: str, attr: str) -> None:
        if self.kind != kind:
            raise AttributeError(f"{attr} is defined for {kind} data only; {self.source} is {self.kind} data")

    # -- Dataset view ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"x": self.x[i], "index": i}
        if self.labels is not None:
            item["label"] = self.labels[i]
        if self.captions is not None:
            item["caption"] = self.captions[i] or ""
        return item

    def subset(self, index: Tensor | list[int]) -> Data:
        """The items at ``index`` (a LongTensor or list), with every per-item field kept aligned."""
        index = torch.as_tensor(index, dtype=torch.long)
        idx = index.tolist()
        return replace(
            self,
            x=self.x[index],
            labels=None if self.labels is None else self.labels[index],
            captions=None if self.captions is None else [self.captions[i] for i in idx],
            paths=None if self.paths is None else [self.paths[i] for i in idx],
            pixels=None if self.pixels is None else self.pixels[index],
            embeddings=None if self.embeddings is None else self.embeddings[index],
            notes=list(self.notes),
        )

    # -- report --------------------------------------------------------------------------

    def summary(self) -> str:
        """A few lines for ``unblur info``."""
        n = len(self)
        lines = [f"source: {self.source}"]
        if self.kind == "image":
            c, (h, w) = self.channels, self.image_size
            mode = "grayscale" if c == 1 else "RGB"
            lines.append(f"images: {n} x {c} x {h} x {w} ({mode}), values in [-1, 1]")
        else:
            mean = ", ".join(f"{v:.3g}" for v in self.x.mean(0)[:8].tolist())
            std = ", ".join(f"{v:.3g}" for v in self.x.std(0)[:8].tolist()) if n > 1 else "-"
            more = ", ..." if self.dim > 8 else ""
            lines.append(f"vectors: {n} x {self.dim}; mean [{mean}{more}], std [{std}{more}]")
        if self.labels is not None and self.class_names:
            counts = Counter(self.labels.tolist())
            shown = ", ".join(f"{name} {counts.get(k, 0)}" for k, name in enumerate(self.class_names[:12]))
            more = ", ..." if len(self.class_names) > 12 else ""
            lines.append(f"classes: {len(self.class_names)} ({shown}{more})")
        else:
            lines.append("classes: none")
        if self.captions is not None:
            have = sum(1 for c in self.captions if c)
            lines.append(f"captions: {have} of {n}")
        if self.distribution is not None:
            lines.append(f"density: known ({self.distribution.description})")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def split(data: Data, fraction: float, seed: int = 0) -> tuple[Data, Data]:
    """Split into (kept, held_out) with ``round(fraction * N)`` items held out.

    Deterministic in ``seed`` (a random permutation from its own ``torch.Generator``); both
    parts keep their original order. Evaluation uses the held-out part to compute floors.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be strictly between 0 and 1, got {fraction}")
    n = len(data)
    n_held = int(round(fraction * n))
    if n_held == 0 or n_held == n:
        raise ValueError(f"a fraction of {fraction} of {n} items leaves one part empty")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    held, kept = perm[:n_held].sort().values, perm[n_held:].sort().values
    return data.subset(kept), data.subset(held)


def random_hflip(x: Tensor, generator: Generator, *, p: float = 0.5) -> Tensor:
    """Mirror each image of a (B, C, H, W) batch left-right with probability ``p``.

    ``generator`` is one ``torch.Generator`` or one per sample (see ``utils.rand``).
    """
    if x.ndim != 4:
        raise ValueError(f"random_hflip needs a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    flip = rand((x.shape[0],), generator=generator, device=x.device) < p  # (B,)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_shift(x: Tensor, generator: Generator, max_shift: int) -> Tensor:
    """Translate each image of a (B, C, H, W) batch by whole pixels, up to ``max_shift`` in each
    direction (uniform, independent in rows and columns); borders repeat the edge pixels.

    ``generator`` is one ``torch.Generator`` or one per sample (see ``utils.rand``).
    """
    if x.ndim != 4:
        raise ValueError(f"random_shift needs a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    m = int(max_shift)
    if m < 0:
        raise ValueError(f"the largest shift must be >= 0 pixels, got {max_shift}")
    if m == 0:
        return x
    B, C, H, W = x.shape
    if m >= min(H, W):
        raise ValueError(f"a shift of up to {m} px leaves nothing of a {H}x{W} image: use at most {min(H, W) - 1}")
    d = (rand((B, 2), generator=generator, device=x.device) * (2 * m + 1)).floor().long().clamp(max=2 * m)
    rows = torch.arange(H, device=x.device)[None, :] + d[:, :1]  # (B, H) rows of the padded image
    cols = torch.arange(W, device=x.device)[None, :] + d[:, 1:]  # (B, W)
    padded = torch.nn.functional.pad(x, (m, m, m, m), mode="replicate")
    b = torch.arange(B, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


# -- memory ---------------------------------------------------------------------------------

FALLBACK_MEMORY = 8 * 2**30  # bytes assumed when the physical memory cannot be read


def memory_budget() -> int:
    """Bytes one data set may take while it loads: half the physical memory (half of 8 GiB
    when it cannot be read)."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf, or no such name on this system
        total = FALLBACK_MEMORY
    return (total if total > 0 else FALLBACK_MEMORY) // 2


def check_memory(nbytes: int, what: str, fix: str) -> None:
    """Refuse, before allocating, to load ``what`` when it needs more than ``memory_budget()``."""
    budget = memory_budget()
    if nbytes > budget:
        raise ValueError(
            f"{what} needs {nbytes / 2**30:.3g} GiB of memory, more than the {budget / 2**30:.3g} GiB "
            f"a data set may use here (half of this machine's memory): {fix}"
        )


# -- image tensor helpers shared by the .npy and built-in loaders ----------------------------


def as_size(size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """An int or (H, W) as (H, W), checked."""
    if size is None:
        return None
    if isinstance(size, int):
        hw = (size, size)
    else:
        try:
            hw = tuple(int(s) for s in size)
        except TypeError:
            raise ValueError(f"size must be an int or (H, W), got {size!r}") from None
        if len(hw) != 2:
            raise ValueError(f"size must be an int or (H, W), got {size!r}")
    if min(hw) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return hw  # type: ignore[return-value]


def check_channels(channels: int | None) -> int | None:
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    return channels


def to_channels(x: Tensor, channels: int | None) -> Tensor:
    """(N, C, H, W) with C in {1, 3} to ``channels``: gray is repeated, RGB uses ITU-R 601 luma."""
    if channels is None or x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    luma = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return (x * luma[None, :, None, None]).sum(1, keepdim=True)


def resize_center_crop(x: Tensor, size: tuple[int, int] | None) -> Tensor:
    """Resize (N, C, H, W) so it covers ``size``, then center-crop to it (bilinear, antialiased)."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    h, w = x.shape[-2:]
    th, tw = size
    scale = max(th / h, tw / w)
    rh, rw = max(th, round(h * scale)), max(tw, round(w * scale))
    x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=scale < 1)
    top, left = (rh - th) // 2, (rw - tw) // 2
    return x[..., top : top + th, left : left + tw].clamp(-1.0, 1.0).contiguous()


def augment(x: Tensor, cond: dict | None, generator: Generator, *, hflip: bool = False,
            shift: int = 0) -> tuple[Tensor, dict | None]:
    """The training augmentations of a batch (``data.hflip``, ``data.shift``), drawn from
    ``generator`` in that order; a conditioning image (``cond["image"]``, e.g. the
    low-resolution copy) moves together with its target. Vectors pass through unchanged."""
    steps = [f for on, f in ((hflip, random_hflip), (shift, lambda z, g: random_shift(z, g, shift))) if on]
    if not steps or x.ndim != 4:
        return x, cond
    image = cond.get("image") if cond is not None else None
    for f in steps:
        if image is None:
            x = f(x, generator)
        else:  # one draw for the image and its conditioning image
            x, image = f(torch.cat([x, image], dim=1), generator).split([x.shape[1], image.shape[1]], dim=1)
    if image is not None:
        cond = {**cond, "image": image}
    return x, cond
