"""Fuzzing the one image reader: whatever bytes sit in a file, ``read_image`` and ``load_folder``
either give finite float32 images in [-1, 1] with the channels asked for, or raise a ValueError
that names the file; never another exception, and never a file written."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from unblur.data import load_folder
from unblur.images import IMAGE_EXTENSIONS, read_image

MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I", "I;16", "F")
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
BYTES_PER_PIXEL = {"L": 1, "LA": 2, "P": 1, "PA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "I": 4, "I;16": 2, "F": 4}
FUZZ = settings(
    max_examples=500,  # a few seconds per test on one core
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def random_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    """Random pixels in ``mode`` (for "F" and "I" any bit pattern: NaN, infinities, negatives)."""
    rng = np.random.default_rng(seed)
    if mode == "1":
        return Image.frombytes("1", (width, height), rng.bytes((width + 7) // 8 * height))
    img = Image.frombytes(mode, (width, height), rng.bytes(BYTES_PER_PIXEL[mode] * width * height))
    if mode in ("P", "PA"):
        img.putpalette(rng.bytes(768))
    return img


def encode(img: Image.Image, fmt: str) -> bytes:
    """``img`` saved as ``fmt``; TIFF, then RGB PNG, where ``fmt`` cannot hold its mode."""
    for target, convert in ((fmt, None), ("TIFF", None), ("PNG", "RGB")):
        buf = io.BytesIO()
        try:
            (img.convert(convert) if convert else img).save(buf, format=target)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return buf.getvalue()
    raise AssertionError(f"cannot save a {img.mode} image at all")


safe_names = st.text(
    alphabet=st.characters(categories=("L", "N"), include_characters=" -_()'\"+,;=!~"), min_size=1, max_size=16
)
extensions = st.sampled_from(sorted(IMAGE_EXTENSIONS)).flatmap(lambda ext: st.sampled_from([ext, ext.upper()]))


@st.composite
def image_files(draw) -> tuple[str, bytes]:
    """(file name, contents): a real image, a truncated one, or random bytes."""
    name = draw(safe_names) + draw(extensions)
    kind = draw(st.sampled_from(["image", "image", "truncated", "random"]))
    if kind == "random":
        return name, draw(st.binary(max_size=300))
    img = random_image(draw(st.sampled_from(MODES)), draw(st.integers(1, 64)), draw(st.integers(1, 97)),
                       draw(st.integers(0, 2**32 - 1)))  # fmt: skip
    data = encode(img, draw(st.sampled_from(FORMATS)))
    if kind == "truncated":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    return name, data


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def names_a_file(message: str, paths: list[Path]) -> bool:
    return any(str(p) in message or repr(str(p)) in message for p in paths)


def check_images(x: torch.Tensor, channels: int) -> None:
    assert x.dtype == torch.float32 and x.shape[-3] == channels
    assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1


def write_folder(root: Path, files: list[tuple[str, bytes]]) -> list[Path]:
    paths = []
    for i, (name, data) in enumerate(files):
        path = root / f"{i}_{name}"  # distinct names, none starting with a dot
        path.write_bytes(data)
        paths.append(path)
    return paths


@FUZZ
@given(file=image_files(), channels=st.sampled_from([None, 1, 3]))
def test_read_image_reads_or_names_the_file(tmp_path_factory, file, channels):
    root = tmp_path_factory.mktemp("one")
    (path,) = write_folder(root, [file])
    before = snapshot(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow may warn about odd files; only errors matter here
        try:
            x = read_image(path, channels=channels)
        except ValueError as e:
            event("refused")
            assert names_a_file(str(e), [path]), str(e)
        else:
            event("read")
            check_images(x, channels or x.shape[0])
            assert x.shape[0] in (1, 3)
    assert snapshot(root) == before


@FUZZ
@given(files=st.lists(image_files(), min_size=1, max_size=3), channels=st.sampled_from([None, 1, 3]),
       size=st.sampled_from([None, 8, (5, 7)]), max_bad_fraction=st.sampled_from([0.0, 1.0]))  # fmt: skip
def test_load_folder_loads_or_names_the_file(tmp_path_factory, files, channels, size, max_bad_fraction):
    root = tmp_path_factory.mktemp("folder")
    paths = write_folder(root, files)
    before = snapshot(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            data = load_folder(root, channels=channels, size=size, max_bad_fraction=max_bad_fraction, workers=1)
        except ValueError as e:
            event("refused")
            assert names_a_file(str(e), paths), str(e)
        else:
            event("loaded")
            assert 1 <= len(data) <= len(paths) and set(data.paths) <= {str(p) for p in paths}
            check_images(data.x, channels or data.channels)
            assert data.channels in (1, 3)
            if size is not None:
                assert data.image_size == ((size, size) if isinstance(size, int) else size)
    assert snapshot(root) == before
    assert not [p for p in os.listdir(root) if p not in {q.name for q in paths}]
