"""Pictures: forward strips for any degradation, trajectories, the 2-D toy figure, curves."""

import pytest
import torch
from PIL import Image

from unblur.cli import main
from unblur.show import DEGRADATIONS, forward_strip, get_degrade, register_degradation


@pytest.mark.parametrize("name", ["vp", "edm"])
def test_gaussian_degradation_starts_at_the_data_and_ends_in_noise(name):
    x0 = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(123)) * 2 - 1
    degrade = get_degrade(name)
    assert torch.equal(degrade(x0, torch.zeros(6)), x0)
    end = degrade(x0, torch.ones(6))
    corr = torch.corrcoef(torch.stack([end.flatten(), x0.flatten()]))[0, 1]
    assert abs(float(corr)) < 0.1 and 0.8 < float(end.std()) < 1.2  # unit-variance noise, data gone
    mid = degrade(x0, torch.full((6,), 0.5))
    assert torch.equal(mid, degrade(x0, torch.full((6,), 0.5)))  # the same noise every time


def test_forward_strip_takes_any_degradation(tmp_path):
    # A made-up cold degradation: fade to gray. Registered, it is shown by the CLI.
    register_degradation("fade", lambda device: lambda x0, t: x0 * (1 - t)[:, None, None, None])
    try:
        x0 = torch.ones(3, 1, 8, 8)
        img = forward_strip(x0, get_degrade("fade"), [0.0, 0.5, 1.0], scale=1)
        assert img.size == (3 * 10 + 2, 3 * 10 + 2 + 14)  # 3 columns, 3 rows of 8 px with 2 px padding, labels
        out = tmp_path / "fade.png"
        assert main(["show", "forward", "--process", "fade", "--n", "2", "--levels", "3", "--out", str(out)]) == 0
        strip = Image.open(out).convert("L")
        gif = Image.open(out.with_suffix(".gif"))
        assert gif.n_frames > 5
        # 8x8 digits enlarged 8x with 16 px padding: first column holds the digit, the last is all gray.
        import numpy as np

        a = np.asarray(strip)
        first, last = a[14 + 16 : 14 + 80, 16:80], a[14 + 16 : 14 + 80, 16 + 2 * 80 : 16 + 2 * 80 + 64]
        assert first.max() > 200 and first.min() < 50
        assert last.min() >= 127 and last.max() <= 128
    finally:
        DEGRADATIONS.pop("fade")


def test_unknown_process_and_vector_data_are_errors(capsys):
    assert main(["show", "forward", "--process", "blurr"]) == 2
    assert "unknown process to show 'blurr'" in capsys.readouterr().err
    assert main(["show", "forward", "--data", "builtin:toy2d:moons"]) == 2
    assert "show toy" in capsys.readouterr().err
    assert main(["show", "curves"]) == 2
    assert "needs a run folder" in capsys.readouterr().err


def test_trajectory_toy_and_curves_from_runs(tiny_run, toy_run, tmp_path):
    digits = tiny_run  # a digits run with a metrics line at every step
    out = tmp_path / "traj.png"
    assert main(["show", "trajectory", str(digits), "--n", "2", "--steps", "5", "--levels", "5",
                 "--out", str(out), "--device", "cpu"]) == 0
    strip = Image.open(out)
    width, height = strip.size  # 5 steps, 2 samples x 2 rows, labelled above and on the left
    assert height == 4 * (8 * 8 + 16) + 16 + 14 and 30 < width - (5 * (8 * 8 + 16) + 16) < 90
    assert Image.open(out.with_suffix(".gif")).n_frames >= 5
    assert main(["show", "curves", str(digits), "--out", str(tmp_path / "curves.png")]) == 0
    assert Image.open(tmp_path / "curves.png").size[0] > 400
    assert main(["show", "toy", str(digits)]) == 2  # a digits model is not 2-D

    out = tmp_path / "toy.png"
    assert main(["show", "toy", str(toy_run), "--points", "300", "--steps", "4", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert Image.open(out).size[0] > 800 and Image.open(out.with_suffix(".gif")).n_frames >= 4


def test_cold_degradations_are_shown_by_name():
    """Every cold process but blend (which needs a second data set) plugs into `show forward`."""
    from unblur.show import get_degrade

    x0 = torch.rand(2, 1, 8, 8) * 2 - 1
    for kind in ("blur", "pixelate", "mask", "snow", "noise"):
        degrade = get_degrade(kind)
        assert torch.equal(degrade(x0, torch.zeros(2)), x0), kind
        assert (degrade(x0, torch.ones(2)) - x0).abs().mean() > 0.05, kind
