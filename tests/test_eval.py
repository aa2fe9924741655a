"""Metrics against closed forms and references, likelihoods against exact entropies, the eval CLI."""

import json
import math

import numpy as np
import pytest
import torch

from unblur.analytic import GaussianMixture
from unblur.eval.extractors import load_extractor, reference_features
from unblur.eval.likelihood import (
    discretized_gaussian_log_likelihood,
    ode_bits_per_dim,
    ode_log_likelihood,
    vlb_terms,
)
from unblur.eval.metrics import frechet_distance, inception_score, kernel_inception_distance, precision_recall
from unblur.processes.gaussian import DiscreteVP


def scipy_fid(x, y):
    from scipy import linalg

    x, y = x.numpy().astype(np.float64), y.numpy().astype(np.float64)
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("dim", [8, 64])
def test_frechet_distance_matches_scipy(dim):
    g = torch.Generator().manual_seed(dim)
    mix = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    a = torch.randn(500, dim, generator=g, dtype=torch.float64) @ mix
    b = torch.randn(400, dim, generator=g, dtype=torch.float64) * 1.3 + 0.2
    ours, ref = frechet_distance(a, b), scipy_fid(a, b)
    assert ours == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6 * ref)


def test_kid_is_unbiased_and_separates():
    g = torch.Generator().manual_seed(0)
    vals = []
    for _ in range(200):  # fresh samples of one distribution each time
        x, y = torch.randn(60, 16, generator=g), torch.randn(60, 16, generator=g)
        vals.append(kernel_inception_distance(x, y, num_subsets=1, generator=g)["kid"])
    v = torch.tensor(vals, dtype=torch.float64)
    se = float(v.std() / math.sqrt(len(v)))
    assert abs(float(v.mean())) < 3 * se  # unbiased: the mean is 0 within its error
    assert (v < 0).any()  # an unbiased estimate of 0 must go negative sometimes
    shifted = kernel_inception_distance(torch.randn(300, 16, generator=g), torch.randn(300, 16, generator=g) + 0.5)
    assert shifted["kid"] > 20 * shifted["kid_se"] > 0


def test_precision_recall_identical_and_disjoint():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 8, generator=g)
    same = precision_recall(x, x.clone())
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    near = precision_recall(x, torch.randn(400, 8, generator=g))
    assert near["precision"] > 0.8 and near["recall"] > 0.8
    far = precision_recall(x, torch.randn(400, 8, generator=g) + 20.0)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    # Mode dropping: the fake covers half the real set -> precision stays high, recall falls.
    half = precision_recall(x, x[x[:, 0] > 0] + 0.01 * torch.randn((x[:, 0] > 0).sum(), 8, generator=g))
    assert half["precision"] > 0.9 and half["recall"] < 0.75


def test_inception_score_bounds():
    k = 10
    confident = torch.eye(k).repeat(20, 1)  # every class equally often, each image certain
    assert inception_score(confident, splits=1)["is"] == pytest.approx(k, rel=1e-6)
    assert inception_score(torch.full((200, k), 1.0 / k), splits=1)["is"] == pytest.approx(1.0, rel=1e-9)


def test_too_few_samples_and_dimension_mismatch_are_errors():
    with pytest.raises(ValueError, match="at least 4 samples"):
        precision_recall(torch.randn(3, 2), torch.randn(10, 2))
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance(torch.randn(10, 2), torch.randn(10, 3))
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(torch.randn(1, 2), torch.randn(10, 2))


def test_ode_nll_of_a_gaussian_is_its_entropy():
    g = GaussianMixture(torch.ones(1), torch.tensor([[0.3, -0.2]]), torch.tensor([[[0.5, 0.2], [0.2, 0.3]]]))
    x = g.sample(3000, generator=torch.Generator().manual_seed(0))
    lp = ode_log_likelihood(g.denoiser(), x, sigma_min=1e-3, sigma_max=80.0, prior_std=80.0, steps=32)
    nll, entropy = float(-lp.mean()), g.entropy()
    assert nll == pytest.approx(entropy, rel=0.02)
    assert nll == pytest.approx(float(-g.log_prob(x).mean()), rel=2e-3)  # the same points, tighter
    # Hutchinson's estimator agrees in the mean.
    hut = ode_log_likelihood(g.denoiser(), x[:1000], sigma_min=1e-3, sigma_max=80.0, prior_std=80.0, steps=32,
                             exact_trace=False, generator=torch.Generator().manual_seed(1))
    assert float(-hut.mean()) == pytest.approx(float(-lp[:1000].mean()), abs=4 * float(hut.std()) / math.sqrt(1000))


def test_ode_bits_per_dim_of_uniform_pixels():
    # Data spread uniformly over [-1, 1] in every pixel: the exact denoiser of a wide Gaussian
    # with the same variance (1/3) gives about log2(256) - a little = 8 - 0.25 bits/dim (its
    # entropy per dim is 0.5 log2(2 pi e / 3) + 7 = 7.25 bits relative to the 2/255 bins).
    D = 16
    gm = GaussianMixture(torch.ones(1), torch.zeros(1, D), (torch.eye(D) / 3)[None])
    x = (torch.randint(0, 256, (200, D), generator=torch.Generator().manual_seed(0)).double() / 127.5 - 1)
    bpd = ode_bits_per_dim(gm.denoiser(), x, sigma_min=1e-3, sigma_max=80.0, prior_std=80.0, steps=24,
                           generator=torch.Generator().manual_seed(0))
    expected = float(-gm.log_prob(x).mean() - D * math.log(2 / 255)) / (D * math.log(2))
    assert float(bpd.mean()) == pytest.approx(expected, abs=0.05)


def test_vlb_closed_forms():
    vp = DiscreteVP("linear", 1000)
    # A single point c with its exact denoiser D = c: every KL term vanishes (beta_tilde
    # variances), the prior and decoder terms are closed forms.
    c = torch.tensor([[0.5, -0.25]], dtype=torch.float64).expand(64, 2)
    terms = vlb_terms(lambda x, s, cond=None: c[: len(x)], c, vp, decoder="gaussian", variance="beta_tilde",
                      generator=torch.Generator().manual_seed(0))
    assert float(terms["kl"].abs().max()) < 1e-9
    ab = float(vp.alphas_cumprod[-1])
    prior = 0.5 * float(2 * (1 - ab) + ab * (c[0] ** 2).sum() - 2 - 2 * math.log(1 - ab))
    assert float(terms["prior"][0]) == pytest.approx(prior, rel=1e-9)
    b1 = float(vp.betas[0])
    assert float(terms["decoder"][0]) == pytest.approx(math.log(2 * math.pi * b1), rel=1e-9)  # 2 dims * 0.5 log
    # Gaussian data with its exact denoiser: the bound (beta variances) sits just above the true NLL.
    g = GaussianMixture(torch.ones(1), torch.tensor([[0.3, -0.2]]), torch.tensor([[[0.5, 0.2], [0.2, 0.3]]]))
    x = g.sample(1500, generator=torch.Generator().manual_seed(0))
    tot = vlb_terms(g.denoiser(), x, vp, decoder="gaussian", variance="beta",
                    generator=torch.Generator().manual_seed(1))["total"]
    nll, se = float(-g.log_prob(x).mean()), float(tot.std()) / math.sqrt(len(x))
    assert nll - 3 * se < float(tot.mean()) < nll * 1.06


def test_discretized_gaussian_sums_to_one_over_the_bins():
    levels = 17
    grid = torch.linspace(-1, 1, levels, dtype=torch.float64)
    mean, log_scale = torch.full_like(grid, 0.3), torch.full_like(grid, math.log(0.4))
    p = discretized_gaussian_log_likelihood(grid, mean, log_scale, levels=levels).exp()
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-9)


def test_reference_features_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("UNBLUR_CACHE", str(tmp_path))
    from unblur.data import load_data

    ext = load_extractor("auto", device=torch.device("cpu"), data_source="builtin:digits")
    assert ext.id.startswith("builtin:digits@")
    x = load_data("builtin:digits").x[:100]
    f1, p1, cached1 = reference_features(ext, x, source="builtin:digits")
    f2, p2, cached2 = reference_features(ext, x, source="builtin:digits")
    f3, _, cached3 = reference_features(ext, x[:50], source="builtin:digits")
    assert (cached1, cached2, cached3) == (False, True, False)
    assert torch.equal(f1, f2) and torch.equal(p1, p2) and f3.shape == (50, 64)
    assert len(list((tmp_path / "refstats").glob("*.safetensors"))) == 2


def test_missing_weights_and_unknown_features_are_errors(tmp_path):
    cpu = torch.device("cpu")
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt"):
        load_extractor(f"inception:{tmp_path}/nope.pt", device=cpu)
    with pytest.raises(ValueError, match="unknown feature network"):
        load_extractor("clip", device=cpu)
    pix = load_extractor("auto", device=cpu, data_source=str(tmp_path))
    assert not pix.semantic and "PIXELS" in pix.label


# -- the command line on tiny trained runs ------------------------------------------------------

TINY_VP_DIGITS = {
    "data.source": "builtin:digits",
    "model.base_channels": 16,
    "model.channel_mult": "1,2",
    "model.num_res_blocks": 1,
    "process.kind": "vp",
    "process.num_steps": 100,
    "train.steps": 30,
    "train.batch_size": 32,
    "train.sample_every": 0,
    "train.checkpoint_every": 0,
    "sample.grid_n": 0,
}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from unblur.config import Config, apply_overrides
    from unblur.training import train

    run = tmp_path_factory.mktemp("evalrun") / "digits"
    train(apply_overrides(Config(), TINY_VP_DIGITS), run, progress=False)
    return run


def test_cli_eval_report_on_a_tiny_digits_run(digits_run, tmp_path, monkeypatch, capsys):
    from unblur.cli import main

    monkeypatch.setenv("UNBLUR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "report.json"
    args = ["eval", str(digits_run), "--data", "builtin:digits", "--metrics", "fid,kid,pr,is,bpd", "--n", "200",
            "--steps", "4", "--sampler", "ddim", "--likelihood-n", "4", "--ode-steps", "4", "--json", str(out)]
    assert main(args) == 0
    r = json.loads(out.read_text())
    for key in ("fid", "kid", "precision", "recall", "floor", "settings"):
        assert key in r, key
    assert r["settings"]["n"] == 200 and r["settings"]["features"].startswith("builtin:digits@")
    # Real-vs-real is far better than 30 training steps, which beat pure noise.
    assert r["floor"]["fid"] < r["fid"] < r["noise"]["fid"]
    assert r["floor"]["precision"] > 0.7 and r["floor"]["recall"] > 0.7
    assert 6 < r["floor"]["is"] <= 10  # the classifier is sure of real digits, all ten classes present
    # bits/dim: both estimates are finite and below 8 + a margin (a near-untrained model on [-1, 1] data).
    assert 0 < r["bpd_ode"] < 12 and 0 < r["bpd_vlb"] < 12
    assert set(r["bpd_vlb_terms"]) == {"prior", "kl", "decoder"}
    assert not r["reference_cached"]
    assert main(args) == 0  # the second time the reference features come from the cache
    assert json.loads(out.read_text())["reference_cached"]
    text = capsys.readouterr().out
    assert "data floor" in text and "pure noise" in text


def test_cli_eval_errors_say_what_to_do(digits_run, tmp_path, monkeypatch, capsys):
    from unblur.cli import main

    monkeypatch.setenv("UNBLUR_CACHE", str(tmp_path / "cache"))
    run = str(digits_run)
    assert main(["eval", run, "--features", f"inception:{tmp_path}/missing.pt", "--n", "8"]) == 2
    assert "inception-2015-12-05.pt" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", run, "--data", str(empty)]) == 2
    assert str(empty) in capsys.readouterr().err
    big = tmp_path / "big.npy"
    np.save(big, np.random.default_rng(0).random((20, 1, 16, 16), dtype=np.float32))
    assert main(["eval", run, "--data", str(big), "--n", "8"]) == 2
    assert "mismatched sizes" in capsys.readouterr().err
    assert main(["eval", run, "--data", str(big), "--resize", "--n", "3", "--metrics", "pr", "--steps", "2"]) == 2
    assert "too few samples" in capsys.readouterr().err
    assert main(["eval", run, "--metrics", "fid,lpips"]) == 2
    assert "unknown metric 'lpips'" in capsys.readouterr().err
    assert main(["eval", run, "--metrics", "fid,psnr"]) == 2
    err = capsys.readouterr().err
    assert "cold-diffusion run" in err and "sample" not in err  # refused before any sampling
    assert main(["eval", run, "--metrics", "nll"]) == 2
    assert "for images ask for bpd" in capsys.readouterr().err


def test_cli_sweep_writes_table_and_plot(digits_run, tmp_path, monkeypatch, capsys):
    from unblur.cli import main

    monkeypatch.setenv("UNBLUR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sweep"
    assert main(["sweep", str(digits_run), "--samplers", "ddim,heun", "--steps", "2,4", "--n", "64",
                 "--out", str(out)]) == 0
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [(r["sampler"], r["steps"], r["nfe"]) for r in rows] == [("ddim", 2, 2), ("ddim", 4, 4), ("heun", 2, 3),
                                                                    ("heun", 4, 7)]
    assert all(r["fid"] > 0 and r["seconds"] > 0 for r in rows)
    assert (out / "sweep.png").stat().st_size > 1000
    assert "| data floor |" in capsys.readouterr().out


def test_cli_eval_nll_of_a_toy_run(toy_run, tmp_path, monkeypatch):
    from unblur.cli import main

    out = tmp_path / "toy.json"
    assert main(["eval", str(toy_run), "--n", "300", "--steps", "4", "--likelihood-n", "50", "--ode-steps", "4",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["settings"]["metrics"] == ["fid", "kid", "pr", "nll"] and r["settings"]["features"] == "vectors"
    assert math.isfinite(r["nll"]) and r["true_entropy"] == pytest.approx(r["true_nll"], abs=0.5)
    assert r["floor"]["fid"] < r["fid"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_inception_and_hf_folders_load_by_path(tmp_path):
    """The plumbing of inception:PATH (a TorchScript detector called with return_features=True,
    fed uint8 RGB) and hf:PATH (a local save_pretrained folder), with stand-in networks."""

    class Detector(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            assert x.dtype == torch.uint8 and x.shape[1] == 3
            f = x.float().mean(dim=(2, 3))
            return f if return_features else f.softmax(-1)

    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(Detector()).save(str(path))
    ext = load_extractor(f"inception:{path}", device=torch.device("cpu"))
    f, p = ext(torch.full((5, 1, 8, 8), 1.0))
    assert ext.id.startswith("inception-tf@") and p is None
    assert torch.allclose(f, torch.full((5, 3), 255.0, dtype=torch.float64))

    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32)
    transformers.ViTModel(cfg).save_pretrained(tmp_path / "vit")
    ext = load_extractor(f"hf:{tmp_path / 'vit'}", device=torch.device("cpu"))
    f, _ = ext(torch.rand(4, 1, 8, 8) * 2 - 1)
    assert f.shape == (4, 16) and torch.isfinite(f).all() and ext.id.startswith("hf:vit@")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_extractor(f"hf:{tmp_path}", device=torch.device("cpu"))
