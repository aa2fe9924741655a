"""The ``Run`` layer: opening run folders (including ones written by earlier versions),
sampling batch by batch, the one sampling denoiser, and ``show forward`` on every process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unblur.cli import main
from unblur.processes.cold import COLD_PROCESSES
from unblur.runs import Run

OLD = Path(__file__).parent / "fixtures" / "old_runs"
TINY = {"model.base_channels": 8, "model.channel_mult": "1,2", "model.num_res_blocks": 1, "train.steps": 1,
        "train.batch_size": 8, "train.sample_every": 0, "train.checkpoint_every": 0, "sample.grid_n": 0,
        "train.keep_checkpoints": 0}


@pytest.mark.parametrize("name", ["edm-classes", "blur", "vp", "toy"])
def test_run_folders_of_the_previous_version_load_and_sample(name, tmp_path):
    run = Run.load(OLD / name, device="cpu")
    batches = list(run.sample(3, steps=2, batch=2, seed=5))
    assert [len(b.x) for b in batches] == [2, 1] and [b.start for b in batches] == [0, 2]
    x = torch.cat([b.x for b in batches])
    assert x.shape == (3, *run.data.shape) and torch.isfinite(x).all()
    assert [r["seed"] for b in batches for r in b.records] == [5, 6, 7]
    out = tmp_path / "s"
    assert main(["sample", str(OLD / name), "--n", "2", "--steps", "2", "--out", str(out), "--device", "cpu"]) == 0
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2


def test_an_old_run_resumes(tmp_path):
    run = tmp_path / "toy"
    shutil.copytree(OLD / "toy", run)
    assert main(["train", "--out", str(run), "--resume", "--steps", "3"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 3


def test_a_sample_does_not_depend_on_its_batch():
    run = Run.load(OLD / "edm-classes", device="cpu")
    one = torch.cat([b.x for b in run.sample(4, steps=3, batch=4, classes=["7"])])
    two = torch.cat([b.x for b in run.sample(4, steps=3, batch=1, classes=["7"])])
    assert torch.allclose(one, two, atol=1e-5)


def test_the_sampling_denoiser_guides_then_clips():
    run = Run.load(OLD / "edm-classes", device="cpu")
    x = torch.randn(2, 1, 8, 8) * 5
    sigma = torch.full((2,), 3.0)
    cond = {"class": torch.tensor([1, 2])}
    uncond = {"class": torch.tensor([10, 10])}
    den = run.sampling_denoiser(guidance=3.0, uncond=uncond)
    c, u = run.denoiser(x, sigma, cond), run.denoiser(x, sigma, uncond)
    assert torch.allclose(den(x, sigma, cond), (u + 3.0 * (c - u)).clamp(-1, 1), atol=1e-5)
    assert torch.allclose(run.sampling_denoiser()(x, sigma, cond), c.clamp(-1, 1))


@pytest.mark.parametrize("bad", [{"steps": 0}, {"steps": -3}, {"n": 0}, {"batch": 0}, {"sampler": "cold"},
                                 {"sampler": "heunn"}])
def test_bad_requests_are_refused_not_replaced_by_defaults(bad):
    run = Run.load(OLD / "vp", device="cpu")
    with pytest.raises(ValueError):
        next(iter(run.sample(**{"n": 2, **bad})))


@pytest.mark.parametrize("argv", [["sample", "RUN", "--steps", "0"], ["sample", "RUN", "--n", "-1"],
                                  ["show", "trajectory", "RUN", "--steps", "0"],
                                  ["restore", "RUN", "--input", "x", "--out", "y", "--steps", "0"],
                                  ["eval", "RUN", "--steps", "0"], ["train", "--out", "x", "--steps", "0"],
                                  ["train", "--out", "x", "--minutes", "nan"]])
def test_zero_and_negative_counts_are_refused_by_the_cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(OLD / "vp") if a == "RUN" else a for a in argv])
    assert e.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_expected_errors_are_one_line(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and len(err.splitlines()) == 1
    assert main(["restore", str(OLD / "vp"), "--input", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "cold-diffusion run" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["edm-classes", "blur", "vp"])
def test_show_forward_of_an_old_run(name, tmp_path):
    out = tmp_path / "f.png"
    assert main(["show", "forward", str(OLD / name), "--n", "2", "--levels", "3", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 3 * 8


@pytest.mark.parametrize("kind", COLD_PROCESSES)
def test_show_forward_on_a_run_of_every_cold_process(kind, cold_run, tmp_path):
    out = tmp_path / "f.png"
    assert main(["show", "forward", str(cold_run(kind)), "--n", "2", "--levels", "3", "--out", str(out)]) == 0
    strip = torch.from_numpy(np.asarray(Image.open(out).convert("L"), dtype=np.float32))
    assert strip.std() > 10  # a picture, not a blank


def test_jpeg_end_to_end_through_the_cli(tmp_path, capsys):
    """JPEG-artefact removal as a user runs it: degrade real files, train a restorer, restore them."""
    clean = tmp_path / "clean"
    clean.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(clean / f"{i}.png")
    compressed = tmp_path / "compressed"
    assert main(["degrade", "--process", "jpeg", "--level", "0.7", "--input", str(clean),
                 "--out", str(compressed)]) == 0
    assert sorted(p.name for p in compressed.glob("*.png")) == ["0.png", "1.png", "2.png"]
    assert any(not np.array_equal(np.asarray(Image.open(clean / n)), np.asarray(Image.open(compressed / n)))
               for n in ("0.png", "1.png", "2.png"))
    run = tmp_path / "jpeg"
    tiny = [a for k, v in TINY.items() if k != "train.steps" for a in ("--set", f"{k}={v}")]
    assert main(["train", "--process", "jpeg", "--out", str(run), "--steps", "2", *tiny]) == 0
    capsys.readouterr()
    restored = tmp_path / "restored"
    assert main(["restore", str(run), "--input", str(compressed), "--out", str(restored), "--level", "0.7",
                 "--reference", str(clean)]) == 0
    out = capsys.readouterr().out
    assert "one-shot" in out and "PSNR: restored" in out
    recs = [json.loads(line) for line in (restored / "restore.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and all(np.isfinite(r["psnr_input"]) for r in recs)
