"""Image files and pictures: the one reader of image files, PNG writing, grids, and a density
picture for 2-D samples.

Every entry point that reads an image file (training folders, ``--image``, ``unblur restore``,
``unblur degrade``, eval folders) goes through ``normalize_mode`` and ``read_image`` here, so a
file reads the same everywhere: EXIF orientation applied; transparency (RGBA, LA, PA, a
palette with a transparency key) composited on white; 16-bit and 32-bit integer or float
images scaled to 8 bits; CMYK, YCbCr and palettes to RGB; 1-bit to L.
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from .utils import atomic_write_bytes

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif",
     ".ppm", ".pgm", ".pbm", ".pnm"}
)  # fmt: skip
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that rotate by 90 degrees
REDUCING_GAP = 2.0  # JPEG DCT draft and Pillow's reduce() stop at twice the target size
BACKGROUND = 255  # transparent pixels are composited on white


# -- reading ----------------------------------------------------------------------------------


def list_image_files(root: Path) -> tuple[list[Path], Counter]:
    """Image files under ``root`` (recursive, sorted, dot-names skipped) and a count of the
    other files' extensions."""
    images, others = [], Counter()
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            ext = os.path.splitext(name)[1].lower()
            if ext in IMAGE_EXTENSIONS:
                images.append(Path(folder) / name)
            else:
                others[ext or "(no extension)"] += 1
    return images, others


def no_images_message(root: Path, others: Counter) -> str:
    exts = " ".join(sorted(IMAGE_EXTENSIONS))
    if not others:
        return f"data folder {str(root)!r} is empty: put images in it ({exts})"
    found = ", ".join(f"{n} {ext}" for ext, n in others.most_common(6))
    return f"no image files in {str(root)!r} (found {found}); expected files ending in {exts}"


def list_images(path: str | Path, *, option: str = "--input") -> tuple[Path, list[Path]]:
    """(root, image files): a single image is its own folder's only file; a folder is searched
    recursively. ``option`` names the command-line option in errors."""
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            exts = " ".join(sorted(IMAGE_EXTENSIONS))
            raise ValueError(f"{option} {str(path)!r} is not an image file (expected one of {exts})")
        return path.parent, [path]
    if path.is_dir():
        files, others = list_image_files(path)
        if not files:
            raise ValueError(no_images_message(path, others))
        return path, files
    raise ValueError(f"{option} {str(path)!r} does not exist: give an image file or a folder of images")


def orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 when absent or unreadable)."""
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block is not a broken image
        return 1


def normalize_mode(img: Image.Image) -> Image.Image:
    """Any Pillow mode to L or RGB: alpha composited on white, 16 bits scaled to 8."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in SIXTEEN_BIT or mode in ("I", "F"):
        a = np.asarray(img).astype(np.float64)
        if mode in SIXTEEN_BIT or (mode == "I" and a.max(initial=0) > 255):
            a = a / 257.0  # 0..65535 -> 0..255
        elif mode == "F" and a.max(initial=0) <= 1.0:
            a = a * 255.0  # floats in [0, 1]
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    if mode == "P" and "transparency" in img.info:
        mode, img = "RGBA", img.convert("RGBA")
    if mode in ALPHA_MODES:
        rgba = img.convert("RGBA")
        back = Image.new("RGBA", rgba.size, (BACKGROUND, BACKGROUND, BACKGROUND, 255))
        return Image.alpha_composite(back, rgba).convert("RGB")
    return img.convert("RGB")  # P, CMYK, YCbCr, HSV, ...


def cover_crop(img: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Scale to cover ``target`` (H, W) and take the center, in one resampling step."""
    th, tw = target
    w, h = img.size
    if (h, w) == (th, tw):
        return img
    s = max(th / h, tw / w)
    cw, ch = tw / s, th / s  # the source region that maps onto the target
    left, top = (w - cw) / 2, (h - ch) / 2
    shrink = s < 1.0
    return img.resize(
        (tw, th),
        resample=Image.Resampling.LANCZOS if shrink else Image.Resampling.BICUBIC,
        box=(left, top, left + cw, top + ch),
        reducing_gap=REDUCING_GAP if shrink else None,
    )


def open_image(path: str | Path, *, option: str = "image") -> Image.Image:
    """One image file as a Pillow image in mode L or RGB (EXIF-rotated, flattened), fully loaded.

    A missing file or one that is not an image is a ValueError that names ``option`` and the path.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"{option} {str(path)!r} does not exist: give an image file (PNG, JPEG, ...)")
    try:
        with Image.open(path) as im:
            im.load()  # raises on truncated data
            return normalize_mode(ImageOps.exif_transpose(im))
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{option} {str(path)!r} cannot be read as an image ({reason})") from None


def read_image(path: str | Path, *, channels: int | None = None, size: tuple[int, int] | None = None,
               option: str = "image") -> Tensor:
    """One image file as (C, H, W) float32 in [-1, 1].

    ``channels`` (1 or 3) converts the mode; ``size`` (H, W) resizes the whole image (LANCZOS
    when shrinking, BICUBIC when enlarging; no crop, so the aspect ratio follows ``size``).
    """
    img = open_image(path, option=option)
    if channels is not None:
        img = img.convert("L" if channels == 1 else "RGB")
    if size is not None and (img.height, img.width) != tuple(size):
        shrink = img.height > size[0] or img.width > size[1]
        img = img.resize((size[1], size[0]), Image.Resampling.LANCZOS if shrink else Image.Resampling.BICUBIC)
    a = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, H, W)
    return torch.from_numpy(np.ascontiguousarray(a))


def write_image(x: Tensor, path: str | Path) -> None:
    """One image (C, H, W) in [-1, 1] as a PNG (or the format of the suffix), written atomically."""
    path = Path(path)
    buf = io.BytesIO()
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    to_pil(x).save(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())


# -- pictures ---------------------------------------------------------------------------------


def to_uint8(x: Tensor) -> np.ndarray:
    """(C, H, W) or (B, C, H, W) in [-1, 1] -> uint8 HWC / BHWC."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def to_pil(x: Tensor) -> Image.Image:
    """One image (C, H, W) in [-1, 1] as a Pillow image (L or RGB)."""
    arr = to_uint8(x)
    return Image.fromarray(arr[..., 0], "L") if arr.shape[-1] == 1 else Image.fromarray(arr, "RGB")


def make_grid(x: Tensor, nrow: int | None = None, pad: int = 2, scale: int = 1) -> Image.Image:
    """A grid picture of (B, C, H, W) images in [-1, 1], ``scale`` times enlarged (nearest)."""
    B, C, H, W = x.shape
    nrow = nrow or math.ceil(math.sqrt(B))
    ncol = math.ceil(B / nrow)
    canvas = torch.ones(C, ncol * (H + pad) + pad, nrow * (W + pad) + pad)
    for i in range(B):
        r, c = divmod(i, nrow)
        canvas[:, pad + r * (H + pad) : pad + r * (H + pad) + H, pad + c * (W + pad) : pad + c * (W + pad) + W] = x[i]
    img = to_pil(canvas)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def save_png(img: Image.Image, path: str | Path) -> None:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def grid_scale(height: int) -> int:
    """Enlarge small images so that a grid is readable (8x8 digits -> 8x)."""
    return max(1, 64 // max(height, 1))


def scatter_image(points: Tensor, size: int = 256, lim: float | None = None) -> Image.Image:
    """A density picture of 2-D points (a log-scaled histogram), with no plotting library."""
    p = points.detach().double().cpu()[:, :2].numpy()
    lim = lim or float(np.percentile(np.abs(p), 99.5)) * 1.1 or 1.0
    hist, _, _ = np.histogram2d(p[:, 1], p[:, 0], bins=size, range=[[-lim, lim], [-lim, lim]])
    hist = np.log1p(hist)[::-1]
    img = 255 - (255 * hist / max(hist.max(), 1e-12)).astype(np.uint8)
    return Image.fromarray(img, "L")
