"""The autoencoder run (``unblur train --model autoencoder``) and ``pipelines.load_autoencoder``:
latent shapes, the KL term, a trained autoencoder against the mean image, exact resume, the
discriminator's warm-up, loading runs and diffusers folders, and clear refusals."""

import hashlib
import json

import pytest
import torch

from unblur.cli import main
from unblur.config import Config, apply_overrides
from unblur.data import load_data
from unblur.eval.restoration import psnr
from unblur.kinds.autoencoder import holdout_split
from unblur.nets.autoencoder_kl import AutoencoderKL
from unblur.objectives import kl_normal
from unblur.pipelines import load_autoencoder
from unblur.pipelines.autoencoder import build_autoencoder, latent_scale
from unblur.runs.checkpoint import load_train_state, save_model
from unblur.training import train
from unblur.types import DataInfo

# A tiny autoencoder on the 8x8 digits: 2x2x4 latents, about 0.2 M parameters.
TINY_AE = {
    "data.source": "builtin:digits",
    "model.kind": "autoencoder",
    "autoencoder.widths": "16,32,32",
    "autoencoder.mid_attention": "false",
    "train.batch_size": 32,
    "train.log_every": 1,
    "train.sample_every": 0,
    "train.checkpoint_every": 0,
    "sample.grid_n": 4,
}
TRAIN_STEPS = 300  # about 10 s on one core
# Measured (squared error, the default): held-out PSNR 17.3 dB and SSIM 0.91 after 300 steps (13.4 dB after 150);
# the mean training image scores 11.3 dB on the same held-out digits.
PSNR_BOUND = 14.0
SSIM_BOUND = 0.75


def _cfg(**over):
    return apply_overrides(Config(), {**TINY_AE, **over})


def _records(run, key):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if key in r]


# -- shapes and the KL term --------------------------------------------------------------------

@pytest.mark.parametrize("f, shape", [(4, (1, 16, 16)), (8, (1, 16, 16)), (8, (3, 32, 24))])
def test_latent_shapes_for_f4_and_f8(f, shape):
    cfg = apply_overrides(Config(), {"model.kind": "autoencoder", "autoencoder.downsampling": f,
                                     "autoencoder.mid_attention": "false"})
    net = build_autoencoder(cfg, shape)
    assert net.downsampling == f and net.config.block_out_channels == (32, 64, 64, 64)[: 3 if f == 4 else 4]
    x = torch.rand(2, *shape) * 2 - 1
    mean, logvar = net.encode(x)
    C, H, W = shape
    assert mean.shape == logvar.shape == (2, 4, H // f, W // f)
    assert net.decode(mean).shape == x.shape


def test_image_sides_must_be_multiples_of_the_factor():
    cfg = apply_overrides(Config(), {"model.kind": "autoencoder", "autoencoder.downsampling": 8})
    with pytest.raises(ValueError, match="multiples of 8.*12x12"):
        build_autoencoder(cfg, (1, 12, 12))


def test_kl_term_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 4, 2, 2, generator=g)
    logvar = torch.randn(3, 4, 2, 2, generator=g)
    by_hand = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)
    assert torch.allclose(kl_normal(mean, logvar), by_hand, atol=1e-6)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    assert torch.allclose(kl_normal(mean, logvar), torch.distributions.kl_divergence(q, p).flatten(1).sum(1),
                          atol=1e-5)
    assert kl_normal(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)).item() == 0.0  # q = N(0, I)
    mu = torch.tensor([[[[1.0]], [[2.0]]]])  # two latent values, unit variance: 0.5 * (1 + 4)
    assert kl_normal(mu, torch.zeros_like(mu)).item() == pytest.approx(2.5)


def test_structure_terms_vanish_on_equal_images_and_follow_ssim():
    from unblur.eval.restoration import ssim
    from unblur.objectives import gradient_loss, perceptual_loss, ssim_loss

    x = load_data("builtin:digits").x[:6]
    assert ssim_loss(x, x).abs().max() < 1e-5 and gradient_loss(x, x).abs().max() == 0
    assert perceptual_loss(x, x, "none").abs().max() == 0
    noisy = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    ours, theirs = 1 - ssim_loss(noisy, x), torch.as_tensor(ssim(noisy, x), dtype=torch.float32)
    assert (ours - theirs).abs().max() < 0.15 and gradient_loss(noisy, x).min() > 0


@pytest.mark.parametrize("rec", ["l1", "l2", "l1+l2"])
def test_the_reconstruction_term_is_the_one_asked_for(rec):
    from unblur.kinds.autoencoder import AutoencoderLoss

    cfg = _cfg(**{"autoencoder.rec_loss": rec, "autoencoder.kl_weight": 0.0, "autoencoder.logvar_init": -30.0,
                  "autoencoder.widths": "8,8,8", "autoencoder.norm_groups": 4})
    torch.manual_seed(0)
    net = build_autoencoder(cfg, (1, 8, 8))
    x = load_data("builtin:digits").x[:3]
    with torch.no_grad():
        mean, logvar = net.encode(x)
        assert logvar.mean() < -25  # logvar_init moves the log-variance's start; z is then the mean
        err = net.decode(mean) - x
        loss, _, parts = AutoencoderLoss(net, cfg.autoencoder)(x, torch.Generator().manual_seed(1))
    want = {"l1": err.abs(), "l2": err.square(), "l1+l2": err.abs() + err.square()}[rec].flatten(1).mean(1)
    assert torch.allclose(loss, want, atol=1e-5) and torch.allclose(parts["rec"], want.mean(), atol=1e-5)


# -- a run trained through the command line ------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("ae") / "run"
    args = ["train", "--model", "autoencoder", "--data", "builtin:digits", "--out", str(run),
            "--steps", str(TRAIN_STEPS), "--set", "autoencoder.widths=16,32,32", "--set",
            "autoencoder.mid_attention=false", "--set", "train.batch_size=32", "--set", "train.log_every=50",
            "--set", "train.checkpoint_every=150", "--set", "train.sample_every=300", "--set", "sample.grid_n=16"]
    assert main(args) == 0
    return run


def test_trained_autoencoder_beats_the_mean_image(trained):
    evals = _records(trained, "heldout_psnr")
    assert [r["step"] for r in evals] == [150, TRAIN_STEPS]  # at each checkpoint, once
    last = evals[-1]
    data = load_data("builtin:digits")
    train_idx, held_idx = holdout_split(len(data), 0.05, 0)
    assert len(held_idx) == 90 and not set(train_idx.tolist()) & set(held_idx.tolist())
    held = data.x[held_idx]
    mean_psnr = float(psnr(data.x[train_idx].mean(0, keepdim=True).expand_as(held), held).mean())
    assert mean_psnr < 12.0
    assert last["heldout_psnr"] > PSNR_BOUND and last["heldout_psnr"] > mean_psnr + 3.0, (last, mean_psnr)
    assert last["heldout_ssim"] > SSIM_BOUND
    assert last["latent_shape"] == [4, 2, 2]
    assert (trained / "samples" / f"step-{TRAIN_STEPS:08d}.png").exists()
    # The scale factor saved with the network is 1 / std of the latent means on the training images.
    ae = load_autoencoder(trained)
    assert ae.scaling_factor == last["scaling_factor"]
    assert ae.scaling_factor == pytest.approx(latent_scale(ae.model, data.x[train_idx]), rel=1e-4)
    z = ae.encode(data.x[train_idx][:512])
    assert 0.8 < float(z.std()) < 1.2


def test_load_autoencoder_round_trips_a_run_and_a_diffusers_folder(trained, tmp_path):
    x = load_data("builtin:digits").x[:7]
    ae = load_autoencoder(trained)
    assert (ae.kind, ae.downsampling, ae.latent_channels, ae.in_channels) == ("unblur-run", 4, 4, 1)
    assert ae.path == str(trained.resolve()) and ae.image_shape == (1, 8, 8) and ae.shift_factor == 0.0
    assert ae.sha256 == hashlib.sha256((trained / "model.safetensors").read_bytes()).hexdigest()
    assert not any(p.requires_grad for p in ae.model.parameters()) and not ae.model.training
    m = ae.model
    with torch.no_grad():
        want_z = (m.encode(x)[0] - m.shift_factor) * m.scaling_factor
        z = ae.encode(x, batch=3)
        assert z.shape == (7, 4, 2, 2) and torch.allclose(z, want_z, atol=1e-5)
        want_x = m.decode(z / m.scaling_factor + m.shift_factor).clamp(-1, 1)
        assert torch.allclose(ae.decode(z, batch=2), want_x, atol=1e-5)
        assert ae.decode(z).shape == x.shape and ae.decode(z).abs().max() <= 1
    # Per-image generators: a draw does not depend on the batch.
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(7)]  # noqa: E731
    assert torch.allclose(ae.encode(x, sample=True, generator=gens(), batch=2),
                          ae.encode(x, sample=True, generator=gens(), batch=7), atol=1e-5)
    assert not torch.allclose(ae.encode(x, sample=True, generator=gens()), z)
    # The run's model.safetensors and a diffusers folder of the same network give the same latents.
    assert torch.equal(load_autoencoder(trained / "model.safetensors").encode(x), ae.encode(x))
    folder = tmp_path / "vae"
    ae.model.save_pretrained(folder)
    kl = load_autoencoder(folder)
    assert kl.kind == "diffusers-kl" and kl.scaling_factor == ae.scaling_factor
    assert kl.sha256 == hashlib.sha256((folder / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()
    assert torch.allclose(kl.encode(x), ae.encode(x), atol=1e-6)
    assert torch.allclose(kl.decode(z, tile=1), ae.decode(z, tile=1), atol=1e-6)
    assert load_autoencoder(folder / "diffusion_pytorch_model.safetensors").sha256 == kl.sha256
    ref = AutoencoderKL.from_pretrained(folder)  # the module itself, opened on its own
    with torch.no_grad():
        ref_z = (ref.encode(x)[0] - ref.shift_factor) * ref.scaling_factor
        assert torch.equal(kl.encode(x, batch=7), ref_z)
        assert torch.equal(kl.decode(ref_z, batch=7), ref.decode(ref_z / ref.scaling_factor).clamp(-1, 1))
    # Other weights, another hash.
    with torch.no_grad():
        kl.model.decoder.conv_out.bias.add_(0.1)
    kl.model.save_pretrained(folder)
    assert load_autoencoder(folder).sha256 != kl.sha256


def test_load_autoencoder_opens_a_taesd_folder(tmp_path):
    from unblur.nets.taesd import AutoencoderTiny, AutoencoderTinyConfig

    tiny = AutoencoderTiny(AutoencoderTinyConfig(in_channels=1, out_channels=1, encoder_block_out_channels=(8, 8, 8),
                                                 decoder_block_out_channels=(8, 8, 8), num_encoder_blocks=(1, 1, 1),
                                                 num_decoder_blocks=(1, 1, 1)))
    tiny.save_pretrained(tmp_path)
    ae = load_autoencoder(tmp_path)
    assert (ae.kind, ae.downsampling, ae.scaling_factor) == ("diffusers-tiny", 4, 1.0)
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(ae.encode(x, sample=True), tiny.encode(x), atol=1e-6)
        assert ae.decode(ae.encode(x)).shape == x.shape


def test_load_autoencoder_refuses_what_is_not_one(tmp_path):
    with pytest.raises(ValueError, match="no autoencoder at .*missing"):
        load_autoencoder(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds neither"):
        load_autoencoder(tmp_path)
    diffusion = tmp_path / "diffusion"
    diffusion.mkdir()
    save_model(diffusion / "model.safetensors", {}, Config(), DataInfo(kind="image", shape=(1, 8, 8)))
    with pytest.raises(ValueError, match="model.kind=auto run, not an autoencoder"):
        load_autoencoder(diffusion)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_autoencoder(bad)
    (bad / "config.txt").write_text("x")
    with pytest.raises(ValueError, match="config.txt"):
        load_autoencoder(bad / "config.txt")


# -- resume and the discriminator ------------------------------------------------------------------

DISC = {"autoencoder.widths": "8,16,16", "train.batch_size": 16, "autoencoder.discriminator": "true",
        "autoencoder.disc_start": 3, "autoencoder.disc_width": 8}


@pytest.fixture(scope="module")
def with_disc(tmp_path_factory):
    run = tmp_path_factory.mktemp("disc") / "straight"
    train(_cfg(**DISC, **{"train.steps": 8}), run, progress=False)
    return run


def test_the_discriminator_joins_after_its_warm_up(with_disc):
    steps = _records(with_disc, "loss")
    assert [r["step"] for r in steps] == list(range(1, 9))
    for r in steps:  # record k is step k - 1 (0-based); the discriminator joins at step 3
        on = r["step"] > 3
        assert ("d_loss" in r) == on and ("g_adv" in r) == on and ("logits_real" in r) == on, r
        if on:
            assert r["d_loss"] > 0 and r["d_weight"] >= 0
    state = load_train_state(with_disc / "train_state.pt")
    assert "disc" in state and "disc_opt" in state


def test_resume_is_exact(with_disc, tmp_path):
    split = tmp_path / "split"
    train(_cfg(**DISC, **{"train.steps": 4}), split, progress=False)
    train(_cfg(**DISC, **{"train.steps": 8}), split, resume=True, progress=False)
    losses = lambda run: [{k: v for k, v in r.items() if k not in ("img_per_s", "time")}  # noqa: E731
                          for r in _records(run, "loss")]
    assert losses(split) == losses(with_disc)
    a, b = load_train_state(with_disc / "train_state.pt"), load_train_state(split / "train_state.pt")
    assert a["step"] == b["step"] == 8
    for part in ("net", "ema", "disc"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    # The resumed run's export loads as an autoencoder and holds the same weights and scale.
    sa, sb = load_autoencoder(with_disc), load_autoencoder(split)
    assert sa.scaling_factor == sb.scaling_factor
    for (k, va), vb in zip(sa.model.state_dict().items(), sb.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_an_overwritten_run_loads_as_the_new_autoencoder(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", "--model", "autoencoder", "--out", str(run), "--steps", "2", "--set", "train.batch_size=8",
            "--set", "autoencoder.widths=8,16,16,16", "--set", "data.size=16"]
    assert main([*base, "--set", "autoencoder.downsampling=8"]) == 0
    assert load_autoencoder(run).downsampling == 8
    assert main([*base[:-4], "--overwrite", "--set", "autoencoder.widths=8,16,16"]) == 0
    ae = load_autoencoder(run)
    assert ae.downsampling == 4 and ae.image_shape == (1, 8, 8)


# -- what the other commands say ----------------------------------------------------------------

def test_sample_and_eval_on_an_autoencoder_run_are_one_line_errors(trained, tmp_path, capsys):
    for argv in (["sample", str(trained), "--n", "2", "--out", str(tmp_path / "s")], ["eval", str(trained)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "is an autoencoder run" in err and "--latent" in err, err
    assert not (tmp_path / "s").exists()


def test_info_describes_an_autoencoder_run(trained, capsys):
    assert main(["info", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "autoencoder (KL), downsampling 4: 1x8x8 images <-> 4x2x2 latents" in out
    assert "scaling_factor" in out and "PSNR" in out and "SSIM" in out and f"{TRAIN_STEPS} steps" in out


def test_autoencoder_options_are_checked(tmp_path, capsys):
    dry = ["train", "--model", "autoencoder", "--dry-run", "--out", str(tmp_path / "x")]
    for sets, words in ((["cond.classes=true"], "takes no conditioning"),
                        (["autoencoder.widths=32,64"], "autoencoder.widths must be 3 widths"),
                        (["autoencoder.norm_groups=7"], "autoencoder.norm_groups must be a divisor"),
                        (["autoencoder.perceptual=lpips"], "autoencoder.perceptual must be one of"),
                        (["autoencoder.downsampling=2"], "autoencoder.downsampling must be one of 4 | 8")):
        assert main([*dry, *(a for s in sets for a in ("--set", s))]) == 2
        assert words in capsys.readouterr().err
    assert main([*dry, "--process", "blur"]) == 2
    assert "does not apply to model.kind=autoencoder" in capsys.readouterr().err
    # Found when the data are loaded: sides that are not multiples of the factor; vectors.
    assert main(["train", "--model", "autoencoder", "--out", str(tmp_path / "y"), "--steps", "1",
                 "--set", "data.size=10"]) == 2
    assert "multiples of 4" in capsys.readouterr().err and not (tmp_path / "y").exists()
    assert main(["train", "--model", "autoencoder", "--data", "builtin:toy2d:moons", "--out", str(tmp_path / "z"),
                 "--steps", "1"]) == 2
    assert "needs image data" in capsys.readouterr().err and not (tmp_path / "z").exists()
