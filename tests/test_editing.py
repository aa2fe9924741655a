"""Editing against closed forms: inpainting with exact mixture denoisers matches (or approaches)
the Gaussian conditional of the kept coordinates, inversion is undone by reconstruction, and
outpainting tiles blend without seams; then the run methods and `unblur edit` end to end."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unblur.analytic import GaussianMixture, ring_mixture
from unblur.editing import (
    box_mask,
    check_mask,
    edit,
    extend_canvas,
    interpolate_states,
    invert,
    mask_depth,
    parse_extend,
    read_mask,
    reconstruct,
    repaint_moves,
    repaint_nfe,
    slerp,
    tiled,
)
from unblur.processes.gaussian import EDMProcess
from unblur.sampling import generate
from unblur.utils import seeded_generators

EDM = EDMProcess()
OLD = Path(__file__).parent / "fixtures" / "old_runs"


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """2 E|a - b| - E|a - a'| - E|b - b'| (Szekely), >= 0 and 0 only for equal laws; rows are points."""
    d = lambda u, v: torch.cdist(u, v).mean()  # noqa: E731
    return float(2 * d(a, b) - d(a, a) - d(b, b))


# -- inpainting against the conditional of the kept coordinates -------------------------------------
def ring_conditional(gm, xk: float, n: int, seed: int) -> torch.Tensor:
    """Draws of y | x = xk for the isotropic ring mixture: the components reweighted by N(xk; mu_x, s^2)."""
    var = float(gm.covs[0, 0, 0])
    w = gm.weights * torch.exp(-0.5 * (xk - gm.means[:, 0]) ** 2 / var)
    g = torch.Generator().manual_seed(seed)
    k = torch.multinomial(w / w.sum(), n, replacement=True, generator=g)
    return (gm.means[k, 1] + math.sqrt(var) * torch.randn(n, generator=g, dtype=torch.float64))[:, None]


def test_repaint_matches_the_mixture_conditional_and_beats_replace_at_equal_nfe():
    gm, N, xk = ring_mixture(), 2000, 1.8
    ref = ring_conditional(gm, xk, N, seed=0)
    x0 = torch.tensor([[xk, 0.0]], dtype=torch.float64).expand(N, 2).clone()
    mask = torch.tensor([False, True])
    steps, jl, jn = 20, 2, 10
    nfe = repaint_nfe(steps, jl, jn)
    rp = edit(gm.denoiser(), x0, process=EDM, steps=steps, mask=mask, method="repaint", jump_length=jl, jump_n=jn,
              generator=torch.Generator().manual_seed(1))
    rep = edit(gm.denoiser(), x0, process=EDM, sampler="ddpm", steps=nfe, mask=mask,
               generator=torch.Generator().manual_seed(1))
    assert (rp[:, 0] == xk).all() and (rep[:, 0] == xk).all()  # kept coordinates exactly
    e_rp, e_rep = energy_distance(rp[:, 1:], ref), energy_distance(rep[:, 1:], ref)
    # Measured: 0.0029 for RePaint, 0.0185 for replacement, 0.00014 between two draws of the exact law.
    assert e_rp < 0.005, e_rp
    assert e_rp < e_rep / 3, (e_rp, e_rep)  # measured 0.0027 vs 0.0185


def test_inpainting_a_gaussian_approaches_its_closed_form_conditional():
    """A 16-D stationary Gaussian (a smooth 1-D "signal"); the right 6 coordinates regenerated.

    Replacement conditions on a noisy copy of the kept values and is biased towards the
    unconditional law; RePaint's resampling removes most of that bias. Tolerances (measured
    ratios about 0.19 and 0.32): RePaint's mean error below 0.25 of the unconditional one, and
    its mean and covariance errors below 0.6 of replacement's at equal NFE.
    """
    D = 16
    i = torch.arange(D, dtype=torch.float64)
    C = 0.5 * torch.exp(-0.5 * (i[:, None] - i[None]) ** 2 / 9.0) + 1e-3 * torch.eye(D, dtype=torch.float64)
    G = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, D, dtype=torch.float64), C[None])
    u, k = torch.arange(10, 16), torch.arange(0, 10)
    y = G.sample(1, generator=torch.Generator().manual_seed(7))[0]
    cm = C[u][:, k] @ torch.linalg.solve(C[k][:, k], y[k])
    cc = C[u][:, u] - C[u][:, k] @ torch.linalg.solve(C[k][:, k], C[k][:, u])
    N = 2000
    x0 = y[None].expand(N, D).clone()
    mask = torch.zeros(D, dtype=torch.bool)
    mask[u] = True
    rp = edit(G.denoiser(), x0, process=EDM, steps=20, mask=mask, method="repaint", jump_length=2, jump_n=10,
              generator=torch.Generator().manual_seed(1))
    rep = edit(G.denoiser(), x0, process=EDM, sampler="ddpm", steps=repaint_nfe(20, 2, 10), mask=mask,
               generator=torch.Generator().manual_seed(1))
    assert torch.equal(rp[:, k], x0[:, k]) and torch.equal(rep[:, k], x0[:, k])
    err = {name: (float((s[:, u].mean(0) - cm).norm()), float((torch.cov(s[:, u].T) - cc).norm()))
           for name, s in (("repaint", rp), ("replace", rep))}
    assert err["repaint"][0] < 0.25 * float(cm.norm()), err
    assert err["repaint"][0] < 0.6 * err["replace"][0] and err["repaint"][1] < 0.6 * err["replace"][1], err


def test_repaint_walk_visits_every_level_and_counts_its_nfe():
    for n, j, r in [(20, 2, 10), (50, 10, 10), (7, 3, 2), (5, 10, 4)]:
        moves = repaint_moves(n, j, r)
        pos = np.cumsum(moves)
        assert pos[-1] == n and pos.min() >= 1 and pos.max() <= n
        jumps = len(range(0, n - j, j))
        assert sum(m > 0 for m in moves) == n + jumps * (r - 1) * j == repaint_nfe(n, j, r)
    with pytest.raises(ValueError, match="jump_length"):
        repaint_moves(10, 0, 2)


def test_strength_zero_returns_the_input_and_strength_one_equals_plain_sampling():
    gm = ring_mixture()
    x0 = gm.sample(8, generator=torch.Generator().manual_seed(0))
    same = edit(gm.denoiser(), x0, process=EDM, strength=0.0, steps=10)
    assert torch.equal(same, x0)
    for sampler in EDM.samplers:  # every sampler of a Gaussian process
        e = edit(gm.denoiser(), x0, process=EDM, sampler=sampler, strength=1.0, steps=10,
                 generator=seeded_generators(range(8)))
        plain = generate(gm.denoiser(), (8, 2), process=EDM, sampler=sampler, steps=10, grid="karras",
                         generator=seeded_generators(range(8)), dtype=torch.float64)
        assert torch.equal(e, plain)
    # In between, the result stays closer to the input as the strength falls.
    dist = [float((edit(gm.denoiser(), x0, process=EDM, strength=s, steps=20,
                        generator=torch.Generator().manual_seed(3)) - x0).norm()) for s in (0.2, 0.5, 1.0)]
    assert dist[0] < dist[1] < dist[2]
    with pytest.raises(ValueError, match="strength"):
        edit(gm.denoiser(), x0, process=EDM, strength=1.5)


def test_inversion_then_reconstruction_returns_the_input():
    gm = ring_mixture()
    x0 = gm.sample(16, generator=torch.Generator().manual_seed(2))
    grid = EDM.levels(50, "karras")
    z = invert(gm.denoiser(), x0, grid, iterations=10)
    assert float(z.std()) > 20  # the top of the grid: noise of std ~ sigma_max = 80
    back = reconstruct(gm.denoiser(), z, grid)
    assert float((back - x0).abs().max()) < 1e-3
    plain = reconstruct(gm.denoiser(), invert(gm.denoiser(), x0, grid, iterations=0), grid)
    assert float((plain - x0).abs().max()) > 10 * float((back - x0).abs().max())  # DDIM inversion alone is not exact


def test_slerp_and_state_interpolation_end_at_their_inputs():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 64, generator=g), torch.randn(3, 64, generator=g)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(dim=1), (a.norm(dim=1) + b.norm(dim=1)) / 2, rtol=0.02)  # stays typical
    assert float(torch.lerp(a, b, 0.5).norm(dim=1).mean()) < 0.8 * float(mid.norm(dim=1).mean())
    assert torch.allclose(slerp(a, a, 0.3), a, atol=1e-6)  # parallel: no division by zero
    x0a, x0b = torch.zeros(1, 64), torch.ones(1, 64)
    states = interpolate_states(x0a, x0a + 5 * a[:1], x0b, x0b + 5 * b[:1], 5.0, [0.0, 0.5, 1.0])
    assert torch.allclose(states[0], x0a + 5 * a[:1], atol=1e-5) and torch.allclose(states[2], x0b + 5 * b[:1],
                                                                                    atol=1e-5)


# -- outpainting and tiles --------------------------------------------------------------------------
def test_outpainting_keeps_the_original_and_tiles_blend_without_seams():
    """A denoiser that adds a ramp across each window it sees: run in hard tiles it would jump at every
    tile border; blended, the step across a border is no larger than the steps inside a tile."""
    H, W = 16, 48

    def ramp_den(x, sigma, cond=None):  # smooth in x, position-dependent within its window
        w = x.shape[-1]
        return 0.5 * x + 0.3 * torch.linspace(-1, 1, w, dtype=x.dtype)

    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, 32), indexing="ij")
    img = (0.5 * torch.sin(2 * xx) * torch.cos(yy))[None, None]  # (1, 1, 16, 32), smooth
    canvas, mask = extend_canvas(img, (8, 8, 0, 0), model_size=(16, 16))
    assert canvas.shape[-2:] == (H, W) and mask[..., 8:40].logical_not().all() and mask[..., :8].all()
    out = edit(tiled(ramp_den, (16, 16)), canvas, process=EDM, sampler="euler", steps=10, mask=mask,
               generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[..., 8:40], img)  # the original pixels, unchanged
    step = (out[..., 1:] - out[..., :-1]).abs().amax(dim=(0, 1, 2))  # (W - 1,) largest step between columns
    borders = [c - 1 for c in (12, 16, 24, 28, 32, 36)]  # where tiles of 16 (stride 12) start or end
    inside = [c for c in range(W - 1) if c not in borders]
    assert float(step[borders].max()) <= float(step[inside].max()) + 1e-6
    with pytest.raises(ValueError, match="at most"):
        extend_canvas(img, (40, 40, 0, 0), model_size=(16, 16))


# -- masks ------------------------------------------------------------------------------------------
def test_masks_from_pictures_of_any_mode_boxes_and_their_errors(tmp_path):
    a = np.zeros((8, 8), np.uint8)
    a[:, 4:] = 200
    Image.fromarray(a).save(tmp_path / "grey.png")
    Image.fromarray(a).convert("RGB").save(tmp_path / "rgb.png")
    Image.fromarray(a).convert("P").save(tmp_path / "pal.png")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:, 4:, 3] = 255  # opaque white on the right, transparent (keep) on the left
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    want = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    want[..., 4:] = True
    for name in ("grey", "rgb", "pal", "alpha"):
        assert torch.equal(read_mask(tmp_path / f"{name}.png", (8, 8)), want), name
    with pytest.warns(UserWarning, match="resized"):
        assert torch.equal(read_mask(tmp_path / "grey.png", (16, 16))[..., ::2, ::2], want)
    with pytest.raises(ValueError, match="aspect ratio"):
        read_mask(tmp_path / "grey.png", (8, 16))
    assert box_mask((1, 2, 3, 4), (8, 8)).sum() == 4
    with pytest.raises(ValueError, match="nothing to inpaint"):
        check_mask(torch.zeros(1, 1, 4, 4))
    assert parse_extend("4") == (4, 4, 4, 4) and parse_extend("0,8,0,0") == (0, 8, 0, 0)
    for bad in ("0", "1,2", "-1,0,0,0", "a"):
        with pytest.raises(ValueError, match="--extend"):
            parse_extend(bad)


def test_mask_depth_counts_rings_from_the_border():
    m = torch.zeros(1, 1, 7, 7, dtype=torch.bool)
    m[..., 1:6, 1:6] = True
    d = mask_depth(m)[0, 0]
    assert d[3, 3] == 3 and d[1, 1] == 1 and d[2, 3] == 2 and d[0, 0] == 0


# -- trained runs -----------------------------------------------------------------------------------
def test_run_edits_keep_the_kept_pixels_and_do_not_depend_on_the_batch():
    from unblur.runs import Run

    run = Run.load(OLD / "edm-classes", device="cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, *run.data.shape, generator=g) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., :, :4] = True
    res = run.edit(x, mask, steps=8, n=2, classes=["3"])
    assert res.x.shape == (6, 1, 8, 8) and [r["seed"] for r in res.records] == [0, 1] * 3
    assert torch.equal(res.x[..., 4:], x.repeat_interleave(2, 0)[..., 4:])
    alone = run.edit(x[1:2], mask, steps=8, n=2, classes=["3"])
    assert torch.allclose(alone.x, res.x[2:4], atol=1e-6)
    rp = run.edit(x[:1], mask, steps=8, method="repaint", jump_length=2, jump_n=2)
    assert rp.records[0]["method"] == "repaint" and torch.equal(rp.x[..., 4:], x[:1, ..., 4:])
    with pytest.raises(ValueError, match="no other sampler"):
        run.edit(x[:1], mask, steps=8, method="repaint", sampler="heun")
    out = run.outpaint(x[:1], (4, 12, 0, 0), steps=6)  # 8x24: three tiles wide
    assert out.x.shape == (1, 1, 8, 24) and torch.equal(out.x[..., 4:12], x[:1])
    inv = run.invert(x[:2], steps=30, iterations=10)
    assert float((inv.reconstruction - x[:2]).abs().max()) < 1e-3 and inv.level == pytest.approx(80.0)
    frames = run.interpolate(x[:1], x[1:2], frames=3, steps=20, iterations=10)
    assert torch.allclose(frames[0], x[0], atol=2e-3) and torch.allclose(frames[2], x[1], atol=2e-3)
    morph = run.interpolate_contexts(3, classes=["1", "7"], steps=6)
    assert morph.shape == (3, 1, 8, 8)


def test_cold_runs_do_img2img_and_refuse_gaussian_only_edits():
    from unblur.runs import Run

    run = Run.load(OLD / "blur", device="cpu")
    x = torch.rand(2, *run.data.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert run.edit(x, strength=0.5, steps=6).x.shape == x.shape
    for call, words in [(lambda: run.invert(x), "Gaussian run"), (lambda: run.outpaint(x, (2, 2, 0, 0)), "mask run"),
                        (lambda: run.edit(x, torch.ones(1, 1, 8, 8, dtype=torch.bool)), "mask run")]:
        with pytest.raises(ValueError, match=words):
            call()


def test_cold_mask_inpainting_keeps_the_rest_and_fills_the_hole():
    from unblur.editing import cold_inpaint
    from unblur.processes.cold import ColdProcess

    proc = ColdProcess("mask")
    x0 = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8)
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., 2:6, 1:7] = True
    seen = []

    def oracle(x, t, cond=None):  # a restorer that knows the image: the walk must end at it
        seen.append(t)
        return x0.expand_as(x)

    out = cold_inpaint(oracle, torch.where(mask, torch.zeros_like(x0), x0), mask, process=proc, steps=10)
    assert torch.allclose(out, x0, atol=1e-6)
    levels = torch.cat(seen).tolist()
    assert levels == sorted(levels, reverse=True) and 0 < levels[-1] < levels[0] <= 1


# -- the command ------------------------------------------------------------------------------------
def _digit_pngs(folder: Path, size: int = 8) -> None:
    from sklearn.datasets import load_digits

    d = load_digits().images
    (folder / "sub").mkdir(parents=True)
    for i, rel in enumerate(["a.png", "sub/b.png"]):
        Image.fromarray((d[i] * 255 / 16).astype(np.uint8)).resize((size, size)).save(folder / rel)


def test_edit_command_mirrors_folders_with_records(tmp_path, unblur_cli):
    run = OLD / "edm-classes"
    _digit_pngs(tmp_path / "in", 16)
    masks = tmp_path / "masks"
    (masks / "sub").mkdir(parents=True)
    for rel in ("a.png", "sub/b.png"):
        m = np.zeros((16, 16), np.uint8)
        m[:, :8] = 255
        Image.fromarray(m).save(masks / rel)
    r = unblur_cli("edit", str(run), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--mask",
                   str(masks), "--steps", "6", "--n", "2", "--class", "4")
    assert r.returncode == 0, r.stderr
    for rel in ("a-0", "a-1", "sub/b-0", "sub/b-1"):
        rec = json.loads((tmp_path / "o" / f"{rel}.json").read_text())
        assert rec["method"] == "replace" and rec["class_name"] == "4" and rec["strength"] == 1.0
        assert rec["mask"].endswith(rel.split("-")[0] + ".png") and rec["input"].endswith(rel.split("-")[0] + ".png")
        assert Image.open(tmp_path / "o" / f"{rel}.png").size == (8, 8)
    small = tmp_path / "small.png"  # a mask of half the picture's size: resized, with a one-line warning
    Image.open(masks / "a.png").resize((8, 8)).save(small)
    r = unblur_cli("edit", str(run), "--input", str(tmp_path / "in" / "a.png"), "--out", str(tmp_path / "o2"),
                   "--mask", str(small), "--steps", "4")
    assert r.returncode == 0 and "unblur edit: warning: --mask" in r.stderr and "resized" in r.stderr, r.stderr
    assert "UserWarning" not in r.stderr
    r = unblur_cli("edit", str(run), "--input", str(tmp_path / "in" / "a.png"), "--out", str(tmp_path / "inv"),
                   "--invert", "--steps", "20")
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "inv" / "a.json").read_text())
    assert rec["reconstruction_max_error"] < 0.02 and np.load(tmp_path / "inv" / "a.noise.npy").shape == (1, 8, 8)
    r = unblur_cli("edit", str(run), "--input", str(tmp_path / "in" / "a.png"), "--out", str(tmp_path / "mid"),
                   "--interpolate", str(tmp_path / "in" / "sub" / "b.png"), "--frames", "4", "--steps", "10")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "mid").glob("a-frame*.png"))) == 4
    assert (tmp_path / "mid" / "a-interpolation.png").exists()


def test_edit_command_refuses_bad_input_and_writes_nothing(tmp_path, capsys):
    """In-process (``main``), as the command line runs it: the refusals are what is tested, not start-up."""
    from unblur.cli import main as cli_main

    def main(argv):  # argparse's own refusals exit: the code is what a shell sees
        try:
            return cli_main(argv)
        except SystemExit as e:
            return e.code

    run = OLD / "edm-classes"
    _digit_pngs(tmp_path / "in")
    Image.fromarray(np.zeros((8, 16), np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "black.png")
    img = str(tmp_path / "in" / "a.png")
    cases = [
        (["--mask", str(tmp_path / "wide.png")], "aspect ratio"),
        (["--mask", str(tmp_path / "black.png")], "nothing to inpaint"),
        (["--strength", "0"], "(0, 1]"),
        (["--strength", "1.5"], "(0, 1]"),
        (["--extend", "100"], "at most"),
        (["--mask-box", "0,0,9,4"], "inside"),
        (["--method", "repaint"], "inpaints"),
        (["--mask-box", "0,0,4,4", "--extend", "2"], "do not combine"),
        (["--class", "eleven"], "eleven"),
    ]
    for extra, words in cases:
        out = tmp_path / "o"
        code = main(["edit", str(run), "--input", img, "--out", str(out), "--steps", "4", *extra])
        err = capsys.readouterr().err
        assert code == 2, (extra, err)
        assert words in err and len(err.strip().splitlines()) <= 12, (extra, err)
        assert not out.exists(), extra
    code = main(["edit", str(OLD / "blur"), "--input", img, "--out", str(tmp_path / "o"), "--extend", "2"])
    assert code == 2 and "blur" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_show_edit_draws_the_strip(tmp_path, unblur_cli):
    _digit_pngs(tmp_path / "in")
    out = tmp_path / "strip.png"
    r = unblur_cli("show", "edit", str(OLD / "edm-classes"), "--input", str(tmp_path / "in"), "--mask-box",
                   "4,0,8,8", "--levels", "3", "--steps", "6", "--out", str(out))
    assert r.returncode == 0, r.stderr
    from unblur.images import grid_scale

    s = grid_scale(8)
    w, h = Image.open(out).size
    assert (w, h) == ((6 * 10 + 2) * s, (2 * 10 + 2) * s + 14)  # input | mask | 3 x0_hat | output; 2 rows, labels
    assert out.with_suffix(".gif").exists()
