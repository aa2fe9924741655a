"""builtin:shapes: deterministic captioned images, and the prompt-fidelity checker on real images."""

import numpy as np
import pytest
import torch

from unblur.data import load_data
from unblur.data.shapes import COLOURS, RELATIONS, SHAPES, make_item, make_items, render
from unblur.data.shapes_check import check, check_item


def test_shapes_are_deterministic_any_length_and_captioned():
    a = load_data("builtin:shapes", n=40, seed=3)
    b = load_data("builtin:shapes", n=60, seed=3)
    assert a.x.shape == (40, 3, 32, 32) and a.x.min() >= -1 and a.x.max() <= 1
    torch.testing.assert_close(a.x, b.x[:40])  # the first items do not depend on n
    assert a.captions == b.captions[:40]
    c = load_data("builtin:shapes", n=40, seed=4)
    assert not torch.equal(a.x, c.x)
    assert len(set(a.captions)) > 20  # several phrasings and attributes
    for cap, lab in zip(a.captions, a.labels.tolist()):
        assert SHAPES[lab] in cap
    assert load_data("builtin:shapes", n=4, size=48).x.shape == (4, 3, 48, 48)
    pairs = load_data("builtin:shapes:pairs", n=30)
    assert all(any(r in cap for r in RELATIONS.values()) for cap in pairs.captions)


def test_excluded_combinations_never_appear():
    held = [("red", "circle"), ("blue", "square")]
    for i in range(200):
        it = make_item(0, i, exclude=held)
        assert all((s.colour, s.shape) not in held for s in it.shapes)
    only = [make_item(1, i, only=held) for i in range(50)]
    assert all((it.shapes[0].colour, it.shapes[0].shape) in held for it in only)


@pytest.mark.parametrize("pairs", [False, True])
def test_fidelity_checker_is_accurate_on_real_images(pairs):
    """At least 95% right on real images, and it rejects a wrong colour or shape just as well."""
    items = make_items(300 if not pairs else 200, seed=7, pairs=pairs)
    rng = np.random.default_rng(0)
    right, wrong_colour, wrong_shape = [], [], []
    for it in items:
        img = render(it)
        r = check_item(img, it)
        right.append(all(r.values()))
        a = it.shapes[0]
        other_c = [c for c in COLOURS if c != a.colour and (len(it.shapes) == 1 or c != it.shapes[1].colour)]
        other_s = [s for s in SHAPES if s != a.shape]
        kw = {}
        if pairs:
            b = it.shapes[1]
            kw = {"colour2": b.colour, "shape2": b.shape, "relation": it.relation}
        wrong_colour.append(not check(img, other_c[rng.integers(len(other_c))], a.shape, **kw)["colour"])
        wrong_shape.append(not check(img, a.colour, other_s[rng.integers(len(other_s))], **kw)["shape"])
        if pairs:
            flipped = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
            kw["relation"] = flipped[it.relation]
            assert not check(img, a.colour, a.shape, **kw)["relation"]
    assert np.mean(right) >= 0.95, np.mean(right)
    assert np.mean(wrong_colour) >= 0.95 and np.mean(wrong_shape) >= 0.95


def test_checker_accepts_tensors_and_rejects_blank_images():
    it = make_item(0, 0)
    img = render(it)
    t = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1
    assert check_item(t, it) == check_item(img, it)
    blank = np.full((32, 32, 3), 255, np.uint8)
    assert check(blank, "red", "circle") == {"colour": False, "shape": False}
    with pytest.raises(ValueError, match="accepted: red"):
        check(img, "teal", "circle")
