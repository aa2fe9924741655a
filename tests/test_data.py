"""The data layer: image folders, .npy arrays, built-in sets and the 2-D toy densities."""

from __future__ import annotations

import io
import json
import math
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from unblur.data import (
    TOY2D,
    Data,
    DataWarning,
    base,
    get_toy2d,
    load_data,
    random_hflip,
    random_shift,
    split,
)
from unblur.eval.extractors import load_extractor, reference_features
from unblur.images import list_image_files, read_image
from unblur.utils import seeded_generators

# -- helpers ----------------------------------------------------------------------------------


def _rgb(h, w, color=(200, 40, 40)):
    return Image.new("RGB", (w, h), color)


def _save(img: Image.Image, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def _grays(root, n=3, h=12, w=16):
    for i in range(n):
        _save(Image.new("L", (w, h), 30 * i), root / f"g{i}.png")


# -- folders: formats, modes, sizes -----------------------------------------------------------


def test_folder_mixed_formats_and_modes(tmp_path):
    root = tmp_path / "imgs"
    _save(_rgb(20, 30), root / "a.png")
    _save(_rgb(20, 30, (10, 200, 10)), root / "b.JPG", quality=95)
    _save(_rgb(20, 30), root / "c.webp")
    _save(_rgb(20, 30), root / "d.bmp")
    _save(Image.new("CMYK", (30, 20), (0, 255, 255, 0)), root / "e.tiff")  # red in CMYK
    _save(Image.new("RGBA", (30, 20), (0, 0, 0, 0)), root / "f_transparent.png")
    _save(Image.new("LA", (30, 20), (0, 0)), root / "g_la.png")
    p = Image.new("P", (40, 40), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.info["transparency"] = 0
    _save(p, root / "h_palette.png", transparency=0)
    _save(Image.fromarray(np.full((20, 30), 65535, np.uint16)), root / "i_16bit.png")
    _save(Image.new("1", (30, 20), 1), root / "j_bitmap.png")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "junk.png").write_bytes(b"not an image")
    (root / "._k.jpg").write_bytes(b"AppleDouble junk")

    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # hidden junk must be skipped, not warned
        data = load_data(root)
    assert data.kind == "image" and len(data) == 10
    assert data.channels == 3  # some images are colored
    assert data.image_size == (20, 20)  # most common size is 20x30: its shorter side, square
    assert data.x.dtype == torch.float32 and data.x.shape == (10, 3, 20, 20)
    assert data.x.min() >= -1 and data.x.max() <= 1
    by_name = {p.rsplit("/", 1)[-1]: i for i, p in enumerate(data.paths)}
    white = torch.ones(3)
    for name in ("f_transparent.png", "g_la.png", "h_palette.png", "i_16bit.png", "j_bitmap.png"):
        assert torch.allclose(data.x[by_name[name]].mean((1, 2)), white, atol=1e-3), name
    assert torch.allclose(data.x[by_name["e.tiff"]][:, 10, 10], torch.tensor([1.0, -1.0, -1.0]))
    assert data.labels is None and data.captions is None
    assert "images: 10 x 3 x 20 x 20" in data.summary()


def test_folder_grayscale_channels_and_explicit_options(tmp_path):
    root = tmp_path / "gray"
    _save(Image.new("L", (16, 12), 0), root / "a.png")
    _save(Image.new("LA", (16, 12), (255, 255)), root / "b.png")
    _save(Image.fromarray(np.zeros((12, 16), np.uint16)), root / "c.tif")
    _save(Image.new("1", (16, 12), 0), root / "d.bmp")
    data = load_data(root)
    assert data.channels == 1 and data.x.shape == (4, 1, 12, 12)
    rgb = load_data(root, channels=3, size=(6, 8))
    assert rgb.x.shape == (4, 3, 6, 8)
    assert torch.equal(rgb.x[:, 0], rgb.x[:, 1])
    with pytest.raises(ValueError, match="channels"):
        load_data(root, channels=2)


def test_most_common_size_and_keep_aspect(tmp_path):
    root = tmp_path / "sizes"
    for i in range(3):
        _save(_rgb(20, 30), root / f"wide{i}.png")
    _save(_rgb(40, 40), root / "square.png")
    assert load_data(root).image_size == (20, 20)
    assert load_data(root, keep_aspect=True).image_size == (20, 30)
    assert load_data(root, keep_aspect=True, size=10).image_size == (10, 15)
    assert load_data(root, size=(8, 12)).image_size == (8, 12)
    assert load_data(root, size=32).image_size == (32, 32)  # upscaling too


def test_exif_rotation_is_applied(tmp_path):
    root = tmp_path / "exif"
    img = _rgb(20, 40)  # stored 40 wide, 20 high; orientation 6 shows it 20 wide, 40 high
    exif = img.getexif()
    exif[0x0112] = 6
    _save(img, root / "rot.jpg", exif=exif)
    assert load_data(root, keep_aspect=True).image_size == (40, 20)


def test_class_labels_from_subfolders(tmp_path):
    root = tmp_path / "classes"
    _save(_rgb(8, 8), root / "dog" / "a.png")
    _save(_rgb(8, 8), root / "cat" / "b.png")
    _save(_rgb(8, 8), root / "cat" / "deeper" / "c.png")  # still a cat
    data = load_data(root)
    assert data.class_names == ["cat", "dog"] and data.num_classes == 2
    by_name = {p.rsplit("/", 1)[-1]: int(data.labels[i]) for i, p in enumerate(data.paths)}
    assert by_name == {"a.png": 1, "b.png": 0, "c.png": 0}
    assert data.labels.dtype == torch.long
    assert "classes: 2 (cat 2, dog 1)" in data.summary()

    _save(_rgb(8, 8), root / "loose.png")  # an image in the root: no labels at all
    assert load_data(root).labels is None

    single = tmp_path / "single"
    _save(_rgb(8, 8), single / "only" / "a.png")  # one sub-folder: no labels
    assert load_data(single).labels is None


def test_captions_from_txt_and_metadata(tmp_path):
    root = tmp_path / "captions"
    _save(_rgb(8, 8), root / "a.png")
    (root / "a.txt").write_text("  a red square\n")
    _save(_rgb(8, 8), root / "sub" / "b.png")
    _save(_rgb(8, 8), root / "sub" / "c.png")
    (root / "sub" / "c.txt").write_text("loses to metadata")
    lines = [{"file_name": "b.png", "text": "a blue circle"}, {"file_name": "c.png", "text": "two"}]
    (root / "sub" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    _save(_rgb(8, 8), root / "d.png")  # no caption
    data = load_data(root)
    caps = {p.rsplit("/", 1)[-1]: c for p, c in zip(data.paths, data.captions)}
    want = {"a.png": "a red square", "b.png": "a blue circle", "c.png": "two", "d.png": None}
    assert caps == want
    assert "captions: 3 of 4" in data.summary()

    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert batch["x"].shape == (4, 3, 8, 8)
    assert sorted(batch["caption"]) == ["", "a blue circle", "a red square", "two"]

    (root / "sub" / "metadata.jsonl").write_text('{"file_name": "b.png", "text": oops}\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl, line 1"):
        load_data(root)


# -- folders: bad files and bad paths ---------------------------------------------------------


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_one_truncated_file_gives_one_warning(tmp_path):
    root = tmp_path / "one_bad"
    rng = np.random.default_rng(0)
    for i in range(11):
        _save(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)), root / f"{i}.png")
    _truncate(root / "3.png")
    with pytest.warns(DataWarning) as record:
        data = load_data(root)
    assert len(record) == 1
    assert "3.png" in str(record[0].message) and "1 of 11" in str(record[0].message)
    assert len(data) == 10 and not any(p.endswith("3.png") for p in data.paths)
    assert "skipped 1 unreadable file" in data.summary()


def test_too_many_bad_files_is_an_error(tmp_path):
    root = tmp_path / "many_bad"
    for i in range(4):
        _save(_rgb(8, 8), root / f"{i}.jpg")
    _truncate(root / "0.jpg", 0.3)
    (root / "1.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(ValueError, match="max_bad_fraction") as e:
        load_data(root)
    assert "2 of 4" in str(e.value) and "1.jpg" in str(e.value)
    with pytest.warns(DataWarning):
        assert len(load_data(root, max_bad_fraction=0.5)) == 2

    for i in (2, 3):
        (root / f"{i}.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="none of the 4"):
        load_data(root, max_bad_fraction=1.0)


def test_bad_paths_are_helpful_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_data(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        load_data(tmp_path / "empty")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"no image files .*found 1 \.txt"):
        load_data(tmp_path / "texts")
    one = _save(_rgb(4, 4), tmp_path / "one.png")
    with pytest.raises(ValueError, match="single image"):
        load_data(one)
    with pytest.raises(ValueError, match="n=5 applies to builtin:toy2d only"):
        load_data(tmp_path / "texts", n=5)


# -- folders: links, unreadable folders, bombs, default size and channels ---------------------


def _messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, DataWarning)]


def test_symlinked_class_folder_is_loaded_with_its_class(tmp_path):
    root, elsewhere = tmp_path / "classes", tmp_path / "elsewhere"
    _save(_rgb(8, 8), root / "cat" / "a.png")
    _save(_rgb(8, 8), root / "cat" / "b.png")
    _save(_rgb(8, 8), elsewhere / "dogs" / "c.png")
    (elsewhere / "dogs" / "c.txt").write_text("a dog")  # captions beside linked images count too
    (root / "dog").symlink_to(elsewhere / "dogs", target_is_directory=True)
    (root / ".cache").mkdir()
    (root / ".DS_Store").write_bytes(b"junk")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # nothing was skipped that needs a warning
        data = load_data(root)
    assert data.class_names == ["cat", "dog"] and data.labels.tolist() == [0, 0, 1]
    assert data.paths[2] == str(root / "dog" / "c.png") and data.captions[2] == "a dog"
    assert "1 hidden file and 1 hidden folder skipped (names starting with a dot)" in data.notes


def test_symlink_loop_and_broken_link_are_reported_once(tmp_path):
    root = tmp_path / "loop"
    _save(_rgb(8, 8), root / "a" / "x.png")
    (root / "a" / "up").symlink_to(root, target_is_directory=True)  # a loop back to the root
    (root / "a" / "self").symlink_to(root / "a", target_is_directory=True)  # and to its own folder
    (root / "again").symlink_to(root / "a", target_is_directory=True)  # a second name for a/
    (root / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a broken link
    (root / "parent").symlink_to(tmp_path, target_is_directory=True)  # holds the root: a loop
    listing = list_image_files(root)
    assert listing.files == [root / "a" / "x.png"]
    assert sorted(p.name for p in listing.skipped) == ["again", "gone.png", "parent", "self", "up"]
    assert "loop" in listing.skipped[root / "a" / "up"] and "loop" in listing.skipped[root / "parent"]
    assert "already read" in listing.skipped[root / "again"]
    assert "does not exist" in listing.skipped[root / "gone.png"]

    with pytest.warns(DataWarning) as record:
        data = load_data(root)
    (message,) = _messages(record)  # one warning naming them all
    assert "skipped 5 folders or links" in message and str(root / "a" / "up") in message
    assert len(data) == 1 and sum("skipped 5 folders or links" in n for n in data.notes) == 1


def test_unreadable_sub_folder_is_reported(tmp_path, monkeypatch):
    root = tmp_path / "locked"
    _save(_rgb(8, 8), root / "cat" / "a.png")
    _save(_rgb(8, 8), root / "dog" / "b.png")
    _save(_rgb(8, 8), root / "secret" / "c.png")
    locked = root / "secret"
    if os.geteuid() == 0:
        # Running as root, chmod 000 does not stop listing the folder: make listing it fail the
        # way a PermissionError would, so the onerror path is tested all the same.
        real_scandir = os.scandir

        def scandir(path="."):
            if os.fspath(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(locked))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    else:
        locked.chmod(0)  # given back in the finally below, so that tmp_path can be removed
    try:
        with pytest.warns(DataWarning) as record:
            data = load_data(root)
    finally:
        locked.chmod(0o755)
    (message,) = _messages(record)
    assert str(locked) in message and "PermissionError" in message
    assert data.class_names == ["cat", "dog"] and any(str(locked) in n for n in data.notes)


def _png_bomb(path, width=12000, height=12000):
    """A 1-bit PNG of ``width`` x ``height`` black pixels: a few kB on disk, gigabytes decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grey
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_a_bad_file_never_decoded(tmp_path, monkeypatch):
    root = tmp_path / "bomb"
    for i in range(10):
        _save(_rgb(8, 8), root / f"{i}.png")
    bomb = _png_bomb(root / "bomb.png")
    assert bomb.stat().st_size < 100_000
    # The work that a decoded bomb costs, counted: every image file loaded (``load``) and every
    # pixel buffer Pillow allocates (``Image.core.new``, where decoding writes its pixels).
    loaded, allocated = [], []
    real_load, real_new = ImageFile.ImageFile.load, Image.core.new
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: loaded.append(im.size) or real_load(im))
    monkeypatch.setattr(Image.core, "new", lambda mode, size, *a: allocated.append(size) or real_new(mode, size, *a))

    with pytest.warns(DataWarning) as record:
        data = load_data(root)
    (message,) = _messages(record)
    assert "bomb.png" in message and "12000x12000" in message and "not decoded" in message
    assert len(data) == 10 and (12000, 12000) not in loaded
    assert set(loaded) == {(8, 8)}  # only the good files were loaded
    assert allocated and max(w * h for w, h in allocated) <= 8 * 8  # no buffer larger than a good image

    with pytest.raises(ValueError, match=r"bomb\.png.*12000x12000 pixels.*max_pixels"):
        read_image(bomb)
    with pytest.raises(ValueError, match=r"bomb\.png.*decompression-bomb"):
        read_image(bomb, max_pixels=10**9)  # past our limit, Pillow's own check still refuses it
    assert (12000, 12000) not in loaded
    with pytest.raises(ValueError, match="12000x12000"):
        load_data(root, max_bad_fraction=0.0)


def test_large_photos_default_to_32_pixels_with_a_note(tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        _save(_rgb(120, 90, (i * 50, 0, 0)), root / f"p{i}.jpg")  # 120 high, 90 wide
    data = load_data(root)
    assert data.image_size == (32, 32)
    assert "images are 120x90; training at 32x32 (data.size not set): set data.size to choose" in data.notes
    assert load_data(root, keep_aspect=True).image_size == (43, 32)
    assert load_data(root, size=(100, 90)).image_size == (100, 90)  # a given size is used as is
    assert not any("data.size not set" in n for n in load_data(root, size=80).notes)

    with pytest.raises(ValueError, match=r"loading 3 images of 3x100000x100000 .*data\.size smaller"):
        load_data(root, size=100_000)  # refused before anything is allocated or decoded


def test_channels_follow_the_majority_of_modes(tmp_path):
    root = tmp_path / "mostly_grey"
    _grays(root, n=5)
    _save(Image.new("RGBA", (16, 12), (200, 0, 0, 255)), root / "stray.png")
    data = load_data(root)
    assert data.channels == 1
    assert "5 grey, 1 colour image: training in grey (data.channels=3 to keep colour)" in data.notes
    assert load_data(root, channels=3).channels == 3

    tie = tmp_path / "tie"
    _grays(tie, n=1)
    _save(_rgb(12, 16), tie / "c.png")
    data = load_data(tie)
    assert data.channels == 3 and "1 grey, 1 colour image: training in colour (data.channels=1 for grey)" in data.notes


# -- .npy ---------------------------------------------------------------------------------------


def test_npy_vectors_and_labels(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float64)
    np.save(tmp_path / "v.npy", x)
    np.save(tmp_path / "v.labels.npy", np.arange(50) % 4)
    data = load_data(tmp_path / "v.npy")
    assert data.kind == "vector" and data.dim == 3 and data.x.dtype == torch.float32
    assert torch.allclose(data.x, torch.from_numpy(x).float())
    assert data.labels.tolist() == (np.arange(50) % 4).tolist() and data.class_names == list("0123")
    with pytest.raises(ValueError, match="images only"):
        load_data(tmp_path / "v.npy", size=8)
    with pytest.raises(AttributeError, match="image data only"):
        data.image_size  # noqa: B018

    np.save(tmp_path / "w.npy", x)
    np.save(tmp_path / "w_labels.npy", np.arange(49))
    with pytest.raises(ValueError, match=r"expected \(50,\)"):
        load_data(tmp_path / "w.npy")


def test_npy_images(tmp_path):
    u8 = np.zeros((5, 6, 7), np.uint8)
    u8[:, 0, 0] = 255
    np.save(tmp_path / "gray.npy", u8)
    data = load_data(tmp_path / "gray.npy")
    assert data.x.shape == (5, 1, 6, 7) and data.x.max() == 1 and data.x.min() == -1

    rgba = np.zeros((2, 4, 4, 4), np.float32)  # black, fully transparent -> white
    np.save(tmp_path / "rgba.npy", rgba)
    data = load_data(tmp_path / "rgba.npy", size=8)
    assert data.x.shape == (2, 3, 8, 8) and torch.allclose(data.x, torch.ones(1))

    signed = np.linspace(-1, 1, 2 * 4 * 4 * 3).reshape(2, 4, 4, 3)
    np.save(tmp_path / "signed.npy", signed)
    data = load_data(tmp_path / "signed.npy", channels=1)
    assert data.channels == 1 and any("[-1, 1]" in note for note in data.notes)

    np.save(tmp_path / "big.npy", np.full((2, 4, 4, 3), 200.0))
    with pytest.raises(ValueError, match=r"expected \[0, 1\] or \[-1, 1\].*x / 255"):
        load_data(tmp_path / "big.npy")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros(10), r"shape \(10,\) \(1-D\); expected vectors \(N, D\)"),
        (np.zeros((2, 3, 4, 5, 6)), r"5-D"),
        (np.array([{"a": 1}, None], dtype=object), "dtype=object"),
        (np.zeros((2, 5, 5, 7)), r"C in 1, 3, 4"),
        (np.zeros((0, 3)), "no data"),
        (np.array([["a", "b"]]), "expected real numbers"),
    ],
)
def test_npy_bad_shapes_and_dtypes(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array, allow_pickle=True)
    with pytest.raises(ValueError, match=message):
        load_data(tmp_path / "bad.npy")


def test_npy_header_is_checked_before_allocating(tmp_path, monkeypatch):
    small = np.zeros((2, 4, 4, 3), np.uint8)
    buf = io.BytesIO()
    claimed = (10**7, 3, 1000, 1000)  # 30 TB of uint8
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": claimed})
    liar = tmp_path / "liar.npy"
    liar.write_bytes(buf.getvalue() + small.tobytes())
    size = liar.stat().st_size
    with pytest.raises(ValueError, match=rf"liar\.npy.*\(10000000, 3, 1000, 1000\).*{size} bytes"):
        load_data(liar)

    np.save(tmp_path / "cut.npy", np.zeros((4, 8, 8), np.float32))
    _truncate(tmp_path / "cut.npy", 0.9)
    with pytest.raises(ValueError, match=r"cut\.npy is truncated"):
        load_data(tmp_path / "cut.npy")

    np.save(tmp_path / "fine.npy", small)
    assert load_data(tmp_path / "fine.npy").x.shape == (2, 3, 4, 4)
    monkeypatch.setattr(base, "memory_budget", lambda: 100)  # bytes
    with pytest.raises(ValueError, match=r"fine\.npy.*more than the .* GiB"):
        load_data(tmp_path / "fine.npy")


# -- 2-D toys -----------------------------------------------------------------------------------


def _grid(half=4.5, m=160):
    edges = torch.linspace(-half, half, m + 1, dtype=torch.float64)
    centers = (edges[1:] + edges[:-1]) / 2
    xx, yy = torch.meshgrid(centers, centers, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2), (2 * half / m) ** 2


GRID = _grid()


def test_toy2d_registry():
    expected = {"gaussians8", "two-gaussians", "swissroll", "moons", "checkerboard", "rings",
                "spirals", "pinwheel"}  # fmt: skip
    assert expected <= set(TOY2D)
    with pytest.raises(ValueError, match="did you mean 'moons'.*checkerboard"):
        get_toy2d("moon")
    with pytest.raises(ValueError, match="builtin:toy2d:pinwheel"):
        load_data("builtin:toy2d")
    with pytest.raises(ValueError, match="images only|vector data only"):
        load_data("builtin:toy2d:moons", size=8)


@pytest.mark.parametrize("name", sorted(TOY2D))
def test_toy2d_sampling_is_deterministic_and_standardized(name):
    dist = TOY2D[name]
    a = dist.sample(4000, torch.Generator().manual_seed(1))
    b = dist.sample(4000, torch.Generator().manual_seed(1))
    c = dist.sample(4000, torch.Generator().manual_seed(2))
    assert a.dtype == torch.float32 and a.shape == (4000, 2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.mean(0).abs().max() < 0.1
    assert 0.85 < a.square().mean().sqrt() < 1.15  # about unit scale
    # per-sample generators: a point depends only on its own generator
    batch = dist.sample(3, seeded_generators([5, 6, 7]))
    alone = dist.sample(1, seeded_generators([6]))
    assert torch.equal(batch[1], alone[0])


@pytest.mark.parametrize("name", sorted(TOY2D))
def test_toy2d_density_integrates_to_one_and_matches_samples(name):
    dist = TOY2D[name]
    points, cell = GRID
    log_p = dist.log_prob(points)  # (M,)
    p = log_p.exp()
    assert torch.isfinite(log_p).all()
    assert abs(float(p.sum() * cell) - 1.0) < 0.02
    # E_samples[-log p] is the cross-entropy of the sampler against p; it equals the entropy
    # of p (from the grid) only when the samples follow p.
    grid_entropy = float(-(p * log_p).sum() * cell)
    mc_entropy = dist.entropy(20_000, torch.Generator().manual_seed(0))
    assert abs(mc_entropy - grid_entropy) < 0.05, (mc_entropy, grid_entropy)


def test_toy2d_log_prob_shapes_and_mixture_form():
    dist = TOY2D["gaussians8"]
    x = torch.zeros(3, 4, 2)
    assert dist.log_prob(x).shape == (3, 4) and dist.log_prob(x).dtype == torch.float32
    for name in ("gaussians8", "two-gaussians", "moons"):
        dist = TOY2D[name]
        w, mu, cov = dist.as_mixture()
        x = dist.sample(64, torch.Generator().manual_seed(0)).double()
        diff = x[:, None, :] - mu  # (B, K, 2)
        maha = torch.einsum("bki,kij,bkj->bk", diff, torch.linalg.inv(cov), diff)
        log_n = -0.5 * maha - 0.5 * torch.logdet(cov) - math.log(2 * math.pi)
        ref = torch.logsumexp(torch.log(w) + log_n, dim=1)
        assert torch.allclose(dist.log_prob(x), ref, atol=1e-6)
    assert TOY2D["checkerboard"].as_mixture() is None


def test_builtin_toy2d_data():
    data = load_data("builtin:toy2d:checkerboard", n=500, seed=3)
    assert data.kind == "vector" and data.x.shape == (500, 2) and data.dim == 2
    again = load_data("builtin:toy2d:checkerboard", n=500, seed=3)
    assert torch.equal(data.x, again.x)
    assert data.distribution is TOY2D["checkerboard"]
    assert "density: known" in data.summary()


# -- digits, split, flips -----------------------------------------------------------------------


def test_digits():
    pytest.importorskip("sklearn")
    data = load_data("builtin:digits")
    assert data.x.shape == (1797, 1, 8, 8) and data.x.min() == -1 and data.x.max() == 1
    assert data.labels.min() == 0 and data.labels.max() == 9
    assert data.class_names == [str(k) for k in range(10)]
    big = load_data("builtin:digits", size=32, channels=3)
    assert big.x.shape == (1797, 3, 32, 32) and big.x.abs().max() <= 1
    # upsampling keeps the mean intensity of each image (bilinear, no crop)
    assert torch.allclose(big.x[:, 0].mean((1, 2)), data.x[:, 0].mean((1, 2)), atol=0.05)


def test_split_is_deterministic_and_aligned():
    x = torch.arange(20, dtype=torch.float32)[:, None].repeat(1, 2)
    data = Data(x=x, kind="vector", source="test", labels=torch.arange(20) % 3,
                captions=[str(i) for i in range(20)])  # fmt: skip
    kept, held = split(data, 0.25, seed=0)
    kept2, held2 = split(data, 0.25, seed=0)
    _, held3 = split(data, 0.25, seed=1)
    assert len(held) == 5 and len(kept) == 15
    assert torch.equal(held.x, held2.x) and not torch.equal(held.x, held3.x)
    ids = sorted(kept.x[:, 0].long().tolist() + held.x[:, 0].long().tolist())
    assert ids == list(range(20))
    assert held.labels.tolist() == [int(v) % 3 for v in held.x[:, 0]]
    assert held.captions == [str(int(v)) for v in held.x[:, 0]]
    with pytest.raises(ValueError, match="between 0 and 1"):
        split(data, 1.0)


def test_random_hflip():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3)
    assert torch.equal(random_hflip(x, torch.Generator().manual_seed(0), p=1.0), x.flip(-1))
    assert torch.equal(random_hflip(x, torch.Generator().manual_seed(0), p=0.0), x)
    big = torch.randn(256, 1, 2, 3)
    a = random_hflip(big, torch.Generator().manual_seed(4))
    b = random_hflip(big, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    flipped = (a != big).flatten(1).any(1).float().mean()
    assert math.isclose(float(flipped), 0.5, abs_tol=0.1)


def test_random_shift_moves_whole_images_by_at_most_the_limit():
    x = torch.randn(64, 2, 7, 9)
    assert random_shift(x, torch.Generator().manual_seed(0), 0) is x
    a = random_shift(x, torch.Generator().manual_seed(3), 2)
    assert torch.equal(a, random_shift(x, torch.Generator().manual_seed(3), 2))  # deterministic
    assert a.shape == x.shape and a.dtype == x.dtype
    seen = set()
    for i in range(len(x)):  # each output is the input moved by one (dy, dx) with |dy|, |dx| <= 2
        pad = torch.nn.functional.pad(x[i : i + 1], (2, 2, 2, 2), mode="replicate")[0]
        hits = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                if torch.equal(a[i], pad[:, 2 + dy : 2 + dy + 7, 2 + dx : 2 + dx + 9])]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) > 15  # the 25 shifts are all drawn
    gens = seeded_generators(range(5))
    b = random_shift(x[:5], gens, 1)
    assert torch.equal(b[2:3], random_shift(x[2:3], seeded_generators([2]), 1))  # per-sample generators
    with pytest.raises(ValueError, match="at most 6"):
        random_shift(x, None, 7)


# -- the cache of reference features ----------------------------------------------------------


def test_corrupt_reference_cache_file_is_rebuilt_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("UNBLUR_CACHE", str(tmp_path))
    ext = load_extractor("pixels", device=torch.device("cpu"))
    x = torch.rand(6, 1, 4, 4) * 2 - 1
    f1, _, cached = reference_features(ext, x, source="test")
    (path,) = (tmp_path / "refstats").glob("*.safetensors")
    assert not cached
    path.write_bytes(b"\x00garbage, not safetensors")
    with pytest.warns(UserWarning, match=rf"{path.name}.*unreadable.*computing the features again"):
        f2, _, cached = reference_features(ext, x, source="test")
    assert not cached and torch.equal(f1, f2)
    f3, _, cached = reference_features(ext, x, source="test")  # the rebuilt file reads again
    assert cached and torch.equal(f1, f3)
