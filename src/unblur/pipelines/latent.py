"""Latent diffusion (Rombach et al. 2022): the diffusion run works on an autoencoder's latents, and
images are encoded and decoded only at the edge (training data, samples, eval, edit, show).

``LatentSpace`` is the autoencoder as a latent run sees it: ``encode`` images to the latents the
diffusion network was trained on, (ae.encode(x) - shift) * scale with shift and scale measured
on the training data (zero mean and unit variance over every element, as Stable Diffusion's
0.18215 was found), and ``decode`` them back, a bounded batch at a time. A run records the
autoencoder by path and weights hash (``LatentSpace.record``); opening the run checks the hash,
so a moved or changed autoencoder is a clear error, and ``embed`` copies the weights into the
run folder so the run stands alone.

Training latents are cached on disk under ``cache_dir()``, keyed on the autoencoder's hash and
the data's fingerprint: another autoencoder or other data gives another file, and a cache of
the wrong shape is encoded again.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..types import LatentRecord
from ..utils import atomic_write_bytes
from .autoencoder import LoadedAutoencoder, load_autoencoder

CACHE_ENV = "UNBLUR_CACHE"  # the folder of unblur's caches (default ~/.cache/unblur)
EMBEDDED = "autoencoder"  # a run folder's copy of its autoencoder (``--embed-ae``)


def cache_dir() -> Path:
    """Where latents are cached: ``$UNBLUR_CACHE/latents`` or ``~/.cache/unblur/latents``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "unblur")
    return Path(root) / "latents"


@dataclass
class LatentSpace:
    """An autoencoder with the shift and scale a latent run measured on its training data."""

    ae: LoadedAutoencoder
    shift: float
    scale: float
    image_shape: tuple[int, int, int]  # (C, H, W) of the images the run draws

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.ae.latent_shape(*self.image_shape[-2:])

    @property
    def factor(self) -> int:
        return self.ae.downsampling

    def encode(self, x: Tensor, *, batch: int = 16) -> Tensor:
        """Latents (B, c, H / f, W / f) of images (B, C, H, W) in [-1, 1] (float32, on the AE's device)."""
        return (self.ae.encode(x, batch=batch) - self.shift) * self.scale

    def decode(self, z: Tensor, *, batch: int = 16, tile: int | None = None) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] (float32 on z's device) of latents z."""
        return self.ae.decode(z.to(self.ae.device) / self.scale + self.shift, batch=batch, tile=tile).to(z.device)

    def mask_to_latent(self, mask: Tensor) -> Tensor:
        """A pixel mask (B, 1, H, W) (True = regenerate) on the latent grid: a latent cell is
        regenerated when any of its f x f pixels is (the kept region is re-imposed in pixels)."""
        f = self.factor
        return F.max_pool2d(mask.float(), f, stride=f, ceil_mode=True) > 0

    def record(self, *, embedded: bool = False) -> LatentRecord:
        """What a run stores about its latent space (``DataInfo.latent``)."""
        return LatentRecord(path=str(self.ae.path), sha256=self.ae.sha256, kind=self.ae.kind, shift=self.shift,
                            scale=self.scale, image_shape=tuple(self.image_shape),
                            latent_shape=tuple(self.latent_shape), embedded=embedded)


def measure(z: Tensor) -> tuple[float, float]:
    """(shift, scale) that give ``z`` zero mean and unit variance over every element."""
    z = z.double()
    std = float(z.std())
    if not std > 0 or not np.isfinite(std):
        raise ValueError(f"the latents of the training data have standard deviation {std}: the autoencoder "
                         "collapses every image to one latent; train it longer or use another")
    return float(z.mean()), 1.0 / std


def encode_data(ae: LoadedAutoencoder, x: Tensor, *, fingerprint: str | None, batch: int = 32,
                progress: Callable[[int, int], None] | None = None) -> tuple[Tensor, Path | None, bool]:
    """(latents of images x (N, C, H, W) as ``ae.encode`` gives them, on the CPU; the cache file;
    whether it was read from the cache). ``fingerprint`` None: no caching."""
    shape = (len(x), *ae.latent_shape(*x.shape[-2:]))
    path = None
    if fingerprint:
        path = cache_dir() / f"{ae.sha256[:16]}-{fingerprint[:16]}-{'x'.join(map(str, shape))}.npy"
        if path.is_file():
            try:
                z = np.load(path, allow_pickle=False)
                if tuple(z.shape) == shape and z.dtype == np.float32:
                    return torch.from_numpy(z), path, True
            except (OSError, ValueError):
                pass  # unreadable: encode again and replace it
    out = []
    for start in range(0, len(x), batch):
        out.append(ae.encode(x[start : start + batch], batch=batch).float().cpu())
        if progress is not None:
            progress(min(start + batch, len(x)), len(x))
    z = torch.cat(out)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.save(buf, z.numpy(), allow_pickle=False)
            atomic_write_bytes(path, buf.getvalue(), sync=False)
        except OSError:
            path = None  # a read-only cache: the run still trains, it just encodes next time too
    return z, path, False


def open_latent_space(latent: LatentRecord, run_dir: Path | None, *, device: str | torch.device = "cpu"
                      ) -> LatentSpace:
    """The latent space a run recorded: its embedded copy of the autoencoder when there is one,
    else the autoencoder at the recorded path, whose weights must have the recorded hash."""
    want = latent.sha256
    embedded = run_dir / EMBEDDED if run_dir is not None else None
    if embedded is not None and latent.embedded and embedded.is_dir():
        ae = load_autoencoder(embedded, device=device)
        where = f"the run's embedded copy {str(embedded)!r}"
    else:
        path = latent.path
        if not path or not Path(path).exists():
            raise ValueError(f"this latent run's autoencoder {path!r} (sha256 {want[:16]}...) was moved or deleted: "
                             "put it back, or retrain the run with --latent pointing at it (--embed-ae keeps a "
                             "copy in the run folder)")
        ae = load_autoencoder(path, device=device)
        where = f"the autoencoder {path!r}"
    if want and ae.sha256 != want:
        raise ValueError(f"{where} has changed since this run was trained: its weights have sha256 "
                         f"{ae.sha256[:16]}..., the run expects {want[:16]}...; put the original back or retrain")
    return LatentSpace(ae, latent.shift, latent.scale, tuple(latent.image_shape))


def embed(ae: LoadedAutoencoder, run_dir: Path) -> Path:
    """Copy the autoencoder's weights into ``run_dir/autoencoder`` (a diffusers folder for a
    diffusers autoencoder, the run's ``model.safetensors`` and config for an unblur run)."""
    src = Path(ae.path)
    dst = run_dir / EMBEDDED
    tmp = run_dir / f".{EMBEDDED}.new"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    folder = src if src.is_dir() else src.parent
    files = [p for p in folder.iterdir() if p.is_file() and (p.suffix in (".safetensors", ".json"))]
    if src.is_file():
        files = [src] + [p for p in files if p.suffix == ".json"]
    for p in files:
        shutil.copy2(p, tmp / p.name)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


def latent_training_data(data, source: str, *, device: str | torch.device = "cpu", fingerprint: str | None,
                         recorded: LatentRecord | Mapping[str, Any] | None = None,
                         say: Callable[[str], None] = print):
    """(LatentSpace, the training data as latents) for a latent run on images ``data``
    (``unblur.data.Data``) with the autoencoder at ``source``.

    A new run measures shift and scale on the latents; a resumed one (``recorded``: its
    ``DataInfo.latent``, or that record's dict form from a resume state) keeps its own and checks
    that the autoencoder is the one it trained with.
    """
    recorded = LatentRecord.of(recorded)
    import time

    from ..data import Data

    if data.kind != "image":
        raise ValueError(f"a latent run diffuses in an autoencoder's latent space: it needs images, but "
                         f"{data.source!r} holds vectors")
    ae = load_autoencoder(source, device=device)
    C, H, W = data.x.shape[1:]
    f = ae.downsampling
    if ae.in_channels != C:
        raise ValueError(f"the autoencoder {ae.path!r} encodes {ae.in_channels}-channel images but the data has {C} "
                         f"channels: set data.channels={ae.in_channels}")
    if H % f or W % f:
        raise ValueError(f"the autoencoder {ae.path!r} downsamples by {f}, so the images' sides must be multiples of "
                         f"{f}; they are {H}x{W}: set data.size (e.g. data.size={max(f, H - H % f)})")
    if recorded is not None and recorded.sha256 and recorded.sha256 != ae.sha256:
        raise ValueError(f"the autoencoder {ae.path!r} has changed since this run was trained: its weights have sha256 "
                         f"{ae.sha256[:16]}..., the run expects {recorded.sha256[:16]}...")
    t0 = time.perf_counter()
    z, path, hit = encode_data(ae, data.x, fingerprint=fingerprint)
    where = f" ({'read from' if hit else 'cached in'} {path})" if path is not None else ""
    say(f"latents: {len(z)} images {W}x{H} -> {'x'.join(map(str, z.shape[1:]))} with the autoencoder {ae.path} "
        f"({ae.kind}, sha256 {ae.sha256[:12]}), {time.perf_counter() - t0:.1f} s{where}")
    if recorded is not None:
        shift, scale = recorded.shift, recorded.scale
    else:
        shift, scale = measure(z)
        say(f"latent scale measured on the data: shift {shift:+.4f}, scale {scale:.4f} (unit variance)")
    space = LatentSpace(ae, shift, scale, (C, H, W))
    latents = Data(x=((z - shift) * scale).float(), kind="image", source=data.source, labels=data.labels,
                   class_names=data.class_names, captions=data.captions, paths=data.paths, pixels=data.x,
                   notes=[*data.notes, f"encoded by {ae.path}"])
    return space, latents
