"""No silent surprises on the command line: restore at each image's own size, the web UIs'
sampler names, --threads, eval's defaults, and the small things (help defaults, labels, grids,
a closed pipe)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unblur.cli import build_parser, main
from unblur.editing.tiles import any_size, tiled
from unblur.runs import Run
from unblur.sampling import resolve_sampler, sampler_error

OLD = Path(__file__).parent / "fixtures" / "old_runs"

def _grey(folder: Path, sizes: dict[str, tuple[int, int]], seed: int = 0) -> Path:
    """Random grey PNGs of the given (H, W) under ``folder``."""
    rng = np.random.default_rng(seed)
    for name, (h, w) in sizes.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(folder / name)
    return folder


# -- 1. restore at the input's own size --------------------------------------------------------

def test_restore_keeps_each_images_size_and_reports_no_infinite_mean(tmp_path, capsys):
    clean = _grey(tmp_path / "clean", {"a.png": (13, 20), "sub/b.png": (8, 8), "big.png": (40, 37)})  # big: tiled
    deg = tmp_path / "deg"
    assert main(["degrade", "--process", "blur", "--level", "0.5", "--input", str(clean), "--out", str(deg)]) == 0
    out = tmp_path / "out"
    assert main(["restore", str(OLD / "blur"), "--input", str(deg), "--out", str(out), "--level", "0.5",
                 "--reference", str(clean), "--batch", "2"]) == 0
    for rel, (h, w) in {"a.png": (13, 20), "sub/b.png": (8, 8), "big.png": (40, 37)}.items():
        img = Image.open(out / rel)
        assert (img.height, img.width) == (h, w) and img.mode == "L", rel
    recs = [json.loads(line) for line in (out / "restore.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and all(math.isfinite(r["psnr"]) for r in recs)
    # the degraded input as its own reference: every PSNR is inf, and no mean says so
    assert main(["restore", str(OLD / "blur"), "--input", str(deg), "--out", str(tmp_path / "o2"), "--level", "0.5",
                 "--reference", str(deg)]) == 0
    text = capsys.readouterr().out
    psnr = [line for line in text.splitlines() if line.startswith("PSNR")][-1]
    assert "degraded input inf (all 3 identical to the reference)" in psnr
    assert "restored inf" not in psnr and "nan" not in text


def test_restore_refuses_a_colour_image_for_a_grey_run(tmp_path, capsys):
    photo = tmp_path / "in" / "photo.jpg"
    photo.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(photo)
    assert main(["restore", str(OLD / "blur"), "--input", str(photo), "--out", str(tmp_path / "o"),
                 "--level", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "restores grey images (1 channel) but" in err and "photo.jpg is colour" in err
    assert "--set data.channels=3" in err


def test_restore_at_the_training_size_is_unchanged_and_any_size_works():
    from unblur.sampling.cold import restore

    run = Run.load(OLD / "blur", device="cpu")
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    got, _ = run.restore(x, 0.5, steps=4, seed=3)
    want = restore(run.sampling_denoiser(), x, 0.5, process=run.process, sampler="cold", steps=4,
                   generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, want)
    for shape in [(1, 1, 5, 11), (1, 1, 1, 3), (1, 1, 70, 9)]:  # odd, tiny, tall (tiled)
        y, level = run.restore(torch.zeros(shape), None, steps=2)
        assert y.shape == shape and torch.isfinite(y).all() and level.shape == (1,)


def test_padding_and_tiles_leave_a_local_denoiser_seamless():
    seen = []

    def den(x, sigma, cond=None):
        seen.append(tuple(x.shape[-2:]))
        assert x.shape[-2] % 4 == 0 and x.shape[-1] % 4 == 0
        return 2 * x

    x = torch.randn(2, 3, 37, 50)
    assert torch.allclose(any_size(den, 4)(x, torch.ones(2)), 2 * x)
    assert seen == [(40, 52)]
    seen.clear()
    y = tiled(any_size(den, 4), (16, 16))(x, torch.ones(2))
    assert torch.allclose(y, 2 * x, atol=1e-5)  # every pixel weighted back to one: no seams
    assert len(seen) > 4 and max(seen) == (16, 16)


def test_blend_restores_at_another_size(cold_run, tmp_path):
    """Blend restoration recovers its partner image from x_t and x0_hat at each step (layer_of):
    it needs no partner images of the input's size."""
    inp = _grey(tmp_path / "in", {"x.png": (12, 10)})
    assert main(["restore", str(cold_run("blend")), "--input", str(inp), "--out", str(tmp_path / "o"),
                 "--level", "0.5", "--steps", "2"]) == 0
    assert Image.open(tmp_path / "o" / "x.png").size == (10, 12)


# -- 2. the web UIs' sampler names --------------------------------------------------------------

@pytest.mark.parametrize("name, want", [
    ("Euler", ("euler", None)), ("Euler a", ("euler-ancestral", None)), ("EULER  A", ("euler-ancestral", None)),
    ("Heun", ("heun", None)), ("DDIM", ("ddim", None)), ("DDPM", ("ddpm", None)), ("DPM++ 2M", ("dpmpp-2m", None)),
    ("DPM++ 2M Karras", ("dpmpp-2m", "karras")), ("DPM++ 2M SDE", ("dpmpp-2m-sde", None)),
    ("dpm++ 2m sde karras", ("dpmpp-2m-sde", "karras")), ("euler_ancestral", ("euler-ancestral", None)),
    ("dpmpp_2m", ("dpmpp-2m", None)), ("dpmpp_2m_sde", ("dpmpp-2m-sde", None)), ("dpmpp-2m", ("dpmpp-2m", None)),
])
def test_web_ui_sampler_names_resolve(name, want):
    assert resolve_sampler(name) == want


@pytest.mark.parametrize("name, hint", [("dpm++2m", "'dpmpp-2m'"), ("Euler-a", "'euler-ancestral'"),
                                        ("euler_a", "'euler-ancestral'"), ("eulr a", "'euler-ancestral'"),
                                        ("DPM++ 2M SDE karas", "'dpm++ 2m sde karras'"), ("heunn", "'heun'")])
def test_near_misses_get_the_right_suggestion(name, hint):
    msg = str(sampler_error(name))
    assert f"(did you mean {hint}?)" in msg
    with pytest.raises(ValueError, match="did you mean"):
        resolve_sampler(name)


def test_unknown_sampler_lists_the_known_ones():
    msg = str(sampler_error("lms"))
    assert "did you mean" not in msg and all(s in msg for s in ("ddim", "dpmpp-2m-sde", "'euler a'"))


def test_plan_takes_the_grid_of_a_karras_alias_unless_another_is_asked_for():
    run = Run.load(OLD / "vp", device="cpu")
    plan = run.plan("DPM++ 2M Karras")
    assert (plan.sampler, plan.grid) == ("dpmpp-2m", "karras")
    assert run.plan("DPM++ 2M Karras", grid="karras").grid == "karras"
    assert run.plan("Euler a") == run.plan("euler-ancestral")  # the run's own grid (trailing)
    with pytest.raises(ValueError, match="karras grid.*'trailing'"):
        run.plan("DPM++ 2M Karras", grid="trailing")


def test_sample_records_the_canonical_name(tmp_path):
    out = tmp_path / "s"
    assert main(["sample", str(OLD / "vp"), "--n", "2", "--steps", "2", "--sampler", "DPM++ 2M Karras",
                 "--out", str(out)]) == 0
    recs = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {(r["sampler"], r["grid"]) for r in recs} == {("dpmpp-2m", "karras")}


def test_sweep_refuses_a_karras_alias_on_another_grid():
    from unblur.cli.evaluate import _sweep_sampler

    run = Run.load(OLD / "vp", device="cpu")
    assert _sweep_sampler(run, "Euler a", "trailing") == "euler-ancestral"
    assert _sweep_sampler(run, "DPM++ 2M Karras", "karras") == "dpmpp-2m"
    with pytest.raises(ValueError, match="--grid karras"):
        _sweep_sampler(run, "DPM++ 2M Karras", "trailing")


# -- 3. --threads ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["sample", "eval", "sweep", "restore"])
def test_threads_is_offered_and_documented(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--threads" in capsys.readouterr().out


def test_a_busy_machine_is_named_and_threads_set(tmp_path, monkeypatch, capsys):
    before = torch.get_num_threads()
    monkeypatch.setattr("os.getloadavg", lambda: (1000.0, 1000.0, 1000.0))
    try:
        assert main(["sample", str(OLD / "vp"), "--n", "1", "--steps", "1", "--out", str(tmp_path / "a")]) == 0
        err = capsys.readouterr().err
        assert "busy" in err and "--threads 1" in err
        assert main(["sample", str(OLD / "vp"), "--n", "1", "--steps", "1", "--out", str(tmp_path / "b"),
                     "--threads", "1"]) == 0
        assert "busy" not in capsys.readouterr().err and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# -- 4. eval's defaults follow the run ------------------------------------------------------------

def test_default_metrics_follow_the_process():
    from unblur.eval.report import default_metrics
    from unblur.processes.cold import ColdProcess

    image = {"kind": "image", "shape": (1, 8, 8)}
    assert default_metrics(image, ColdProcess(kind="jpeg")) == ("psnr", "ssim")
    assert default_metrics(image, ColdProcess(kind="blur")) == ("psnr", "ssim", "fid", "kid", "pr", "is")
    assert default_metrics(image, Run.load(OLD / "vp", device="cpu").process) == ("fid", "kid", "pr", "is")


def test_eval_of_a_cold_run_restores_with_its_own_sampler(tmp_path):
    report = tmp_path / "r.json"
    assert main(["eval", str(OLD / "blur"), "--n", "8", "--steps", "2", "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["settings"]["metrics"] == ["psnr", "ssim", "fid", "kid", "pr", "is"]
    assert r["settings"]["sampler"] == "cold" and math.isfinite(r["psnr"])


def test_eval_on_a_plain_folder_drops_the_inception_score_and_says_so(tmp_path, capsys):
    folder = _grey(tmp_path / "imgs", {f"{i}.png": (8, 8) for i in range(24)})
    report = tmp_path / "r.json"
    args = ["eval", str(OLD / "vp"), "--data", str(folder), "--n", "8", "--steps", "2", "--no-cache"]
    assert main([*args, "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["settings"]["metrics"] == ["fid", "kid", "pr"] and "is" not in r
    assert any("Inception Score" in note for note in r["notes"]) and "MMD^2" in r["kid_scale"]
    out = capsys.readouterr().out
    assert "note: the Inception Score" in out and "unscaled MMD^2" in out
    assert main([*args, "--metrics", "is"]) == 2  # asked for by name: an error that says why
    assert "no class probabilities" in capsys.readouterr().err


def test_eval_help_states_the_real_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "psnr,ssim for" in " ".join(capsys.readouterr().out.split())


# -- 5. the small things ---------------------------------------------------------------------------

def test_show_forward_blend_mixes_in_other_images_of_the_data(tmp_path):
    out = tmp_path / "blend.png"
    assert main(["show", "forward", "--process", "blend", "--data", "builtin:digits", "--n", "2", "--levels", "3",
                 "--out", str(out)]) == 0
    assert out.exists() and out.with_suffix(".gif").exists()


def test_trajectory_rows_are_labelled(tmp_path):
    from unblur.images import grid_scale

    out = tmp_path / "t.png"
    assert main(["show", "trajectory", str(OLD / "vp"), "--n", "2", "--steps", "3", "--levels", "3",
                 "--out", str(out)]) == 0
    a = np.asarray(Image.open(out).convert("L"))
    scale = grid_scale(8)
    margin = a.shape[1] - (3 * 10 + 2) * scale  # the grid: 3 columns of 8 px, 2 px padding
    assert margin > 20 and a[14:, :margin].min() < 128  # text in the margin, left of the rows


def test_class_grid_puts_one_class_per_row(tmp_path):
    from unblur.images import grid_scale

    out = tmp_path / "s"
    assert main(["sample", str(OLD / "edm-classes"), "--n", "20", "--steps", "2", "--out", str(out)]) == 0
    recs = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["class"] for r in recs[:12]] == [*range(10), 0, 1]  # the samples cycle through the classes
    s = grid_scale(8)
    grid = np.asarray(Image.open(out / "grid.png").convert("L"))
    assert grid.shape == ((10 * 10 + 2) * s, (2 * 10 + 2) * s)  # 10 rows (classes) of 2
    cell = grid[(2 + 3 * 10) * s : (2 + 3 * 10 + 8) * s : s, (2 + 10) * s : (2 + 18) * s : s]  # row 3, column 1
    assert np.array_equal(cell, np.asarray(Image.open(out / f"{10 + 3:05d}.png")))  # class 3's second sample


def test_sweep_table_says_times_need_an_idle_machine():
    from unblur.eval.report import sweep_table

    row = {"sampler": "heun", "steps": 2, "nfe": 3, "seconds": 0.1, "fid": 1.0, "kid": 0.1, "precision": 0.5,
           "recall": 0.5}
    table = sweep_table({"rows": [row], "floor": row})
    assert "idle machine" in table and "MMD^2" in table


def test_every_command_help_shows_its_defaults():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "sample" in a.choices)
    for name, p in sub.choices.items():
        text = " ".join(p.format_help().split())
        assert "(default: None)" not in text, name
    assert "(default: 16)" in " ".join(sub.choices["sample"].format_help().split())
    assert "(default: 64)" in " ".join(sub.choices["restore"].format_help().split())


def test_info_into_a_closed_pipe_exits_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "unblur", "info", str(OLD / "vp")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line (`| head -0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err and "error" not in err
