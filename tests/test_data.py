"""The data layer: image folders, .npy arrays, built-in sets and the 2-D toy densities."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from unblur.data import (
    TOY2D,
    Data,
    DataWarning,
    get_toy2d,
    load_data,
    random_hflip,
    random_shift,
    split,
)
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
