"""Image files and pictures: the one reader of image files, PNG writing, grids, and a density
picture for 2-D samples.

Every entry point that reads an image file (training folders, ``--image``, ``unblur restore``,
``unblur degrade``, eval folders, the web server's uploads) goes through ``normalize_mode`` and
``read_image`` / ``read_upload`` here, so a file reads the same everywhere: EXIF orientation
applied; transparency (RGBA, LA, PA, a palette with a transparency key) composited on white;
16-bit and 32-bit integer or float images scaled to 8 bits; CMYK, YCbCr and palettes to RGB;
1-bit to L. Images are resized by one rule (``fit_image``: LANCZOS when shrinking, BICUBIC when
enlarging) and become tensors in one way (``image_tensor``).

No image of more than ``MAX_PIXELS`` pixels (64 megapixels; ``max_pixels`` changes it) is
decoded: its size is read from the header first, so a few hundred bytes claiming 12000 x 12000
pixels (a decompression bomb) are refused before they cost a gigabyte. Pillow's own bomb
check (``Image.MAX_IMAGE_PIXELS``, about 89 megapixels) applies too when ``max_pixels`` is
higher: its warning is then an error.

Folders are searched by ``list_image_files``: directory links are followed (each real folder
once, so a link loop ends), and every folder or link that could not be read is reported.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
MAX_PIXELS = 64 * 2**20  # the largest image (W x H, from its header) that is decoded: 64 megapixels
_SHOW_SKIPPED = 10  # skipped folders and links named in a message


# -- finding files ----------------------------------------------------------------------------


@dataclass
class Listing:
    """What ``list_image_files`` found under ``root``."""

    root: Path
    files: list[Path] = field(default_factory=list)  # image files: each folder's sorted, then its sub-folders'
    others: Counter = field(default_factory=Counter)  # extensions of the other files
    folders: list[Path] = field(default_factory=list)  # every folder read, ``root`` first
    skipped: dict[Path, str] = field(default_factory=dict)  # folders and links not read -> why
    hidden_files: int = 0  # names starting with a dot: skipped on purpose, only counted
    hidden_folders: int = 0

    def skipped_message(self) -> str | None:
        """One sentence naming the skipped folders and links (None when there are none)."""
        if not self.skipped:
            return None
        k = len(self.skipped)
        shown = "; ".join(f"{p} ({why})" for p, why in list(self.skipped.items())[:_SHOW_SKIPPED])
        more = f"; and {k - _SHOW_SKIPPED} more" if k > _SHOW_SKIPPED else ""
        noun = "folder or link" if k == 1 else "folders or links"
        return f"skipped {k} {noun} under {str(self.root)!r}: {shown}{more}"

    def hidden_note(self) -> str | None:
        """``"3 hidden files skipped ..."`` (None when there are none)."""
        parts = [f"{n} hidden {what}{'s' if n > 1 else ''}"
                 for n, what in ((self.hidden_files, "file"), (self.hidden_folders, "folder")) if n]  # fmt: skip
        return f"{' and '.join(parts)} skipped (names starting with a dot)" if parts else None


def list_image_files(root: str | Path) -> Listing:
    """Image files under ``root``, recursively, and what was not read.

    Names starting with a dot are skipped on purpose (and counted). Directory links are
    followed, but each real folder is read once: a link back to a folder already read (a loop,
    or a second name for the same folder) and a link to a folder that holds ``root`` are
    reported in ``skipped`` instead, as are folders that cannot be listed and broken links.
    """
    out = Listing(Path(root))
    root_real = os.path.realpath(out.root)
    claimed = {root_real}  # real paths of the folders read or about to be read

    def cannot_list(e: OSError) -> None:
        out.skipped[Path(e.filename or root)] = f"cannot be listed: {type(e).__name__}: {e.strerror or e}"

    for folder, dirs, names in os.walk(out.root, onerror=cannot_list, followlinks=True):
        here = Path(folder)
        out.folders.append(here)
        visible = sorted(d for d in dirs if not d.startswith("."))
        out.hidden_folders += len(dirs) - len(visible)
        # Real folders claim their real path before links to them, so the link is the one reported.
        follow = {d for d in sorted(visible, key=lambda d: (os.path.islink(here / d), d))
                  if _claim(here / d, claimed, root_real, out.skipped)}  # fmt: skip
        dirs[:] = [d for d in visible if d in follow]
        for name in sorted(names):
            path = here / name
            if name.startswith("."):
                out.hidden_files += 1
            elif os.path.islink(path) and not os.path.exists(path):
                out.skipped[path] = f"a link to {os.readlink(path)!r}, which does not exist or loops"
            elif os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                out.files.append(path)
            else:
                out.others[os.path.splitext(name)[1].lower() or "(no extension)"] += 1
    return out


def _claim(path: Path, claimed: set[str], root_real: str, skipped: dict[Path, str]) -> bool:
    """Whether to descend into ``path``: its real folder is new and does not hold the root."""
    real = os.path.realpath(path)
    if real in claimed or _holds(real, root_real):
        loop = real not in claimed or _holds(real, os.path.realpath(path.parent))
        skipped[path] = (f"a loop: links back to {real!r}, which holds it" if loop
                         else f"the same folder as one already read ({real!r}): not read twice")  # fmt: skip
        return False
    claimed.add(real)
    return True


def _holds(folder: str, path: str) -> bool:
    """Whether the real path ``path`` is ``folder`` or lies inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def no_images_message(listing: Listing) -> str:
    root, others = listing.root, listing.others
    exts = " ".join(sorted(IMAGE_EXTENSIONS))
    skipped = listing.skipped_message()
    tail = f"; {skipped}" if skipped else ""
    if not others:
        return f"data folder {str(root)!r} is empty: put images in it ({exts}){tail}"
    found = ", ".join(f"{n} {ext}" for ext, n in others.most_common(6))
    return f"no image files in {str(root)!r} (found {found}); expected files ending in {exts}{tail}"


def list_images(path: str | Path, *, option: str = "--input") -> tuple[Path, list[Path]]:
    """(root, image files): a single image is its own folder's only file; a folder is searched
    recursively (``list_image_files``; skipped folders and links are named in one warning).
    ``option`` names the command-line option in errors."""
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            exts = " ".join(sorted(IMAGE_EXTENSIONS))
            raise ValueError(f"{option} {str(path)!r} is not an image file (expected one of {exts})")
        return path.parent, [path]
    if path.is_dir():
        listing = list_image_files(path)
        if not listing.files:
            raise ValueError(no_images_message(listing))
        if listing.skipped:
            warnings.warn(listing.skipped_message(), stacklevel=2)
        return path, listing.files
    raise ValueError(f"{option} {str(path)!r} does not exist: give an image file or a folder of images")


# -- reading ----------------------------------------------------------------------------------


class TooManyPixels(ValueError):
    """An image whose header claims more pixels than the limit; it is never decoded."""


def check_pixels(size: tuple[int, int], max_pixels: int | None = None) -> None:
    """Raise ``TooManyPixels`` when an image of ``size`` (W, H) has more than ``max_pixels``
    (default ``MAX_PIXELS``) pixels. Call it after ``Image.open`` (the header) and before
    ``load()``."""
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    w, h = size
    if w * h > limit:
        raise TooManyPixels(
            f"is {w}x{h} pixels ({w * h / 2**20:.1f} megapixels), more than the limit of "
            f"{limit / 2**20:.1f} megapixels (max_pixels={limit}); it was not decoded: shrink it "
            "first, or raise max_pixels if it is a genuine image"
        )


@contextmanager
def pillow_bomb_check(max_pixels: int | None = None) -> Iterator[None]:
    """Inside the block, Pillow's ``DecompressionBombWarning`` is an error, so such a file is a
    bad file; when ``max_pixels`` is the lower limit, the warning is silenced instead and
    ``check_pixels`` refuses the file with its size. (Pillow's ``DecompressionBombError``, at
    twice its limit, is always raised.)

    Warning filters are process-wide: enter this in the thread that starts any decoding
    threads, around all of them, not in each thread.
    """
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    pillow = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        action = "error" if pillow is not None and limit > pillow else "ignore"
        warnings.simplefilter(action, Image.DecompressionBombWarning)
        yield


def why_unreadable(e: BaseException) -> str:
    """The end of a sentence that begins with a file's name: why it was not read."""
    if isinstance(e, TooManyPixels):
        return str(e)
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"is refused by Pillow's decompression-bomb check ({text}); it was not decoded"
    return f"cannot be read as an image ({text})"


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
        a = np.nan_to_num(np.asarray(img).astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
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
    cw, ch = min(w, tw / s), min(h, th / s)  # the source region that maps onto the target (rounding kept inside)
    left, top = max(0.0, (w - cw) / 2), max(0.0, (h - ch) / 2)
    return _resample(img, target, box=(left, top, left + cw, top + ch), shrink=s < 1.0)


def fit_image(img: Image.Image, size: tuple[int, int], *, crop: bool = False) -> Image.Image:
    """``img`` at ``size`` (H, W): the whole image resized to it (the aspect ratio follows
    ``size``), or with ``crop`` scaled to cover it and centre-cropped (``cover_crop``); LANCZOS
    when shrinking, BICUBIC when enlarging, either way."""
    if crop:
        return cover_crop(img, size)
    if (img.height, img.width) == tuple(size):
        return img
    return _resample(img, size, box=None, shrink=img.height > size[0] or img.width > size[1])


def _resample(img: Image.Image, size: tuple[int, int], *, box: tuple[float, float, float, float] | None,
              shrink: bool) -> Image.Image:
    """The one resampling rule: LANCZOS when shrinking (after Pillow's integer reduction down to
    ``REDUCING_GAP`` times the target), BICUBIC when enlarging."""
    return img.resize(
        (size[1], size[0]),
        resample=Image.Resampling.LANCZOS if shrink else Image.Resampling.BICUBIC,
        box=box,
        reducing_gap=REDUCING_GAP if shrink else None,
    )


def open_image(path: str | Path, *, option: str = "image", max_pixels: int | None = None) -> Image.Image:
    """One image file as a Pillow image in mode L or RGB (EXIF-rotated, flattened), fully loaded.

    A missing file, one that is not an image, or one of more than ``max_pixels`` pixels
    (default ``MAX_PIXELS``; checked on the header, before decoding) is a ValueError that
    names ``option`` and the path.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"{option} {str(path)!r} does not exist: give an image file (PNG, JPEG, ...)")
    return _decode(path, f"{option} {str(path)!r}", max_pixels)


def decode_image(data: bytes, *, name: str = "the image", max_pixels: int | None = None) -> Image.Image:
    """An image file's bytes (e.g. an upload) as a Pillow image in mode L or RGB, fully loaded,
    with the checks of ``open_image``: the pixel count is read from the header and refused before
    anything is decoded, so a decompression bomb costs nothing."""
    return _decode(io.BytesIO(data), name, max_pixels)


class UploadTooLarge(ValueError):
    """An upload of more bytes than its limit; it is never decoded."""


def upload_bytes(text: str, *, name: str = "the upload", max_bytes: int) -> bytes:
    """The bytes of a file sent as base64 text or a ``data:`` URL (a web upload), refused
    (``UploadTooLarge``) before decoding when they would exceed ``max_bytes``; text that is not
    base64 is a ValueError naming ``name``."""
    import base64
    import binascii

    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > (max_bytes * 4) // 3 + 4:
        raise UploadTooLarge(f"{name}: the upload is about {len(text) * 3 // 4} bytes, more than the limit of "
                             f"{max_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: not valid base64 (send the file's bytes as base64 or a data: URL)") from None


def read_upload(text: str, *, name: str = "the upload", max_bytes: int, max_pixels: int | None = None
                ) -> Image.Image:
    """An image file sent as base64 text or a ``data:`` URL, as a Pillow image in mode L or RGB
    (``upload_bytes``, then ``decode_image``: the pixel count read from the header is checked
    against ``max_pixels`` before anything is decoded). Make it a tensor with ``image_tensor``."""
    return decode_image(upload_bytes(text, name=name, max_bytes=max_bytes), name=name, max_pixels=max_pixels)


def _decode(source, label: str, max_pixels: int | None) -> Image.Image:
    try:
        with pillow_bomb_check(max_pixels), Image.open(source) as im:
            check_pixels(im.size, max_pixels)  # the header's size, before anything is decoded
            im.load()  # raises on truncated data
            return normalize_mode(ImageOps.exif_transpose(im))
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file
        raise ValueError(f"{label} {why_unreadable(e)}") from None


def read_image(path: str | Path, *, channels: int | None = None, size: tuple[int, int] | None = None,
               option: str = "image", max_pixels: int | None = None) -> Tensor:
    """One image file as (C, H, W) float32 in [-1, 1].

    ``channels`` (1 or 3) converts the mode; ``size`` (H, W) resizes the whole image (LANCZOS
    when shrinking, BICUBIC when enlarging; no crop, so the aspect ratio follows ``size``);
    ``max_pixels`` bounds the file's own size (see ``open_image``).
    """
    return image_tensor(open_image(path, option=option, max_pixels=max_pixels), channels=channels, size=size)


def image_tensor(img: Image.Image, *, channels: int | None = None, size: tuple[int, int] | None = None,
                 crop: bool = False) -> Tensor:
    """A Pillow image (L or RGB, as ``open_image`` / ``decode_image`` give it) as (C, H, W) float32
    in [-1, 1]: ``channels`` (1 or 3) converts the mode, ``size`` (H, W) resizes it (``fit_image``;
    ``crop``: cover and centre-crop instead of changing the aspect ratio)."""
    if channels is not None:
        img = img.convert("L" if channels == 1 else "RGB")
    if size is not None:
        img = fit_image(img, size, crop=crop)
    a = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, H, W)
    return torch.from_numpy(np.ascontiguousarray(a))


def write_image(x: Tensor, path: str | Path, text: dict[str, str] | None = None) -> None:
    """One image (C, H, W) in [-1, 1] as a PNG (or the format of the suffix), written atomically
    (a kill never leaves a partial file; not synced to the disk one by one: outputs come by the
    thousand, and the records that list them are synced after them). ``text``: PNG text chunks
    (keyword -> text), e.g. the settings that made the image."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    atomic_write_bytes(path, image_bytes(x, fmt, text), sync=False)


def image_bytes(x: Tensor, fmt: str = "PNG", text: dict[str, str] | None = None) -> bytes:
    """One image (C, H, W) in [-1, 1] encoded as ``fmt``; a PNG carries ``text`` as text chunks
    (iTXt where a value is not Latin-1)."""
    buf = io.BytesIO()
    info = None
    if text and fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for k, v in text.items():
            try:
                v.encode("latin-1")
                info.add_text(k, v)
            except UnicodeEncodeError:
                info.add_itxt(k, v)
    to_pil(x).save(buf, format=fmt, pnginfo=info)
    return buf.getvalue()


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
