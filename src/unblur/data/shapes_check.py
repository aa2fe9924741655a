"""Prompt fidelity on ``builtin:shapes``: does a picture show the colour, shape and relation asked for?

The background is the median of the border pixels. A pixel belongs to a palette colour ``c``
when it lies near the segment from the background to ``c`` (anti-aliased edges are blends of
the two); its position along the segment is its coverage. The colour is the palette colour
with the most clearly covered pixels; the shape is the one whose template, drawn by the same
code as the data set at the area and centroid the coverage implies, overlaps it best (soft
IoU); the relation compares the two shapes' centroids.
"""

from __future__ import annotations

import numpy as np
import torch

from .shapes import COLOURS, SHAPES, coverage

_RESIDUAL = 45.0  # max distance (0..255 units) of a pixel from the background-to-colour segment
_CORE = 0.5  # coverage above which a pixel votes for its colour
_AREA = {"circle": np.pi / 4, "square": 0.81, "triangle": 0.5, "diamond": 0.5, "cross": 5 / 9}


def _as_hwc(image) -> np.ndarray:
    """uint8 (H, W, 3), float (H, W, 3) in [0, 255], or a (3, H, W) tensor in [-1, 1] -> float (H, W, 3)."""
    if isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3):
            t = (t.clamp(-1, 1) + 1) * 127.5
            t = t.expand(3, -1, -1).permute(1, 2, 0)
        image = t.numpy()
    a = np.asarray(image, dtype=np.float32)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3) or (3, H, W), got shape {a.shape}")
    return a


def _background(a: np.ndarray) -> np.ndarray:
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])  # (2H + 2W, 3)
    return np.median(border, axis=0)


def colour_coverage(a: np.ndarray, bg: np.ndarray) -> dict[str, np.ndarray]:
    """Per palette colour, the (H, W) coverage of the pixels nearest its background-to-colour segment.

    Each pixel goes to one colour at most (the segment it is nearest to), so the blended edge
    of an orange shape does not count as a faint red one.
    """
    names = list(COLOURS)
    H, W = a.shape[:2]
    rel = a - bg
    ts, resids = [], []
    for name in names:
        d = np.asarray(COLOURS[name], np.float32) - bg
        dd = float(d @ d)
        if dd < 60.0**2:  # colour too close to this background to be told apart
            ts.append(np.zeros((H, W), np.float32))
            resids.append(np.full((H, W), np.inf, np.float32))
            continue
        t = np.clip(rel @ d / dd, 0.0, 1.0)  # (H, W)
        ts.append(t)
        resids.append(np.linalg.norm(rel - t[..., None] * d, axis=-1))
    resid = np.stack(resids)  # (K, H, W)
    best = resid.argmin(axis=0)  # (H, W)
    out = {}
    for k, name in enumerate(names):
        keep = (best == k) & (resid[k] < _RESIDUAL) & (ts[k] > 0.15)
        out[name] = np.where(keep, ts[k], 0.0).astype(np.float32)
    return out


def predict_shape(cov: np.ndarray) -> tuple[str | None, float]:
    """(shape, soft IoU) of the template that best explains a coverage map; (None, 0) when empty."""
    area = float(cov.sum())
    if area < 4.0:
        return None, 0.0
    H, W = cov.shape
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5
    cy, cx = float((cov * ys).sum() / area), float((cov * xs).sum() / area)
    best, best_iou = None, -1.0
    for kind in SHAPES:
        e0 = float(np.sqrt(area / _AREA[kind]))
        for scale in (0.93, 1.0, 1.07):
            e = e0 * scale
            t = coverage(kind, cx, cy, e, (H, W))
            # Move the template so that its centroid lands on the image's (a triangle's is low).
            ta = float(t.sum())
            if ta <= 0:
                continue
            ty, tx = float((t * ys).sum() / ta), float((t * xs).sum() / ta)
            t = coverage(kind, 2 * cx - tx, 2 * cy - ty, e, (H, W))
            iou = float(np.minimum(t, cov).sum() / max(np.maximum(t, cov).sum(), 1e-6))
            if iou > best_iou:
                best, best_iou = kind, iou
    return best, best_iou


def predict_colours(cov: dict[str, np.ndarray]) -> list[tuple[str, int]]:
    """Palette colours by number of clearly covered pixels, most first (only those with any)."""
    counts = [(name, int((c > _CORE).sum())) for name, c in cov.items()]
    return sorted([c for c in counts if c[1] > 0], key=lambda c: -c[1])


def _centroid(c: np.ndarray) -> tuple[float, float]:
    H, W = c.shape
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    s = max(float(c.sum()), 1e-6)
    return float((c * ys).sum() / s), float((c * xs).sum() / s)


def relation_of(a: np.ndarray, b: np.ndarray) -> str:
    """The relation of coverage ``a`` to coverage ``b``: above, below, left of or right of."""
    (ya, xa), (yb, xb) = _centroid(a), _centroid(b)
    dy, dx = yb - ya, xb - xa
    if abs(dy) >= abs(dx):
        return "above" if dy > 0 else "below"
    return "left of" if dx > 0 else "right of"


def check(image, colour: str, shape: str, *, colour2: str | None = None, shape2: str | None = None,
          relation: str | None = None) -> dict[str, bool]:
    """Whether ``image`` shows what a prompt asked for.

    Single shape: ``{"colour": ..., "shape": ...}``: the dominant colour is ``colour`` and the
    shape (of the dominant colour's pixels) is ``shape``. Two shapes (give ``colour2``,
    ``shape2`` and ``relation``, one of above, below, left of, right of): both colours are
    present with at least a fifth of the coloured pixels each, each colour's shape is right,
    and ``{"relation": ...}`` holds between the first and the second.
    """
    for c in (colour, colour2):
        if c is not None and c not in COLOURS:
            raise ValueError(f"unknown colour {c!r}; accepted: {', '.join(COLOURS)}")
    for s in (shape, shape2):
        if s is not None and s not in SHAPES:
            raise ValueError(f"unknown shape {s!r}; accepted: {', '.join(SHAPES)}")
    a = _as_hwc(image)
    cov = colour_coverage(a, _background(a))
    ranked = predict_colours(cov)
    if colour2 is None:
        top = ranked[0][0] if ranked else None
        kind, _ = predict_shape(cov[top]) if top else (None, 0.0)
        return {"colour": top == colour, "shape": kind == shape}
    total = sum(n for _, n in ranked) or 1
    counts = dict(ranked)
    ok_colour = all(counts.get(c, 0) >= 0.2 * total for c in (colour, colour2))
    k1, _ = predict_shape(cov[colour])
    k2, _ = predict_shape(cov[colour2])
    out = {"colour": ok_colour, "shape": k1 == shape and (shape2 is None or k2 == shape2)}
    if relation is not None:
        if relation not in ("above", "below", "left of", "right of"):
            raise ValueError(f"unknown relation {relation!r}; accepted: above, below, left of, right of")
        out["relation"] = ok_colour and relation_of(cov[colour], cov[colour2]) == relation
    return out


def check_item(image, item) -> dict[str, bool]:
    """``check`` against the attributes of a ``ShapeItem`` (the prompt it was drawn from)."""
    a = item.shapes[0]
    if len(item.shapes) == 1:
        return check(image, a.colour, a.shape)
    b = item.shapes[1]
    return check(image, a.colour, a.shape, colour2=b.colour, shape2=b.shape, relation=item.relation)
