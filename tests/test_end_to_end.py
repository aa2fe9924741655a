"""Learning, end to end through the command line: 2-D toys and the digits demo."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from unblur.data import TOY2D, load_data
from unblur.eval.distances import energy_distance

# 2,000 steps of 512 points with a cosine learning rate: about 30 s per set on 2 idle cores, and
# the same quality on any machine (a wall-clock budget would learn less on a slower or busier one).
TOY_SETTINGS = ["train.steps=2000", "train.batch_size=512", "train.lr_schedule=cosine", "train.sample_every=0",
                "train.checkpoint_every=0", "sample.grid_n=0"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TOY2D))
def test_toy2d_samples_match_the_data(name, tmp_path):
    """Energy distance to fresh data within 3x of real-vs-real after a short MLP training."""
    run = tmp_path / name
    r = subprocess.run(
        [sys.executable, "-m", "unblur", "train", "--data", f"builtin:toy2d:{name}", "--out", str(run),
         *[a for kv in TOY_SETTINGS for a in ("--set", kv)]],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "samples"
    r = subprocess.run(
        [sys.executable, "-m", "unblur", "sample", str(run), "--n", "2000", "--batch", "2000", "--sampler", "heun",
         "--steps", "32", "--out", str(out)], capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    x = torch.from_numpy(np.load(out / "samples.npy"))
    assert x.shape == (2000, 2)
    toy = TOY2D[name]
    fresh = toy.sample(2000, torch.Generator().manual_seed(101))
    floor = np.mean([
        energy_distance(toy.sample(2000, torch.Generator().manual_seed(200 + k)), fresh) for k in range(3)
    ])
    ed = energy_distance(x, fresh)
    assert ed <= 3 * floor, f"{name}: energy distance {ed:.5f} vs floor {floor:.5f} ({ed / floor:.2f}x)"


def digits_classifier():
    """A logistic-regression classifier of the real 8x8 digits (pixels in [0, 1])."""
    from sklearn.linear_model import LogisticRegression

    data = load_data("builtin:digits")
    x = ((data.x.reshape(len(data), -1) + 1) / 2).numpy()
    return LogisticRegression(max_iter=2000, C=1.0).fit(x, data.labels.numpy())


def recognisability(images: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(mean top-class probability, entropy of the predicted-class histogram, histogram)."""
    clf = digits_classifier()
    p = clf.predict_proba(images.reshape(len(images), -1))
    counts = np.bincount(p.argmax(1), minlength=10)
    q = counts / counts.sum()
    entropy = -sum(v * math.log(v) for v in q if v > 0)
    return float(p.max(1).mean()), entropy, counts


@pytest.mark.slow
def test_demo_digits_are_recognisable(tmp_path):
    run = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "unblur", "demo", "--out", str(run), "--minutes", "4"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "samples" / "demo" / "grid.png").exists()
    out = tmp_path / "s"
    r = subprocess.run([sys.executable, "-m", "unblur", "sample", str(run), "--n", "500", "--batch", "250",
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    images = np.load(out / "samples.npy")
    top, entropy, counts = recognisability(images)
    assert top >= 0.8, (top, counts)
    assert entropy >= 0.9 * math.log(10), (entropy, counts)
