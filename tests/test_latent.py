"""Latent diffusion end to end through the CLI on tiny data: an autoencoder run, a latent run on
its latents (cached, measured scale), then sample, eval, edit and show on decoded images; a
moved or changed autoencoder is a clear error; an embedded copy makes the run stand alone."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow

AE_ARGS = ["--model", "autoencoder", "--data", "builtin:digits", "--set", "data.size=16", "--set",
           "autoencoder.widths=8,16,16", "--set", "autoencoder.norm_groups=4", "--set",
           "autoencoder.mid_attention=false", "--set", "train.batch_size=32", "--set", "train.sample_every=0",
           "--set", "sample.grid_n=4"]
LDM_ARGS = ["--data", "builtin:digits", "--set", "data.size=16", "--set", "cond.classes=true", "--set",
            "model.base_channels=16", "--set", "model.channel_mult=1,2", "--set", "model.num_res_blocks=1", "--set",
            "model.attn_resolutions=", "--set", "train.batch_size=32", "--set", "train.sample_every=10", "--set",
            "sample.grid_n=4", "--set", "sample.steps=4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An autoencoder run and a latent run on its latents (trained once for the module)."""
    import os
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("latent")
    env = {**os.environ, "UNBLUR_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "unblur", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=600)

    r = cli("train", *AE_ARGS, "--steps", "40", "--out", root / "ae")
    assert r.returncode == 0, r.stderr
    r = cli("train", *LDM_ARGS, "--latent", root / "ae", "--steps", "20", "--out", root / "ldm")
    assert r.returncode == 0, r.stderr
    return root, cli, r.stdout + r.stderr


def test_latent_run_trains_on_cached_latents_with_a_measured_scale(runs):
    root, cli, log = runs
    assert "latents: 1797 images 16x16 -> 4x4x4" in log and "cached in" in log
    cache = list((root / "cache" / "latents").glob("*.npy"))
    assert len(cache) == 1
    z = np.load(cache[0])
    assert z.shape == (1797, 4, 4, 4)
    from unblur.runs import Run
    from unblur.types import LatentRecord

    run = Run.load(root / "ldm", device="cpu")
    lat = run.data.latent
    assert isinstance(lat, LatentRecord) and lat == run.latent.record(embedded=False)
    assert run.data.shape == (4, 4, 4) and run.image_shape == (1, 16, 16) and lat.latent_shape == (4, 4, 4)
    scaled = (torch.from_numpy(z).double() - lat.shift) * lat.scale  # unit variance, zero mean
    assert abs(float(scaled.std()) - 1) < 1e-4 and abs(float(scaled.mean())) < 1e-4
    assert lat.sha256 == run.latent.ae.sha256 and Path(lat.path) == (root / "ae").resolve()
    raw = (root / "ldm" / "model.safetensors").read_bytes()  # the record's JSON keeps the keys of its dict form
    meta = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    assert json.loads(meta["data_info"])["latent"] == {
        "autoencoder": lat.path, "sha256": lat.sha256, "kind": lat.kind, "shift": lat.shift, "scale": lat.scale,
        "image_shape": [1, 16, 16], "latent_shape": [4, 4, 4], "embedded": False}
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    assert run.encode(x).shape == (2, 4, 4, 4) and run.decode(run.encode(x)).shape == (2, 1, 16, 16)
    grids = sorted((root / "ldm" / "samples").glob("step-*.png"))
    assert grids and Image.open(grids[-1]).size[0] > 2 * 16  # decoded images in the training grid
    # The same data and autoencoder again: the cached latents are read, not encoded again.
    r = cli("train", *LDM_ARGS, "--latent", root / "ae", "--steps", "2", "--out", root / "ldm2")
    assert r.returncode == 0 and "read from" in r.stdout + r.stderr, r.stderr
    r = cli("info", root / "ldm")
    assert r.returncode == 0 and "latent:" in r.stdout and "scale" in r.stdout, r.stderr


def test_sample_eval_edit_and_show_work_on_decoded_images(runs, tmp_path):
    root, cli, _ = runs
    r = cli("sample", root / "ldm", "--n", "4", "--class", "3", "--steps", "4", "--out", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    pngs = sorted((tmp_path / "s").glob("[0-9]*.png"))
    assert len(pngs) == 4 and Image.open(pngs[0]).size == (16, 16)
    r = cli("eval", root / "ldm", "--metrics", "fid,kid", "--n", "40", "--steps", "3", "--json", tmp_path / "e.json")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "e.json").read_text())
    assert rep["fid"] > 0 and rep["model_shape"] == [1, 16, 16]
    r = cli("eval", root / "ldm", "--metrics", "bpd", "--n", "40")
    assert r.returncode == 2 and "latent" in r.stderr
    from sklearn.datasets import load_digits

    img = Image.fromarray((load_digits().images[0] * 255 / 16).astype(np.uint8)).resize((16, 16))
    img.save(tmp_path / "d.png")
    r = cli("edit", root / "ldm", "--input", tmp_path / "d.png", "--mask-box", "0,0,8,16", "--steps", "4", "--out",
            tmp_path / "ed")
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(tmp_path / "ed" / "d.png"))
    assert out.shape == (16, 16) and np.array_equal(out[:, 8:], np.asarray(img)[:, 8:])  # kept pixels, exactly
    r = cli("edit", root / "ldm", "--input", tmp_path / "d.png", "--invert", "--steps", "10", "--out", tmp_path / "iv")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "iv" / "d.noise.npy").shape == (4, 4, 4)
    r = cli("show", "trajectory", root / "ldm", "--n", "2", "--steps", "4", "--levels", "4", "--out",
            tmp_path / "t.png")
    assert r.returncode == 0, r.stderr
    from unblur.images import grid_scale

    assert Image.open(tmp_path / "t.png").size[1] >= 4 * 16 * grid_scale(16)  # 2 samples x (x_t, x0_hat) rows


def test_a_moved_or_changed_autoencoder_is_named_and_an_embedded_copy_stands_alone(runs, tmp_path):
    root, cli, _ = runs
    ae2 = tmp_path / "ae2"
    shutil.copytree(root / "ae", ae2)
    r = cli("train", *LDM_ARGS, "--latent", ae2, "--embed-ae", "--steps", "2", "--out", tmp_path / "emb")
    assert r.returncode == 0, r.stderr
    r = cli("train", *LDM_ARGS, "--latent", ae2, "--steps", "2", "--out", tmp_path / "ref")
    assert r.returncode == 0, r.stderr
    moved = tmp_path / "ae2-moved"
    ae2.rename(moved)
    r = cli("sample", tmp_path / "ref", "--n", "2", "--steps", "2", "--out", tmp_path / "x")
    assert r.returncode == 2 and str(ae2.resolve()) in r.stderr and "moved or deleted" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()
    r = cli("sample", tmp_path / "emb", "--n", "2", "--steps", "2", "--out", tmp_path / "y")
    assert r.returncode == 0, r.stderr  # the embedded copy
    moved.rename(ae2)
    r = cli("train", *AE_ARGS, "--resume", "--steps", "44", "--out", ae2)  # new weights: another hash
    assert r.returncode == 0, r.stderr
    r = cli("sample", tmp_path / "ref", "--n", "2", "--steps", "2", "--out", tmp_path / "z")
    assert r.returncode == 2 and "has changed" in r.stderr and "sha256" in r.stderr, r.stderr
    r = cli("train", *LDM_ARGS, "--latent", ae2, "--steps", "2", "--out", tmp_path / "new")
    assert r.returncode == 0 and "cached in" in r.stdout + r.stderr  # another autoencoder: encoded again
    assert len(list((root / "cache" / "latents").glob("*.npy"))) == 2
    r = cli("train", *AE_ARGS[:2], "--data", "builtin:digits", "--latent", ae2, "--steps", "2", "--out", tmp_path / "b")
    assert r.returncode == 2 and "autoencoder" in r.stderr


def test_a_latent_super_resolution_run_concatenates_the_low_resolution_image_on_the_latent_grid(runs, tmp_path):
    root, cli, _ = runs
    r = cli("train", *LDM_ARGS[:2], "--set", "data.size=16", "--latent", root / "ae", "--set", "cond.image=superres",
            "--set", "model.base_channels=16", "--set", "model.channel_mult=1,2", "--set", "model.attn_resolutions=",
            "--set", "train.batch_size=16", "--set", "train.sample_every=0", "--steps", "3", "--out", tmp_path / "sr")
    assert r.returncode == 0, r.stderr
    from unblur.runs import Run

    run = Run.load(tmp_path / "sr", device="cpu")
    unet = run.net
    first = next(m for m in unet.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 4 + 1  # 4 latent channels beside the grey image's 1
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(tmp_path / "low.png")
    r = cli("sample", tmp_path / "sr", "--image", tmp_path / "low.png", "--n", "2", "--steps", "3", "--out",
            tmp_path / "s")
    assert r.returncode == 0, r.stderr
    assert Image.open(sorted((tmp_path / "s").glob("[0-9]*.png"))[0]).size == (16, 16)
