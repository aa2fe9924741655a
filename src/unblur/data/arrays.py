"""A ``.npy`` file of vectors or images, with optional labels beside it.

* (N, D): vectors in data units; the trainer fits an MLP to them.
* (N, H, W), (N, H, W, C) with C in {1, 3, 4}, or (N, C, H, W) with C in {1, 3} when the
  last axis cannot be channels: images. uint8 is divided by 255, uint16 by 65535, bool is
  {0, 1}; floats must lie in [0, 1] (then mapped to [-1, 1]) or already in [-1, 1]. A fourth
  channel is alpha and is composited on white.
* Safety: the header is read first. A file shorter than the array its header claims (truncated,
  or a lying header) is refused, and so is an array that would not fit in
  ``base.memory_budget()`` (its bytes plus a float32 copy), before anything is allocated.
* Labels: ``NAME.labels.npy`` or ``NAME_labels.npy`` beside ``NAME.npy``, integers of shape
  (N,) and at least 0; the classes are named ``"0"`` .. ``str(max)``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .base import Data, as_size, check_channels, check_memory, resize_center_crop, to_channels

_RANGE_TOL = 1e-3  # slack on the [0, 1] / [-1, 1] range checks of float images
_NPY_MAGIC = b"\x93NUMPY"


# The loaders share their keyword options on purpose (load_data forwards them by name).
def load_npy(
    path: str | os.PathLike,
    *,
    size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    source: str | None = None,
) -> Data:
    """Load a ``.npy`` file of vectors or images (see the module docstring)."""
    path = Path(path)
    size_hw = as_size(size)
    check_channels(channels)
    a = _read(path)
    notes: list[str] = []
    if a.ndim == 2:
        if size is not None or channels is not None:
            raise ValueError(f"{path} holds vectors of shape {a.shape}: size and channels apply to images only")
        x = torch.from_numpy(a.astype(np.float32, copy=False)).clone()  # (N, D)
        if not torch.isfinite(x).all():
            raise ValueError(f"{path} holds NaN or infinite values; clean them first")
        kind = "vector"
    else:
        x, note = _images(path, a)  # (N, C, H, W) in [-1, 1]
        notes.append(note)
        x = to_channels(x, channels)
        x = resize_center_crop(x, size_hw)
        kind = "image"
    labels, class_names = _labels_beside(path, len(x))
    if labels is not None:
        notes.append(f"labels from {_labels_path(path)}")
    return Data(
        x=x.contiguous(),
        kind=kind,
        source=source if source is not None else str(path),
        labels=labels,
        class_names=class_names,
        notes=notes,
    )


def _read(path: Path) -> np.ndarray:
    if not path.exists():
        raise ValueError(f"data file {str(path)!r} does not exist")
    _check_header(path)
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise ValueError(
                f"{path} holds Python objects (dtype=object); expected a numeric array of vectors "
                "(N, D) or images (N, H, W[, C]), e.g. saved with "
                "np.save(path, np.asarray(x, np.float32))"
            ) from None
        raise ValueError(f"cannot read {path} as a .npy array: {e}") from None
    except OSError as e:
        raise ValueError(f"cannot read {path} as a .npy array: {e}") from None
    if not isinstance(a, np.ndarray):  # an .npz archive opened through a .npy name
        raise ValueError(f"{path} is not a single .npy array (found {type(a).__name__})")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_) or np.iscomplexobj(a):
        raise ValueError(f"{path} has dtype {a.dtype}; expected real numbers (uint8, integers or floats)")
    if a.ndim not in (2, 3, 4):
        raise ValueError(
            f"{path} has shape {a.shape} ({a.ndim}-D); expected vectors (N, D) or images "
            "(N, H, W), (N, H, W, C) with C in 1, 3, 4"
        )
    if a.shape[0] == 0 or 0 in a.shape:
        raise ValueError(f"{path} has shape {a.shape}: it holds no data")
    return a


def _check_header(path: Path) -> None:
    """Refuse, from the header alone, an array the file cannot hold or memory cannot take.

    Files that do not start with the .npy magic string are left to ``np.load`` (which reads
    .npz archives and refuses pickles).
    """
    try:
        with open(path, "rb") as f:
            if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                return
            f.seek(0)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
            offset = f.tell()
        file_size = path.stat().st_size
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path} as a .npy array: {e}") from None
    if dtype.hasobject:
        return  # np.load refuses it with allow_pickle=False, with its own message
    count = math.prod(shape)
    claimed = count * dtype.itemsize
    if claimed > file_size - offset:
        raise ValueError(
            f"{path} is truncated or its header is wrong: the header claims an array of shape {shape} "
            f"and dtype {dtype} ({claimed:,} bytes), but the file is {file_size:,} bytes in all. "
            "Save the array again with np.save"
        )
    check_memory(
        claimed + 4 * count,
        f"loading {path} (shape {shape}, {dtype}, then float32)",
        "save a part of it (np.save(path, np.load(path, mmap_mode='r')[:N])) or fewer or smaller images",
    )


def _images(path: Path, a: np.ndarray) -> tuple[torch.Tensor, str]:
    """(N, H, W[, C]) of any numeric dtype -> float32 (N, C, H, W) in [-1, 1], and a note."""
    if a.ndim == 3:
        a = a[..., None]  # (N, H, W, 1)
    elif a.shape[-1] not in (1, 3, 4):
        if a.shape[1] in (1, 3):
            a = np.moveaxis(a, 1, -1)  # channels first -> last
        else:
            raise ValueError(
                f"{path} has shape {a.shape}; 4-D images need (N, H, W, C) with C in 1, 3, 4 "
                "(or (N, C, H, W) with C in 1, 3)"
            )
    if a.dtype == np.uint8:
        x, note = a.astype(np.float32) / 255.0, "uint8 values divided by 255"
    elif a.dtype == np.uint16:
        x, note = a.astype(np.float32) / 65535.0, "uint16 values divided by 65535"
    elif a.dtype == np.bool_:
        x, note = a.astype(np.float32), "bool values as 0 and 1"
    else:
        x = a.astype(np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"{path} holds NaN or infinite values; clean them first")
        lo, hi = float(x.min()), float(x.max())
        if np.issubdtype(a.dtype, np.integer) and lo >= 0 and hi <= 255:
            x, note = x / 255.0, f"{a.dtype} values in [0, 255], divided by 255"
        elif lo >= -_RANGE_TOL and hi <= 1 + _RANGE_TOL:
            note = f"values in [{lo:.3g}, {hi:.3g}], assumed to be in [0, 1]"
        elif lo >= -1 - _RANGE_TOL and hi <= 1 + _RANGE_TOL:
            x = (x + 1.0) / 2.0
            note = f"values in [{lo:.3g}, {hi:.3g}], assumed to be in [-1, 1]"
        else:
            raise ValueError(
                f"{path} holds {a.dtype} images with values in [{lo:.4g}, {hi:.4g}]; expected "
                "[0, 1] or [-1, 1] for floats (or uint8 0..255). Rescale them, e.g. x / 255 "
                "for 0..255 values"
            )
    x = np.clip(x, 0.0, 1.0)
    if x.shape[-1] == 4:  # RGBA: composite on white
        alpha = x[..., 3:]
        x = x[..., :3] * alpha + (1.0 - alpha)
        note += "; alpha composited on white"
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)  # (N, C, H, W)
    return (t * 2.0 - 1.0).contiguous(), note


def _labels_path(path: Path) -> Path | None:
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    for name in (f"{stem}.labels.npy", f"{stem}_labels.npy"):
        candidate = path.with_name(name)
        if candidate.is_file():
            return candidate
    return None


def _labels_beside(path: Path, n: int) -> tuple[torch.Tensor | None, list[str] | None]:
    lpath = _labels_path(path)
    if lpath is None:
        return None, None
    try:
        y = np.load(lpath, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"cannot read labels {lpath}: {e}") from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise ValueError(f"labels {lpath} have shape {y.shape}; expected ({n},), one per item of {path}")
    if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer) and y.dtype != np.bool_:
        raise ValueError(f"labels {lpath} have dtype {y.dtype}; expected integers 0, 1, 2, ...")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise ValueError(f"labels {lpath} hold a negative value ({int(y.min())}); expected 0, 1, 2, ...")
    return torch.from_numpy(y), [str(k) for k in range(int(y.max()) + 1)]
