"""A folder of images, loaded whole into memory.

Rules, in the order they apply:

* **Files.** Every file under the folder, recursively, whose extension (any case) is one of
  ``IMAGE_EXTENSIONS``. Links to folders are followed, each real folder once: a link loop,
  a second link to a folder already read, a folder that cannot be listed and a broken link
  are skipped, named in ``notes`` and in one ``DataWarning``. Names starting with a dot
  (``.DS_Store``, ``._photo.jpg``, ``.ipynb_checkpoints/``) are skipped on purpose and only
  counted in ``notes``. Multi-frame files give their first frame.
* **Pixel limit.** Sizes are read from the headers first. An image of more than
  ``max_pixels`` pixels is a bad file and is never decoded; by default the limit is
  ``images.MAX_PIXELS`` (64 megapixels), or 64 times the pixels of ``size`` when that is
  larger. Pillow's own decompression-bomb check makes a file bad too (``pillow_bomb_check``).
* **Modes.** EXIF orientation is applied. Transparent images (RGBA, LA, P with a
  transparency key) are composited on white; 16-bit (``I;16``, ``I``) is scaled to 8 bits;
  CMYK, YCbCr and palettes become RGB; 1-bit becomes L.
* **Channels.** ``channels`` if given (1 or 3), else what most images hold: 1 when more of
  them are grayscale (1-bit, L, LA, I;16, I, F) than colour, else 3 (a tie is colour). A
  folder that mixes both says so in ``notes``.
* **Size.** ``size`` (an int for a square, or (H, W)) if given. Otherwise the most common
  (H, W) in the folder (ties go to the larger area): its shorter side as a square, or the
  whole (H, W) with ``keep_aspect=True`` (an int ``size`` with ``keep_aspect=True`` sets the
  shorter side and keeps the most common aspect ratio). When no ``size`` is given and that
  shorter side is over ``DEFAULT_SIDE`` (32) pixels, the shorter side becomes 32, with a note.
  Each image is scaled to cover the target (LANCZOS when shrinking, BICUBIC when enlarging)
  and center-cropped. A size whose pixels (uint8, plus the float32 copy) would not fit in
  ``base.memory_budget()`` (half the memory) is refused before anything is decoded.
* **Classes.** When every image sits inside a first-level sub-folder and there are at least
  two such sub-folders, their names (sorted) are the classes. An image directly in the root,
  or a single sub-folder, means no labels.
* **Captions.** From ``metadata.jsonl`` (lines of ``{"file_name": ..., "text": ...}``, the
  Hugging Face image-folder convention; ``file_name`` is relative to the jsonl's folder,
  ``caption`` is accepted for ``text``) or ``metadata.csv`` with the same columns, anywhere in
  the tree; else from a same-stem ``.txt`` file beside the image. Metadata wins when both exist.
* **Bad files.** Unreadable, truncated or too large files are skipped with one
  ``DataWarning`` naming them; more than ``max_bad_fraction`` of them, or none readable, is a
  ``ValueError``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..images import (
    GRAY_MODES,
    MAX_PIXELS,
    REDUCING_GAP,
    SWAPPING_ORIENTATIONS,
    TooManyPixels,
    check_pixels,
    cover_crop,
    list_image_files,
    no_images_message,
    normalize_mode,
    orientation,
    pillow_bomb_check,
    why_unreadable,
)
from .base import Data, DataWarning, as_size, check_channels, check_memory, memory_budget

_SHOW_BAD = 10  # bad files named in a warning or an error
DEFAULT_SIDE = 32  # without ``size``, images whose shorter side is longer are trained at this side (a CPU's size)
PIXEL_LIMIT_FACTOR = 64  # with ``size``, files of up to this many times its pixels are decoded
_BYTES_PER_VALUE = 5  # the uint8 pixels and their float32 copy, alive together while loading


# The loaders share their keyword options on purpose (load_data forwards them by name).
def load_folder(
    root: str | os.PathLike,
    *,
    size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    keep_aspect: bool = False,
    max_bad_fraction: float = 0.1,
    workers: int | None = None,
    max_pixels: int | None = None,
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
    listing = list_image_files(root)
    files = listing.files
    if not files:
        raise ValueError(no_images_message(listing))
    workers = workers or min(8, os.cpu_count() or 1)
    if max_pixels is None:
        max_pixels = max(MAX_PIXELS, PIXEL_LIMIT_FACTOR * size_hw[0] * size_hw[1]) if size_hw else MAX_PIXELS
    notes = [n for n in (listing.skipped_message(), listing.hidden_note()) if n]

    with pillow_bomb_check(max_pixels):  # a process-wide filter: set here, around every decoding thread
        # 1. Headers only: size after EXIF rotation, and mode. A file failing here is bad.
        bad: dict[Path, str] = {}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            probes = list(pool.map(_try(partial(_probe, max_pixels=max_pixels)), files))
        headers = {}
        for path, (result, error) in zip(files, probes):
            if error is None:
                headers[path] = result
            else:
                bad[path] = error
        good, pixels = [p for p in files if p in headers], None
        if good:
            # 2. Choose channels and size from the headers, and check that they fit in memory.
            channels, note = _channels([mode for _, mode in headers.values()], channels)
            target, size_note = _target_size([hw for hw, _ in headers.values()], size_hw, keep_aspect,
                                             size if isinstance(size, int) else None)  # fmt: skip
            notes += [n for n in (note, size_note) if n]
            _check_memory(len(good), channels, target)
            # 3. Decode, convert and resize in parallel.
            good, pixels = _decode_all(good, target, channels, workers, bad)

    if listing.skipped:
        warnings.warn(listing.skipped_message(), DataWarning, stacklevel=2)
    notes = _check_bad(root, files, bad, max_bad_fraction, readable=len(good)) + notes
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)  # (N, C, H, W)
    labels, class_names = _labels(root, good)
    captions, caption_notes = _captions(listing.folders, good)
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


# -- choices ------------------------------------------------------------------------------


def _channels(modes: list[str], channels: int | None) -> tuple[int, str | None]:
    """``channels`` or the majority's (ties are colour), and a note when the folder mixes both."""
    grey = sum(mode in GRAY_MODES for mode in modes)
    colour = len(modes) - grey
    if channels is not None:
        return channels, None  # the user's choice: nothing to explain
    channels = 1 if grey > colour else 3
    if not grey or not colour:
        return channels, None
    counts = f"{grey} grey, {colour} colour image{'s' if colour > 1 else ''}"
    if channels == 1:
        return channels, f"{counts}: training in grey (data.channels=3 to keep colour)"
    return channels, f"{counts}: training in colour (data.channels=1 for grey)"


def _target_size(
    sizes: list[tuple[int, int]],
    size: tuple[int, int] | None,
    keep_aspect: bool,
    short: int | None,
) -> tuple[tuple[int, int], str | None]:
    """The (H, W) every image becomes, and a note when it was chosen for the user.

    ``short`` is an int size given with keep_aspect (an int size without it is a square).
    """
    if size is not None and not (keep_aspect and short is not None):
        return size, None
    counts = Counter(sizes)
    (h, w), n = max(counts.items(), key=lambda kv: (kv[1], kv[0][0] * kv[0][1], kv[0]))
    note = None
    if size is None and min(h, w) > DEFAULT_SIDE:
        short = DEFAULT_SIDE
    if not keep_aspect:
        side = min(h, w) if short is None else short
        target = (side, side)
    elif short is None:
        target = (h, w)
    elif h <= w:  # the shorter side becomes ``short``; the most common aspect ratio is kept
        target = (short, max(1, round(w * short / h)))
    else:
        target = (max(1, round(h * short / w)), short)
    if size is None and short is not None:
        if n == len(sizes):
            most = f"images are {h}x{w}"
        elif 2 * n > len(sizes):
            most = f"most images ({n} of {len(sizes)}) are {h}x{w}"
        else:  # no size is common: say how they vary
            shorts = [min(hw) for hw in sizes]
            most = f"images come in {len(counts)} sizes ({min(shorts)} to {max(shorts)} px on the shorter side)"
        note = (f"{most}; training at {target[0]}x{target[1]} (data.size not set): "
                "set data.size to choose")  # fmt: skip
    return target, note


def _check_memory(n: int, channels: int, target: tuple[int, int]) -> None:
    """Refuse a size whose pixels would not fit, before they are allocated."""
    h, w = target
    side = max(1, math.isqrt(memory_budget() // max(1, n * channels * _BYTES_PER_VALUE)))
    check_memory(
        n * channels * h * w * _BYTES_PER_VALUE,
        f"loading {n} images of {channels}x{h}x{w} (uint8, then float32)",
        f"set data.size smaller (at most about {side} for a square), or use fewer images",
    )


# -- decoding -----------------------------------------------------------------------------


def _decode_all(
    files: list[Path], target: tuple[int, int], channels: int, workers: int, bad: dict[Path, str]
) -> tuple[list[Path], np.ndarray]:
    """(the files decoded, their pixels (N, H, W, C) uint8); the others go into ``bad``.
    Threads share the work: Pillow releases the GIL while it decodes and resizes."""
    h, w = target
    pixels = np.empty((len(files), h, w, channels), dtype=np.uint8)  # (N, H, W, C)

    def decode_into(i: int) -> str | None:
        try:
            pixels[i] = _decode(files[i], target, channels).reshape(h, w, channels)
        except Exception as e:  # noqa: BLE001 - any failure of a third-party decoder
            return _reason(e)
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        errors = list(pool.map(decode_into, range(len(files))))
    keep = [i for i, e in enumerate(errors) if e is None]
    bad.update((files[i], e) for i, e in enumerate(errors) if e is not None)
    return [files[i] for i in keep], (pixels[keep] if len(keep) < len(files) else pixels)


def _try(fn):
    def run(path):
        try:
            return fn(path), None
        except Exception as e:  # noqa: BLE001 - any failure of a third-party decoder
            return None, _reason(e)

    return run


def _reason(e: Exception) -> str:
    if isinstance(e, (TooManyPixels, Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return why_unreadable(e)
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _probe(path: Path, max_pixels: int) -> tuple[tuple[int, int], str]:
    """((H, W) after EXIF rotation, mode), reading the header only; too many pixels raise."""
    with Image.open(path) as img:
        check_pixels(img.size, max_pixels)
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


def _captions(folders: list[Path], paths: list[Path]) -> tuple[list[str | None] | None, list[str]]:
    from_metadata, notes = _read_metadata(folders)
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


def _read_metadata(folders: list[Path]) -> tuple[dict[str, str], list[str]]:
    """{normalized image path: text} from every metadata.jsonl / metadata.csv in ``folders``
    (the folders ``list_image_files`` read)."""
    out: dict[str, str] = {}
    missing = 0
    for folder in folders:
        for name in ("metadata.jsonl", "metadata.csv"):
            meta = folder / name
            if not meta.is_file():
                continue
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
