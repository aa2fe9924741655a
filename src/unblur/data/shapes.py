"""``builtin:shapes``: procedurally drawn, captioned images of coloured shapes (no download).

Each image holds one shape (``builtin:shapes``) or two with a spatial relation between them
(``builtin:shapes:pairs``), in a named colour on a named background, at a named size and
position, with a caption in one of several phrasings::

    a red circle on a white background
    small blue triangle, top left
    a red circle above a blue square

Item ``i`` of seed ``s`` is drawn from its own generator seeded by ``(s, i)``, so a set is
deterministic, any length, and its first items do not depend on how many are asked for.
Shapes are drawn at four times the size and box-filtered down (anti-aliased edges).
``unblur.data.shapes_check`` checks a picture against the attributes its prompt asked for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from .base import Data, as_size, check_channels, to_channels

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "yellow": (245, 215, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
SIZES = {"small": 0.24, "medium": 0.34, "large": 0.46}  # extent as a fraction of the shorter side
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
RELATIONS = {"above": "above", "below": "below", "left of": "to the left of", "right of": "to the right of"}
SUPERSAMPLE = 4
DEFAULT_SIZE = 32


@dataclass(frozen=True)
class Shape:
    colour: str
    shape: str
    size: str  # small | medium | large
    cx: float  # centre, as a fraction of the width
    cy: float  # centre, as a fraction of the height
    extent: float  # full width of the shape, as a fraction of the shorter side


@dataclass(frozen=True)
class ShapeItem:
    shapes: tuple[Shape, ...]
    background: str
    position: str | None  # named position of a single shape
    relation: str | None  # relation of shapes[0] to shapes[1] in the pairs variant
    caption: str


def shape_polygons(kind: str, cx: float, cy: float, e: float) -> list[tuple[str, list[float]]]:
    """The primitives that draw ``kind`` centred at (cx, cy) with full extent ``e`` (pixels)."""
    h = e / 2
    if kind == "circle":
        return [("ellipse", [cx - h, cy - h, cx + h, cy + h])]
    if kind == "square":
        s = 0.9 * h
        return [("rect", [cx - s, cy - s, cx + s, cy + s])]
    if kind == "triangle":
        return [("poly", [cx, cy - h, cx + h, cy + h, cx - h, cy + h])]
    if kind == "diamond":
        return [("poly", [cx, cy - h, cx + h, cy, cx, cy + h, cx - h, cy])]
    if kind == "cross":
        t = e / 6
        return [("rect", [cx - h, cy - t, cx + h, cy + t]), ("rect", [cx - t, cy - h, cx + t, cy + h])]
    raise ValueError(f"unknown shape {kind!r}; accepted: {', '.join(SHAPES)}")


def _draw(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, e: float, fill) -> None:
    for prim, coords in shape_polygons(kind, cx, cy, e):
        if prim == "ellipse":
            draw.ellipse(coords, fill=fill)
        elif prim == "rect":
            draw.rectangle(coords, fill=fill)
        else:
            draw.polygon(coords, fill=fill)


def render(item: ShapeItem, size: tuple[int, int] = (DEFAULT_SIZE, DEFAULT_SIZE)) -> np.ndarray:
    """One item as uint8 (H, W, 3)."""
    H, W = size
    k = SUPERSAMPLE
    img = Image.new("RGB", (W * k, H * k), BACKGROUNDS[item.background])
    draw = ImageDraw.Draw(img)
    side = min(H, W) * k
    for s in item.shapes:
        _draw(draw, s.shape, s.cx * W * k, s.cy * H * k, s.extent * side, COLOURS[s.colour])
    return np.array(img.resize((W, H), Image.Resampling.BOX), dtype=np.uint8)


def coverage(kind: str, cx: float, cy: float, e: float, size: tuple[int, int]) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] (H, W) of one shape drawn as ``render`` draws it (pixels)."""
    H, W = size
    k = SUPERSAMPLE
    img = Image.new("L", (W * k, H * k), 0)
    _draw(ImageDraw.Draw(img), kind, cx * k, cy * k, e * k, 255)
    return np.asarray(img.resize((W, H), Image.Resampling.BOX), dtype=np.float32) / 255.0


def _a(word: str) -> str:
    """The indefinite article for ``word``."""
    return "an" if word[0] in "aeiou" else "a"


def _single_caption(rng, colour, shape, size, position, bg) -> str:
    forms = [
        f"{_a(colour)} {colour} {shape} on a {bg} background",
        f"{size} {colour} {shape}, {position}",
        f"a {size} {colour} {shape} at the {position} on {bg}",
        f"{colour} {shape}",
        f"a picture of {_a(colour)} {colour} {shape} on {bg}",
        f"{bg} background with a {size} {colour} {shape}",
    ]
    return forms[int(rng.integers(len(forms)))]


def _pair_caption(rng, a: Shape, rel: str, b: Shape, bg: str) -> str:
    r = RELATIONS[rel]
    forms = [
        f"{_a(a.colour)} {a.colour} {a.shape} {r} {_a(b.colour)} {b.colour} {b.shape}",
        f"{a.colour} {a.shape} {r} {b.colour} {b.shape} on {bg}",
        f"{_a(a.colour)} {a.colour} {a.shape} {r} {_a(b.colour)} {b.colour} {b.shape} on a {bg} background",
    ]
    return forms[int(rng.integers(len(forms)))]


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def make_item(
    seed: int,
    i: int,
    *,
    pairs: bool = False,
    exclude: Iterable[tuple[str, str]] = (),
    only: Iterable[tuple[str, str]] | None = None,
) -> ShapeItem:
    """Item ``i`` of seed ``seed``; (colour, shape) combinations in ``exclude`` never appear and, when
    ``only`` is given, the (first) shape's combination is one of ``only``."""
    rng = np.random.default_rng([int(seed), int(i)])
    exclude = set(map(tuple, exclude))
    only = None if only is None else [tuple(c) for c in only]
    colours, bgs = list(COLOURS), list(BACKGROUNDS)

    def combo():
        while True:
            c, s = _pick(rng, only) if only is not None else (_pick(rng, colours), _pick(rng, SHAPES))
            if (c, s) not in exclude:
                return c, s

    bg = _pick(rng, bgs)
    if not pairs:
        colour, kind = combo()
        size = _pick(rng, list(SIZES))
        e = SIZES[size]
        pos = int(rng.integers(len(POSITIONS)))
        row, col = divmod(pos, 3)
        margin = e / 2 + 0.06
        jitter = rng.uniform(-0.03, 0.03, size=2)
        cx = margin + col * (1 - 2 * margin) / 2 + jitter[0]
        cy = margin + row * (1 - 2 * margin) / 2 + jitter[1]
        shape = Shape(colour, kind, size, float(cx), float(cy), e)
        caption = _single_caption(rng, colour, kind, size, POSITIONS[pos], bg)
        return ShapeItem((shape,), bg, POSITIONS[pos], None, caption)
    c1, s1 = combo()
    while True:
        c2, s2 = _pick(rng, colours), _pick(rng, SHAPES)
        if c2 != c1 and (c2, s2) not in exclude:
            break
    rel = _pick(rng, list(RELATIONS))
    size = _pick(rng, ["small", "medium"])
    e = SIZES[size]
    lo, hi = 0.06 + e / 2, 0.94 - e / 2  # centres of the two shapes along the relation's axis
    across = float(rng.uniform(0.3, 0.7))
    j = rng.uniform(-0.04, 0.04, size=2)
    first, second = (lo, hi) if rel in ("above", "left of") else (hi, lo)
    if rel in ("above", "below"):
        a = Shape(c1, s1, size, across + j[0], first, e)
        b = Shape(c2, s2, size, across + j[1], second, e)
    else:
        a = Shape(c1, s1, size, first, across + j[0], e)
        b = Shape(c2, s2, size, second, across + j[1], e)
    return ShapeItem((a, b), bg, None, rel, _pair_caption(rng, a, rel, b, bg))


def make_items(n: int, seed: int = 0, **kwargs) -> list[ShapeItem]:
    if int(n) < 1:
        raise ValueError(f"n must be a positive number of images, got {n}")
    return [make_item(seed, i, **kwargs) for i in range(int(n))]


def load_shapes(
    *,
    n: int = 10000,
    seed: int = 0,
    size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    pairs: bool = False,
    exclude: Iterable[tuple[str, str]] = (),
    only: Iterable[tuple[str, str]] | None = None,
    source: str | None = None,
) -> Data:
    """``n`` captioned shape images as (n, 3, H, W) in [-1, 1] (32x32 by default); labels are the
    (first) shape's kind. ``exclude`` leaves (colour, shape) combinations out (held-out prompts)."""
    hw = as_size(size) or (DEFAULT_SIZE, DEFAULT_SIZE)
    check_channels(channels)
    items = make_items(n, seed, pairs=pairs, exclude=exclude, only=only)
    pixels = np.stack([render(it, hw) for it in items])  # (n, H, W, 3) uint8
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    x = to_channels(x, channels)
    labels = torch.tensor([SHAPES.index(it.shapes[0].shape) for it in items], dtype=torch.long)
    name = "builtin:shapes:pairs" if pairs else "builtin:shapes"
    return Data(
        x=x.contiguous(),
        kind="image",
        source=source or name,
        labels=labels,
        class_names=list(SHAPES),
        captions=[it.caption for it in items],
        notes=[f"{n} images drawn with seed {seed}"],
    )
