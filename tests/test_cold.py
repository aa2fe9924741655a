"""Cold diffusion: the degradations' closed forms, the cold samplers, restoration and the CLI."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from unblur.analytic import fit_gmm
from unblur.eval.restoration import psnr, ssim
from unblur.processes.cold import COLD_PROCESSES, ColdProcess
from unblur.processes.degradations.blur import blur_matrix
from unblur.processes.gaussian import EDMProcess
from unblur.sampling import generate, get_sampler
from unblur.sampling.cold import estimate_level, restore, sample_cold, sample_cold_naive

OTHERS = torch.rand(6, 3, 7, 11, generator=torch.Generator().manual_seed(9)) * 2 - 1


def every_process(shape=(3, 7, 11)):
    """One ColdProcess per degradation and mask kind, for images of ``shape``."""
    others = torch.rand(6, *shape, generator=torch.Generator().manual_seed(9)) * 2 - 1
    out = []
    for kind in COLD_PROCESSES:
        if kind == "mask":
            out += [ColdProcess("mask", mask_kind=k) for k in ("centre", "patches", "fade")]
        else:
            out.append(ColdProcess(kind, others=others if kind == "blend" else None))
    return out


def images(b=5, shape=(3, 7, 11), seed=0, dtype=torch.float32):
    return (torch.rand(b, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1)


def name(p):
    return p.kind + (f"-{p.mask_kind}" if p.kind == "mask" else "")


@pytest.mark.parametrize("b", [1, 5])
@pytest.mark.parametrize("shape", [(3, 7, 11), (1, 8, 8)])
def test_degrade_at_zero_is_identity_and_keeps_shape_and_dtype(b, shape):
    for dtype in (torch.float32, torch.float64):
        x = images(b, shape, dtype=dtype)
        for p in every_process(shape):
            g = torch.Generator().manual_seed(1)
            assert torch.equal(p.degrade(x, 0.0, g), x), name(p)
            t = torch.linspace(0, 1, b, dtype=torch.float64)  # one level per sample, including 0 and 1
            y = p.degrade(x, t, torch.Generator().manual_seed(1))
            assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all(), name(p)
            assert torch.equal(y[0], x[0]), name(p)


def test_distance_to_x0_grows_monotonically_with_t():
    x = images(4, (3, 16, 16))
    ts = torch.linspace(0, 1, 11).tolist()
    procs = [ColdProcess("blur"), ColdProcess("blur", blur_schedule="sqrt"), ColdProcess("desaturate")]
    procs += [ColdProcess("mask", mask_kind=k) for k in ("centre", "patches", "fade")]
    for p in procs:
        d = [float((p.degrade(x, t) - x).norm()) for t in ts]
        assert all(b > a for a, b in zip(d, d[1:])), (name(p), d)
    # Pixelation is piecewise constant in t; over nested grids (16, 8, 4, 2, 1) it grows strictly.
    p = ColdProcess("pixelate")
    levels = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [g[0] for g in p.pixel_grid(torch.tensor(levels), (16, 16))] == [16, 8, 4, 2, 1]
    d = [float((p.degrade(x, t) - x).norm()) for t in levels]
    assert all(b > a for a, b in zip(d, d[1:])), d
    assert torch.allclose(p.degrade(x, 1.0), x.mean((2, 3), keepdim=True).expand_as(x), atol=1e-6)


def test_closed_forms_at_full_level():
    x = images(3, (3, 9, 6))
    # Infinitely wide blur with reflect padding keeps each channel's mean.
    wide = ColdProcess("blur", blur_sigma_max=400.0).degrade(x.double(), 1.0)
    assert torch.allclose(wide, x.double().mean((2, 3), keepdim=True).expand_as(wide), atol=1e-4)
    assert torch.allclose(blur_matrix(torch.tensor([0.0, 1.5, 30.0]), 9).sum(-1), torch.ones(3, 9, dtype=torch.float64))
    for kind in ("centre", "patches", "fade"):
        full = ColdProcess("mask", mask_kind=kind, mask_fill=-0.5).degrade(x, 1.0)
        assert torch.equal(full, torch.full_like(x, -0.5))
    grey = ColdProcess("desaturate").degrade(x, 1.0)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    assert torch.allclose(ColdProcess("blend", others=OTHERS[:1]).degrade(images(3, (3, 7, 11)), 1.0),
                          OTHERS[:1].expand(3, -1, -1, -1))


def test_randomness_comes_from_the_generator_and_per_sample_generators_are_batch_independent():
    x = images(4)
    for p in [q for q in every_process() if q.stochastic]:
        a = p.degrade(x, 0.6, torch.Generator().manual_seed(3))
        b = p.degrade(x, 0.6, torch.Generator().manual_seed(3))
        c = p.degrade(x, 0.6, torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c), name(p)
        gens = [torch.Generator().manual_seed(10 + i) for i in range(4)]
        full = p.degrade(x, 0.6, gens)
        alone = p.degrade(x[2:3], 0.6, [torch.Generator().manual_seed(12)])
        assert torch.equal(full[2:3], alone), name(p)
    # Snow without a generator uses the process's fixed seed, the same layer for every image.
    snow = ColdProcess("snow")
    assert torch.equal(snow.degrade(x, 0.7), snow.degrade(x, 0.7))
    assert not torch.equal(snow.degrade(x, 0.7), ColdProcess("snow", seed=1).degrade(x, 0.7))


def test_blend_without_second_data_set_is_an_error_that_says_so():
    with pytest.raises(ValueError, match="--blend-data"):
        ColdProcess("blend")
    with pytest.raises(ValueError, match="unknown cold process 'blurr'"):
        ColdProcess("blurr")
    from unblur.config import Config, apply_overrides
    from unblur.processes.cold import build_cold_process

    p = apply_overrides(Config(), {"process.kind": "desaturate"}).process
    with pytest.raises(ValueError, match="desaturate fades colour towards grey, but the data has 1 channel"):
        build_cold_process(p, shape=(1, 8, 8))
    assert torch.equal(build_cold_process(p, shape=(1, 8, 8), for_model=False).degrade(images(2, (1, 8, 8)), 0.7),
                       images(2, (1, 8, 8)))
    with pytest.raises(ValueError, match=r"level t must lie in \[0, 1\]"):
        ColdProcess("blur").degrade(images(2), 1.5)


def exact(x0):
    """The exact restorer of a known batch: R(x_t, t) = x0 whatever it is given."""
    return lambda x, t, cond=None: x0.to(x.dtype)


@pytest.mark.parametrize("sampler", ColdProcess.samplers)
def test_cold_samplers_with_the_exact_restorer_recover_x0_along_the_degradation_path(sampler):
    x0 = images(3, (3, 8, 6))
    for p in every_process((3, 8, 6)):
        gens = [torch.Generator().manual_seed(i) for i in range(3)]
        layer = p.draw_layer(x0, gens) if p.layer_linear else None  # blend, noise: the samplers recover it
        x1 = p.degrade(x0, 1.0, layer=layer) if layer is not None else p.degrade(x0, 1.0)
        grid = torch.linspace(1, 0, 9, dtype=torch.float64)
        path: list = []
        out = get_sampler(sampler)(exact(x0), x1, grid, process=p, callback=path.append)
        assert torch.allclose(out, x0, atol=1e-5), name(p)
        if not p.stochastic or p.layer_linear:  # each state is x0 degraded to its level (snow: the walk's own layer)
            for info in path:
                s, xs = float(info.sigma_next), info.x
                want = p.degrade(x0, s, layer=layer) if layer is not None else p.degrade(x0, s)
                assert torch.allclose(xs, want, atol=1e-5), (name(p), s)


def test_improved_sampler_cancels_a_restorer_error_that_the_degradation_cannot_see():
    """Bansal et al. sec. 3.3: with R = x0 + e and a blur that keeps constants, Algorithm 2
    telescopes to x0 + e - D(e, 1) = x0, while Algorithm 1 returns x0 + e."""
    x0 = images(2, (1, 8, 8))
    p = ColdProcess("blur", blur_sigma_max=2.0)
    biased = lambda x, t, cond=None: x0 + 0.3  # noqa: E731
    grid = torch.linspace(1, 0, 11, dtype=torch.float64)
    improved = sample_cold(biased, p.degrade(x0, 1.0), grid, process=p)
    naive = sample_cold_naive(biased, p.degrade(x0, 1.0), grid, process=p)
    assert torch.allclose(improved, x0, atol=1e-5)
    assert torch.allclose(naive, x0 + 0.3, atol=1e-5)


def test_restore_and_level_estimation_with_the_exact_restorer():
    x0 = images(4, (1, 12, 10))
    p = ColdProcess("blur")
    levels = torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    xt = p.degrade(x0, levels)
    assert torch.allclose(estimate_level(exact(x0), xt, process=p), levels)
    for sampler in (*p.samplers, "one-shot"):
        for lv in (0.5, 1.0):
            got = restore(exact(x0), p.degrade(x0, lv), lv, process=p, sampler=sampler, steps=8)
            assert torch.allclose(got, x0, atol=1e-5), (sampler, lv)
    # Images with different levels are restored in groups of one level each.
    seen = []
    restore(lambda x, t, c=None: seen.append(float(t[0])) or x, xt, levels, process=p, sampler="one-shot")
    assert seen == levels.tolist()
    with pytest.raises(ValueError, match="give --level"):
        estimate_level(exact(x0), xt, process=ColdProcess("noise"))


def test_generation_starts_and_sampler_process_mismatches():
    x = images(200, (3, 6, 6))
    p = ColdProcess("blur", blur_sigma_max=20.0, blur_start="means")
    p = ColdProcess("blur", blur_sigma_max=20.0, blur_start="means", start_stats=p.fit_start(x))
    start = p.start((500, 3, 6, 6), torch.Generator().manual_seed(0))
    means = start.mean((2, 3))  # the mixture fitted to the channel means reproduces their moments
    assert torch.allclose(means.mean(0), x.mean((2, 3)).mean(0), atol=0.02)
    assert torch.allclose(means.std(0), x.mean((2, 3)).std(0), rtol=0.15)
    quiet = ColdProcess("blur", blur_sigma_max=20.0, blur_start="means", start_noise=0.0, start_stats=p.start_stats)
    flat = quiet.start((4, 3, 6, 6), torch.Generator().manual_seed(0))  # no noise: one value per channel
    assert torch.equal(flat, flat[:, :, :1, :1].expand_as(flat))
    assert torch.equal(ColdProcess("mask").start((2, 1, 4, 4)), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="no image-free start"):
        ColdProcess("pixelate").start((2, 1, 4, 4))
    den = exact(x[:2])
    with pytest.raises(ValueError, match="dpmpp-2m sampler does not apply to the blur process; use one of: cold"):
        generate(den, (2, 3, 6, 6), process=p, sampler="dpmpp-2m")
    with pytest.raises(ValueError, match="cold sampler does not apply to the edm process"):
        generate(den, (2, 3, 6, 6), process=EDMProcess(), sampler="cold")


def test_blurred_start_reproduces_the_fully_blurred_images():
    # Two clusters of images with structure that survives the blur: a left-right ramp of
    # weight +-1 (3 : 1) plus a top-bottom ramp and fine noise that the blur removes.
    g = torch.Generator().manual_seed(0)
    n, side = 2000, 8
    ramp = torch.linspace(-1, 1, side, dtype=torch.float64)
    a = torch.where(torch.rand(n, generator=g) < 0.75, 0.6, -0.6).double() + 0.05 * torch.randn(n, generator=g)
    b = 0.3 * torch.randn(n, generator=g).double()
    x = (a[:, None, None] * ramp[None, None, :] + b[:, None, None] * ramp[None, :, None])[:, None]
    x = (x + 0.2 * torch.randn(n, 1, side, side, generator=g)).float()
    p = ColdProcess("blur", blur_sigma_max=2.0)
    p = ColdProcess("blur", blur_sigma_max=2.0, start_stats=p.fit_start(x))
    fit = p.start_stats["blurred"]
    assert 2 <= len(fit["basis"]) <= 16
    xb = p.degrade(x.double(), 1.0).flatten(1)
    start = p.start((3000, 1, side, side), torch.Generator().manual_seed(1)).double().flatten(1)
    assert torch.allclose(start.mean(0), xb.mean(0), atol=0.02)
    basis = torch.tensor(fit["basis"], dtype=torch.float64)[:2]  # the two ramps' directions
    c_data, c_start = (xb - xb.mean(0)) @ basis.T, (start - xb.mean(0)) @ basis.T
    assert torch.allclose(c_start.std(0), c_data.std(0), rtol=0.1)
    # The mixture keeps the 3 : 1 split of the ramp's sign (one Gaussian could not).
    lr = torch.tensor([1.0] * (side // 2) + [-1.0] * (side // 2), dtype=torch.float64).repeat(side)
    frac_data, frac_start = float(((xb @ lr) < 0).double().mean()), float(((start @ lr) < 0).double().mean())
    assert abs(frac_data - 0.75) < 0.03 and abs(frac_start - frac_data) < 0.04
    assert float(((start @ lr).abs() < 0.5 * (xb @ lr).abs().median()).double().mean()) < 0.1  # bimodal, not spread
    with pytest.raises(ValueError, match="process.blur_start=means"):
        ColdProcess("blur", start_stats={"gmm": p.start_stats["gmm"], "residual_std": 0.1}).start((2, 1, side, side))
    with pytest.raises(ValueError, match=r"fitted to images of shape \(1, 8, 8\)"):
        p.start((2, 3, side, side))
    # Large images are fitted on a pooled grid and interpolated back.
    big = torch.nn.functional.interpolate(x[:300], size=(45, 45), mode="bilinear", align_corners=False)
    q = ColdProcess("blur", blur_sigma_max=11.0)
    q = ColdProcess("blur", blur_sigma_max=11.0, start_stats=q.fit_start(big, max_values=256))
    assert q.start_stats["blurred"]["shape"] == [1, 15, 15]
    start = q.start((600, 1, 45, 45), torch.Generator().manual_seed(2)).double()
    xb = q.degrade(big.double(), 1.0)
    assert start.shape == (600, 1, 45, 45)
    assert (start.mean(0) - xb.mean(0)).abs().max() < 0.03
    assert torch.allclose(start.std(0).mean(), xb.std(0).mean(), rtol=0.15)
    with pytest.raises(ValueError, match="process.blur_start"):
        ColdProcess("blur", blur_start="mixture")


def test_gmm_fit_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(300, 2, generator=g) * 0.1 - 2, torch.randn(100, 2, generator=g) * 0.1 + 3])
    gmm = fit_gmm(x, 2, seed=1)
    order = sorted(range(2), key=lambda k: gmm["means"][k][0])
    assert np.allclose([gmm["means"][k] for k in order], [[-2, -2], [3, 3]], atol=0.05)
    assert np.allclose([gmm["weights"][k] for k in order], [0.75, 0.25], atol=0.01)


def test_psnr_and_ssim():
    x = images(2, (3, 8, 8))
    y = (x + 0.1).clamp(-1, 1)
    assert np.all(np.isinf(psnr(x, x)))
    err = ((x.clamp(-1, 1) - y) / 2).square().flatten(1).mean(1)  # MSE on [0, 1] images
    assert np.allclose(psnr(y, x), (10 * torch.log10(1 / err)).numpy())
    assert np.allclose(ssim(x, x), 1.0) and np.all(ssim(y, x) < 1)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    z = x.clone()
    z[..., 4:] = 0.123
    assert np.all(np.isinf(psnr(z, x, mask=mask)))  # the hidden half does not count
    assert np.allclose(psnr(y, x, mask=torch.ones(1, 1, 8, 8)), psnr(y, x))


@pytest.mark.slow
def test_cli_train_restore_degrade_sample(tmp_path, unblur_cli):
    run = tmp_path / "run"
    r = unblur_cli("train", "--process", "blur", "--out", run, "--steps", 6, "--set", "model.base_channels=16",
             "--set", "model.channel_mult=1,2", "--set", "model.num_res_blocks=1", "--set", "train.batch_size=16",
             "--set", "train.sample_every=0", "--set", "sample.grid_n=4", "--set", "sample.steps=3",
             "--set", "process.blur_sigma_max=2.5")
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["process"]["kind"] == "blur" and cfg["process"]["blur_sigma_max"] == 2.5
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("restore_psnr" in rec and "degraded_ssim" in rec for rec in lines)

    clean = tmp_path / "clean"
    rng = np.random.default_rng(0)
    for rel in ("a.png", "sub/b.png", "sub/deeper/c.png"):
        (clean / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(clean / rel)
    deg = tmp_path / "deg"
    r = unblur_cli("degrade", "--process", "blur", "--level", 0.5, "--input", clean, "--out", deg,
             "--set", "process.blur_sigma_max=2.5")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.relative_to(deg).as_posix() for p in deg.rglob("*.png")) == ["a.png", "sub/b.png",
                                                                               "sub/deeper/c.png"]
    out = tmp_path / "restored"
    r = unblur_cli("restore", run, "--input", deg, "--level", 0.5, "--reference", clean, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "PSNR: restored" in r.stdout
    assert (out / "sub" / "deeper" / "c.png").exists()
    recs = [json.loads(s) for s in (out / "restore.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and all(math.isfinite(rec["psnr"]) and rec["level"] == 0.5 for rec in recs)
    r = unblur_cli("restore", run, "--input", deg / "sub" / "b.png", "--estimate-level", "--out", tmp_path / "one")
    assert r.returncode == 0 and (tmp_path / "one" / "b.png").exists(), r.stderr[-2000:]

    r = unblur_cli("sample", run, "--n", 3, "--sampler", "cold", "--steps", 3, "--out", tmp_path / "s")
    assert r.returncode == 0, r.stderr[-2000:]
    assert np.load(tmp_path / "s" / "samples.npy").shape == (3, 1, 8, 8)

    report = tmp_path / "eval.json"
    r = unblur_cli("eval", run, "--metrics", "psnr,ssim", "--n", 16, "--level", 0.5, "--json", report)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(report.read_text())
    assert rep["restore_level"] == 0.5 and rep["restored_items"] == 16
    assert math.isfinite(rep["psnr"]) and -1 <= rep["ssim"] <= 1 and math.isfinite(rep["degraded"]["psnr"])
    assert "restored from level 0.5" in r.stdout

    r = unblur_cli("train", "--process", "blend", "--out", tmp_path / "b", "--steps", 1)
    assert r.returncode == 2 and "--blend-data" in r.stderr


def test_restoration_metrics_need_a_cold_process():
    from unblur.eval.report import EvalSettings, restoration_report
    from unblur.processes import EDMProcess

    with pytest.raises(ValueError, match="cold-diffusion run"):
        restoration_report(lambda x, s, c: x, EDMProcess(), torch.zeros(2, 1, 8, 8), EvalSettings(), ("psnr",))


def test_cold_precond_reads_the_coefficient_table_and_trains_on_the_restored_image():
    from unblur.objectives import LossModule
    from unblur.precond import ColdPrecond, coefficients
    from unblur.utils import mean_flat

    class Net(torch.nn.Module):  # F(x, c_noise) = 0.1 x + c_noise / 1000, to see every coefficient
        def forward(self, x, c_noise, cond=None):
            return 0.1 * x + c_noise[:, None, None, None] / 1000

    x, x0 = images(3, (1, 6, 5)), images(3, (1, 6, 5), seed=1)
    t = torch.tensor([0.0, 0.4, 1.0])
    blur = ColdPrecond(Net(), ColdProcess("blur"))
    assert torch.allclose(blur(x, t), x + 0.1 * x + t[:, None, None, None])  # residual: c_skip = c_out = c_in = 1
    noise = ColdPrecond(Net(), ColdProcess("noise", noise_sigma_max=2.0))
    s = 2.0 * t  # the EDM row at sigma(t), sigma_data = 0.5
    c_skip, c_out, c_in = (c[:, None, None, None] for c in coefficients("edm", s, 0.5))
    assert torch.allclose(noise(x, t), c_skip * x + c_out * (0.1 * c_in * x + t[:, None, None, None]))
    assert torch.equal(noise(x, 0.5), noise(x, torch.full((3,), 0.5)))
    # The generic loss mean_flat(|raw - target|) is the restoration loss || D(x_t, t) - x0 ||_1.
    assert torch.equal(blur.raw(x, t), blur(x, t)) and torch.equal(blur.target(x0, x, t), x0)
    assert torch.allclose(LossModule(blur, loss="l1")(x0, t, x), mean_flat((blur(x, t) - x0).abs()))


def test_the_cold_samplers_by_name_are_the_registered_ones():
    from unblur.sampling import SAMPLERS
    from unblur.sampling.cold import COLD_SAMPLER_FNS, COLD_SAMPLERS

    assert COLD_SAMPLER_FNS == {name: SAMPLERS[name].fn for name in COLD_SAMPLERS}
    assert set(COLD_SAMPLERS) == set(ColdProcess.samplers)
