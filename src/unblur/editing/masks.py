"""Inpainting masks: read from a picture or drawn as a box, and the canvas of an outpainting.

A mask is a bool tensor (B, 1, H, W) (or any shape that broadcasts against the data, for
vectors): True where the picture is regenerated, False where the input is kept. In a picture,
white (>= half the range, after any alpha is taken as transparent = keep) means regenerate.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

MAX_EXTEND_FACTOR = 4  # outpainting: the new canvas is at most this many times the model's side


def read_mask(path: str | Path, size: tuple[int, int], *, option: str = "--mask",
              max_pixels: int | None = None) -> Tensor:
    """The mask in the picture ``path`` as a bool tensor (1, 1, H, W) for an image of ``size``.

    Any mode is read (grey, RGB, palette, with alpha: transparent pixels keep); the grey level
    is thresholded at half. A mask of another size but the same aspect ratio is resized with
    nearest neighbours and a warning; another aspect ratio is an error (the mask would not line
    up with the picture).
    """
    from PIL import Image, ImageOps

    from ..images import check_pixels, pillow_bomb_check, why_unreadable

    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"{option} {str(path)!r} does not exist: give a mask picture (white = regenerate)")
    try:  # not ``images.open_image``: that flattens the alpha channel a mask may be drawn in
        with pillow_bomb_check(max_pixels), Image.open(path) as im:
            check_pixels(im.size, max_pixels)
            im.load()
            img = ImageOps.exif_transpose(im)
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file
        raise ValueError(f"{option} {str(path)!r} {why_unreadable(e)}") from None
    alpha = None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
    grey = np.asarray(img.convert("L"), dtype=np.float32) / 255.0  # (h, w) in [0, 1]
    if alpha is not None:
        grey = grey * alpha
    h, w = grey.shape
    H, W = size
    if (h, w) != (H, W):
        if abs(h * W - w * H) > max(h, w, H, W):  # aspect ratios differ by more than a pixel's rounding
            raise ValueError(f"{option} {str(path)!r} is {w}x{h} but the image is {W}x{H}: a mask must have the "
                             "image's aspect ratio (draw it on the image, or crop both alike)")
        warnings.warn(f"{option} {str(path)!r} is {w}x{h}; resized to the image's {W}x{H}", stacklevel=2)
        t = torch.from_numpy(grey)[None, None]
        grey = F.interpolate(t, size=(H, W), mode="nearest")[0, 0].numpy()
    return torch.from_numpy(grey >= 0.5)[None, None]


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` (pixels, x1 and y1 exclusive) as four integers."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        box = tuple(int(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise ValueError(f"--mask-box must be four integers x0,y0,x1,y1 (pixels; x1, y1 exclusive), got {text!r}")
    return box  # type: ignore[return-value]


def box_mask(box: tuple[int, int, int, int], size: tuple[int, int]) -> Tensor:
    """A (1, 1, H, W) mask that regenerates the box x0 <= x < x1, y0 <= y < y1."""
    x0, y0, x1, y1 = box
    H, W = size
    if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
        raise ValueError(f"--mask-box {x0},{y0},{x1},{y1} does not lie inside the {W}x{H} image with x0 < x1 and "
                         f"y0 < y1: give a box within 0..{W} across and 0..{H} down")
    m = torch.zeros(1, 1, H, W, dtype=torch.bool)
    m[..., y0:y1, x0:x1] = True
    return m


def check_mask(mask: Tensor, *, name: str = "the mask") -> Tensor:
    """A bool mask with at least one pixel to regenerate (else a ValueError: nothing to do)."""
    mask = torch.as_tensor(mask).bool()
    if not bool(mask.any()):
        raise ValueError(f"{name} is all black: it asks to keep every pixel, so there is nothing to inpaint "
                         "(white marks what to regenerate)")
    return mask


def parse_extend(text: str) -> tuple[int, int, int, int]:
    """``"left,right,top,bottom"`` pixels to add, or one number for every side."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) == 1:
        vals = vals * 4
    if len(vals) != 4 or min(vals) < 0 or max(vals) == 0:
        raise ValueError(f"--extend must be left,right,top,bottom in pixels (>= 0, at least one > 0), or one "
                         f"number for every side; got {text!r}")
    return tuple(vals)  # type: ignore[return-value]


def extend_canvas(x: Tensor, extend: tuple[int, int, int, int], *,
                  model_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(canvas, mask): ``x`` (B, C, H, W) with ``extend`` = (left, right, top, bottom) pixels
    added, edge-replicated (the values there are regenerated), and the mask of the new pixels.

    The canvas may be at most ``MAX_EXTEND_FACTOR`` times the model's size on each side.
    """
    left, right, top, bottom = (int(v) for v in extend)
    if min(left, right, top, bottom) < 0 or left + right + top + bottom == 0:
        raise ValueError(f"extend must be >= 0 on every side and > 0 on one, got {extend}")
    H, W = x.shape[-2:]
    h, w = H + top + bottom, W + left + right
    mh, mw = (MAX_EXTEND_FACTOR * s for s in model_size)
    if h > mh or w > mw:
        raise ValueError(f"--extend {left},{right},{top},{bottom} makes a {w}x{h} canvas; a model of "
                         f"{model_size[1]}x{model_size[0]} outpaints at most {mw}x{mh} "
                         f"({MAX_EXTEND_FACTOR} times its size): extend less, or outpaint in several passes")
    canvas = F.pad(x, (left, right, top, bottom), mode="replicate")
    mask = torch.ones((1, 1, h, w), dtype=torch.bool, device=x.device)
    mask[..., top : top + H, left : left + W] = False
    return canvas, mask
