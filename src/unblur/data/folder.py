"""A folder of images, loaded whole into memory.

Rules, in the order they apply:

* **Files.** Every file under the folder, recursively, whose extension (any case) is one of
  ``IMAGE_EXTENSIONS``. Names starting with a dot (``.DS_Store``, ``._photo.jpg``,
  ``.ipynb_checkpoints/``) are skipped. Multi-frame files give their first frame.
* **Modes.** EXIF orientation is applied. Transparent images (RGBA, LA, P with a
  transparency key) are composited on white; 16-bit (``I;16``, ``I``) is scaled to 8 bits;
  CMYK, YCbCr and palettes become RGB; 1-bit becomes L.
* **Channels.** ``channels`` if given (1 or 3), else 1 when every image is grayscale
  (1-bit, L, LA, I;16, I, F), else 3.
* **Size.** ``size`` (an int for a square, or (H, W)) if given. Otherwise the most common
  (H, W) in the folder (ties go to the larger area): its shorter side as a square, or the
  whole (H, W) with ``keep_aspect=True`` (an int ``size`` with ``keep_aspect=True`` sets the
  shorter side and keeps the most common aspect ratio). Each image is scaled to cover the
  target (LANCZOS when shrinking, BICUBIC when enlarging) and center-cropped.
* **Classes.** When every image sits inside a first-level sub-folder and there are at least
  two such sub-folders, their names (sorted) are the classes. An image directly in the root,
  or a single sub-folder, means no labels.
* **Captions.** From ``metadata.jsonl`` (lines of ``{"file_name": ..., "text": ...}``, the
  Hugging Face image-folder convention; ``file_name`` is relative to the jsonl's folder,
  ``caption`` is accepted for ``text``) or ``metadata.csv`` with the same columns, anywhere in
  the tree; else from a same-stem ``.txt`` file beside the image. Metadata wins when both exist.
* **Bad files.** Unreadable or truncated files are skipped with one ``DataWarning`` naming
  them; more than ``max_bad_fraction`` of them, or none readable, is a ``ValueError``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..images import (
    GRAY_MODES,
    REDUCING_GAP,
    SWAPPING_ORIENTATIONS,
    cover_crop,
    list_image_files,
    no_images_message,
    normalize_mode,
    orientation,
)
from .base import Data, DataWarning, as_size, check_channels

_SHOW_BAD = 10  # bad files named in a warning or an error


# The loaders share their keyword options on purpose (load_data forwards them by name).
def load_folder(
    root: str | os.PathLike,
    *,
    size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    keep_aspect: bool = False,
    max_bad_fraction: float = 0.1,
    workers: int | None = None,
    source: str | None = None,
) -> Data:
    """Load every image under ``root`` as (N, C, H, W) in [-1, 1]; see the module docstring."""
    root = Path(root)
    size_hw = as_size(size)
    check_channels(channels)
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
    if not root.exists():
        raise ValueError(f"data folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a folder: give a folder of images, a .npy file or builtin:NAME")
    files, others = list_image_files(root)
    if not files:
        raise ValueError(no_images_message(root, others))
    workers = workers or min(8, os.cpu_count() or 1)

    # 1. Headers only: size after EXIF rotation, and mode. A file failing here is bad.
    bad: dict[Path, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        probes = list(pool.map(_try(_probe), files))
    headers = {}
    for path, (result, error) in zip(files, probes):
        if error is None:
            headers[path] = result
        else:
            bad[path] = error
    if headers:
        if channels is None:
            channels = 1 if all(mode in GRAY_MODES for _, mode in headers.values()) else 3
        short = size if keep_aspect and isinstance(size, int) else None
        target = _target_size([hw for hw, _ in headers.values()], size_hw, keep_aspect, short)

        # 2. Decode, convert and resize in parallel (Pillow releases the GIL while it works).
        good = [p for p in files if p in headers]
        h, w = target
        pixels = np.empty((len(good), h, w, channels), dtype=np.uint8)  # (N, H, W, C)

        def decode_into(i: int) -> str | None:
            try:
                pixels[i] = _decode(good[i], target, channels).reshape(h, w, channels)
            except Exception as e:  # noqa: BLE001 - any failure of a third-party decoder
                return _reason(e)
            return None

        with ThreadPoolExecutor(max_workers=workers) as pool:
            errors = list(pool.map(decode_into, range(len(good))))
        keep = [i for i, e in enumerate(errors) if e is None]
        bad.update((good[i], e) for i, e in enumerate(errors) if e is not None)
        good = [good[i] for i in keep]
        pixels = pixels[keep] if len(keep) < len(errors) else pixels
    else:
        good = []

    notes = _check_bad(root, files, bad, max_bad_fraction, readable=len(good))
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)  # (N, C, H, W)
    labels, class_names = _labels(root, good)
    captions, caption_notes = _captions(root, good)
    return Data(
        x=x.contiguous(),
        kind="image",
        source=source if source is not None else str(root),
        labels=labels,
        class_names=class_names,
        captions=captions,
        paths=[str(p) for p in good],
        notes=notes + caption_notes,
    )


# -- decoding -----------------------------------------------------------------------------


def _try(fn):
    def run(path):
        try:
            return fn(path), None
        except Exception as e:  # noqa: BLE001 - any failure of a third-party decoder
            return None, _reason(e)

    return run


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _probe(path: Path) -> tuple[tuple[int, int], str]:
    """((H, W) after EXIF rotation, mode), reading the header only."""
    with Image.open(path) as img:
        w, h = img.size
        if orientation(img) in SWAPPING_ORIENTATIONS:
            w, h = h, w
        return (h, w), img.mode


def _decode(path: Path, target: tuple[int, int], channels: int) -> np.ndarray:
    """Read one image as uint8 (H, W) or (H, W, 3): flattened, resized to cover, center-cropped."""
    th, tw = target
    with Image.open(path) as img:
        if img.format == "JPEG":
            # Let the JPEG decoder shrink by a power of two, down to twice the size we need.
            w, h = img.size
            if orientation(img) in SWAPPING_ORIENTATIONS:
                w, h = h, w
            s = max(th / h, tw / w) * REDUCING_GAP
            if s < 1.0:
                img.draft(img.mode, (math.ceil(img.size[0] * s), math.ceil(img.size[1] * s)))
        img.load()  # raises on truncated data
        img = normalize_mode(ImageOps.exif_transpose(img))
        img = img.convert("L" if channels == 1 else "RGB")
        img = cover_crop(img, target)
        return np.asarray(img, dtype=np.uint8)


def _target_size(
    sizes: list[tuple[int, int]],
    size: tuple[int, int] | None,
    keep_aspect: bool,
    short: int | None,
) -> tuple[int, int]:
    """The (H, W) every image becomes; ``short`` is an int size given with keep_aspect."""
    if size is not None and short is None:
        return size
    counts = Counter(sizes)
    (h, w), _ = max(counts.items(), key=lambda kv: (kv[1], kv[0][0] * kv[0][1], kv[0]))
    if not keep_aspect:
        return (min(h, w), min(h, w))
    if short is None:
        return (h, w)
    if h <= w:  # the shorter side becomes ``short``; the most common aspect ratio is kept
        return (short, max(1, round(w * short / h)))
    return (max(1, round(h * short / w)), short)


def _check_bad(
    root: Path, files: list[Path], bad: dict[Path, str], max_bad_fraction: float, readable: int
) -> list[str]:
    if not bad:
        return []
    n, k = len(files), len(bad)
    ordered = [p for p in files if p in bad]
    shown = "; ".join(f"{p} ({bad[p]})" for p in ordered[:_SHOW_BAD])
    more = f"; and {k - _SHOW_BAD} more" if k > _SHOW_BAD else ""
    if readable == 0:
        raise ValueError(f"none of the {n} image files under {str(root)!r} could be read: {shown}{more}")
    if k / n > max_bad_fraction:
        raise ValueError(
            f"{k} of {n} image files under {str(root)!r} could not be read ({k / n:.1%}, more than "
            f"max_bad_fraction={max_bad_fraction}): {shown}{more}. Fix or remove them, or raise "
            f"max_bad_fraction (e.g. to {math.ceil(k / n * 100) / 100:.2f}) to skip them"
        )
    warnings.warn(
        f"skipped {k} of {n} image files under {str(root)!r} that could not be read: {shown}{more}",
        DataWarning,
        stacklevel=3,
    )
    return [f"skipped {k} unreadable file{'s' if k > 1 else ''}: {', '.join(map(str, ordered[:3]))}"
            + (", ..." if k > 3 else "")]  # fmt: skip


# -- labels and captions ------------------------------------------------------------------


def _labels(root: Path, paths: list[Path]) -> tuple[torch.Tensor | None, list[str] | None]:
    """Classes from first-level sub-folders: every image is in one, and there are two or more."""
    parts = [p.relative_to(root).parts for p in paths]
    if any(len(q) < 2 for q in parts):
        return None, None
    names = sorted({q[0] for q in parts})
    if len(names) < 2:
        return None, None
    index = {name: k for k, name in enumerate(names)}
    return torch.tensor([index[q[0]] for q in parts], dtype=torch.long), names


def _captions(root: Path, paths: list[Path]) -> tuple[list[str | None] | None, list[str]]:
    from_metadata, notes = _read_metadata(root)
    captions: list[str | None] = []
    for p in paths:
        text = from_metadata.get(os.path.normpath(p))
        if text is None:
            txt = p.with_suffix(".txt")
            if txt.is_file():
                text = txt.read_text(encoding="utf-8", errors="replace").strip()
        captions.append(text if text else None)
    if not any(captions):
        return None, notes
    return captions, notes


def _read_metadata(root: Path) -> tuple[dict[str, str], list[str]]:
    """{normalized image path: text} from every metadata.jsonl / metadata.csv under ``root``."""
    out: dict[str, str] = {}
    missing = 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in ("metadata.jsonl", "metadata.csv"):
            if name not in names:
                continue
            meta = Path(folder) / name
            for where, row in _metadata_rows(meta):
                file_name = row.get("file_name")
                if not isinstance(file_name, str) or not file_name:
                    raise ValueError(f"{where}: each entry needs a 'file_name' (got keys {sorted(row)})")
                text = row.get("text", row.get("caption"))
                path = os.path.normpath(Path(folder) / file_name)
                if not os.path.exists(path):
                    missing += 1
                if isinstance(text, str) and text.strip():
                    out[path] = text.strip()
    notes = [f"metadata names {missing} file(s) that do not exist"] if missing else []
    return out, notes


def _metadata_rows(meta: Path):
    if meta.suffix == ".csv":
        with open(meta, newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f), start=2):
                yield f"{meta}, line {i}", row
        return
    with open(meta, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{meta}, line {i}: not valid JSON ({e.msg}): {line.strip()[:80]!r}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{meta}, line {i}: expected a JSON object, got {type(row).__name__}")
            yield f"{meta}, line {i}", row
