"""The native diffusers VAEs (``unblur.nets.autoencoder_kl``, ``unblur.nets.taesd``) agree with
diffusers itself: small randomly initialised diffusers models are saved, loaded here, and run
side by side in float32; folders written here load in diffusers; tiled decoding blends exactly
and bounds memory; bad folders are refused with the file named."""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.profiler import ProfilerActivity, profile

from unblur.nets.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig, tiled_decode
from unblur.nets.taesd import AutoencoderTiny, AutoencoderTinyConfig

diffusers.utils.logging.set_verbosity_error()

TOL = 1e-5  # float32 agreement with diffusers (measured: at most 3e-6 for decodes, 6e-7 for encodes)
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread avoids OpenMP barriers stalling on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def diffusers_kl(**kw) -> diffusers.AutoencoderKL:
    n = len(kw["block_out_channels"])
    kw = {"down_block_types": ("DownEncoderBlock2D",) * n, "up_block_types": ("UpDecoderBlock2D",) * n, **kw}
    return diffusers.AutoencoderKL(**kw).eval()


def images(n: int, size: int, channels: int = 3) -> torch.Tensor:
    return torch.rand(n, channels, size, size) * 2 - 1  # (n, C, size, size) in [-1, 1]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def peak_bytes(fn) -> int:
    """The largest number of bytes the CPU allocator held at once while ``fn`` ran (from the
    profiler's allocation and free events, in time order)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    held = peak = 0
    for e in events:
        held += e.self_cpu_memory_usage
        peak = max(peak, held)
    return peak


# f = 2, 4 and 8; with and without the quant convs and the middle attention; 4 and 16 latents.
KL_CASES = {
    "f2-attn-quant": dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8),
    "f4-noattn-noquant-flux": dict(block_out_channels=(32, 32, 64), layers_per_block=2, norm_num_groups=32,
                                   latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
                                   mid_block_add_attention=False, shift_factor=0.1159, scaling_factor=0.3611),
    "f8-attn-postquant-only": dict(block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8,
                                   use_quant_conv=False, use_post_quant_conv=True),
}


@pytest.mark.parametrize("case", sorted(KL_CASES))
def test_kl_matches_diffusers(case, tmp_path):
    ref = diffusers_kl(**KL_CASES[case])
    ref.save_pretrained(tmp_path)
    vae = AutoencoderKL.from_pretrained(tmp_path)
    f = 2 ** (len(KL_CASES[case]["block_out_channels"]) - 1)
    assert vae.downsampling == f
    assert vae.scaling_factor == ref.config.scaling_factor
    assert vae.shift_factor == (ref.config.shift_factor or 0.0)
    x = images(2, 32)
    with torch.no_grad():
        post = ref.encode(x).latent_dist
        mean, logvar = vae.encode(x)
        assert mean.shape == (2, ref.config.latent_channels, 32 // f, 32 // f)
        assert max_diff(mean, post.mean) < TOL
        assert max_diff(logvar, post.logvar) < TOL
        assert torch.equal(vae.encode_mode(x), mean)
        # one seeded generator draws the same eps as diffusers' DiagonalGaussianDistribution.sample
        z = vae.encode_sample(x, generator=torch.Generator().manual_seed(3))
        assert max_diff(z, post.sample(generator=torch.Generator().manual_seed(3))) < TOL
        assert max_diff(vae.decode(z), ref.decode(z).sample) < TOL
        assert max_diff(vae.denormalize(vae.normalize(z)), z) < 1e-6


def test_kl_log_variance_is_clamped_as_in_diffusers(tmp_path):
    ref = diffusers_kl(**KL_CASES["f2-attn-quant"])
    with torch.no_grad():
        ref.quant_conv.bias[4:] = 100.0  # the log-variance half of the moments, far above 20
        ref.quant_conv.bias[:4] = 0.0
    ref.save_pretrained(tmp_path)
    vae = AutoencoderKL.from_pretrained(tmp_path)
    with torch.no_grad():
        _, logvar = vae.encode(images(1, 16))
    assert torch.all(logvar == 20.0)


def test_kl_save_pretrained_loads_in_diffusers(tmp_path):
    cfg = AutoencoderKLConfig(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                              up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, shift_factor=0.1,
                              scaling_factor=0.5, sample_size=64)
    vae = AutoencoderKL(cfg).eval()
    vae.save_pretrained(tmp_path / "vae")
    ref = diffusers.AutoencoderKL.from_pretrained(tmp_path / "vae").eval()
    for key in ("block_out_channels", "scaling_factor", "shift_factor", "sample_size", "norm_num_groups"):
        assert tuple(ref.config[key]) == tuple(cfg.to_dict()[key]) if isinstance(ref.config[key], list) \
            else ref.config[key] == cfg.to_dict()[key]
    x = images(2, 32)
    with torch.no_grad():
        mean, logvar = vae.encode(x)
        post = ref.encode(x).latent_dist
        assert max_diff(mean, post.mean) < TOL and max_diff(logvar, post.logvar) < TOL
        assert max_diff(vae.decode(mean), ref.decode(mean).sample) < TOL
    # and back: the folder diffusers re-saves reads here to the same config
    ref.save_pretrained(tmp_path / "again")
    assert AutoencoderKL.from_pretrained(tmp_path / "again").config == cfg


def test_kl_legacy_attention_names_sharded_and_variant_folders(tmp_path):
    ref = diffusers_kl(**KL_CASES["f2-attn-quant"])
    x = images(1, 16)
    with torch.no_grad():
        want = ref.encode(x).latent_dist.mean
    # diffusers' first attention names (query, key, value, proj_attn), as in older SD 1.x folders
    ref.save_pretrained(tmp_path / "legacy")
    state = load_file(tmp_path / "legacy" / WEIGHTS)
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    old = {}
    for k, v in state.items():
        for new_name, old_name in renames.items():
            k = k.replace(new_name, old_name)
        old[k] = v
    assert any(".proj_attn." in k for k in old)
    save_file(old, tmp_path / "legacy" / WEIGHTS)
    # sharded weights with an index, and an fp16-named variant
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / f"{WEIGHTS}.index.json").is_file()
    ref.save_pretrained(tmp_path / "variant", variant="fp16")
    with torch.no_grad():
        for folder, variant in (("legacy", None), ("sharded", None), ("variant", "fp16")):
            vae = AutoencoderKL.from_pretrained(tmp_path / folder, variant=variant)
            assert max_diff(vae.encode_mode(x), want) < TOL, folder
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model\.fp16\.safetensors.*variant"):
        AutoencoderKL.from_pretrained(tmp_path / "variant")


def test_kl_dtype_and_device_arguments(tmp_path):
    diffusers_kl(**KL_CASES["f2-attn-quant"]).save_pretrained(tmp_path)
    vae = AutoencoderKL.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert not vae.training
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in vae.parameters())
    with torch.no_grad():
        assert vae.decode(torch.randn(1, 4, 8, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


# ---- tiled and batched decoding


@pytest.mark.parametrize("overlap", [0, 3, None])
def test_tile_blend_is_a_partition_of_unity(overlap):
    """With a pointwise decoder every tile agrees, so the blend must give the whole decode back,
    also for sizes that are not a multiple of the step and rectangular latents."""
    def pointwise(z):  # (B, C, h, w) -> (B, C, 4h, 4w)
        return F.interpolate(torch.sin(3 * z) + z, scale_factor=4, mode="nearest")

    z = torch.randn(2, 3, 37, 23)
    out = tiled_decode(pointwise, z, tile=8, overlap=overlap)
    assert out.shape == (2, 3, 148, 92)
    assert max_diff(out, pointwise(z)) < 1e-6


def test_tile_larger_than_latent_decodes_whole(tmp_path):
    diffusers_kl(**KL_CASES["f2-attn-quant"]).save_pretrained(tmp_path)
    vae = AutoencoderKL.from_pretrained(tmp_path)
    z = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(vae.decode(z, tile=16), vae.decode(z))


def test_kl_tiled_decode_error_and_peak_memory(tmp_path):
    """Tiles see their own GroupNorm statistics, attention and zero padding, so a tiled decode
    differs from a whole one everywhere, not only at seams. On this random network (an untrained
    decoder amplifies the differences far more than a trained one), 32-latent tiles overlapping by
    8 on a 48x48 latent measured a mean error of 0.014 (max 0.11) on outputs of standard deviation
    0.37, below diffusers' own tiled_decode at the same tile size (mean 0.020, max 0.20). The
    allocator's peak for a 64x64 latent fell from 12.1 MiB whole to 1.0 MiB with 16-latent tiles."""
    ref = diffusers_kl(**KL_CASES["f2-attn-quant"])
    ref.save_pretrained(tmp_path)
    vae = AutoencoderKL.from_pretrained(tmp_path)
    z = torch.randn(1, 4, 48, 48)
    with torch.no_grad():
        whole = vae.decode(z)
        tiled = vae.decode(z, tile=32, overlap=8)
        ref.enable_tiling()
        ref.tile_latent_min_size, ref.tile_sample_min_size = 32, 32 * vae.downsampling
        theirs = ref.decode(z).sample
        ours_err, their_err = (tiled - whole).abs(), (theirs - whole).abs()
        assert ours_err.mean() < 0.05 * whole.std() and ours_err.max() < 0.2
        assert ours_err.mean() <= their_err.mean() and ours_err.max() <= their_err.max()
        z = torch.randn(1, 4, 64, 64)
        whole_peak = peak_bytes(lambda: vae.decode(z))
        tiled_peak = peak_bytes(lambda: vae.decode(z, tile=16))
    assert tiled_peak < 0.25 * whole_peak, (tiled_peak, whole_peak)


def test_decode_batches_matches_decode(tmp_path):
    diffusers_kl(**KL_CASES["f2-attn-quant"]).save_pretrained(tmp_path)
    vae = AutoencoderKL.from_pretrained(tmp_path)
    z = torch.randn(5, 4, 8, 8)
    with torch.no_grad():
        assert max_diff(vae.decode_batches(z, 2), vae.decode(z)) < TOL  # chunks change GEMM blocking only
        assert max_diff(vae.decode_batches(z, 3, tile=4), vae.decode(z, tile=4)) < TOL
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        vae.decode_batches(z, 0)
    with pytest.raises(ValueError, match=r"overlap must be an integer in \[0, tile=4\)"):
        vae.decode(z, tile=4, overlap=4)
    with pytest.raises(ValueError, match=r"decode wants latents \(B, 4, h, w\)"):
        vae.decode(torch.randn(1, 3, 8, 8))


# ---- refused folders: each a ValueError naming the file


def test_folder_without_config(tmp_path):
    (tmp_path / "vae").mkdir()
    diffusers_kl(**KL_CASES["f2-attn-quant"]).save_pretrained(tmp_path / "vae")
    with pytest.raises(ValueError, match=rf"no config\.json in '{tmp_path}'.*pass '{tmp_path / 'vae'}'"):
        AutoencoderKL.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no model folder at"):
        AutoencoderKL.from_pretrained(tmp_path / "absent")


def test_pickled_bin_only_folder_is_refused_unread(tmp_path):
    diffusers_kl(**KL_CASES["f2-attn-quant"]).save_pretrained(tmp_path)
    (tmp_path / WEIGHTS).unlink()
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(ValueError, match=r"only pickled weights \(diffusion_pytorch_model\.bin\).*never loads"):
        AutoencoderKL.from_pretrained(tmp_path)


def test_missing_unexpected_and_misshapen_keys_are_listed(tmp_path):
    diffusers_kl(**KL_CASES["f2-attn-quant"]).save_pretrained(tmp_path)
    path = tmp_path / WEIGHTS
    state = load_file(path)
    gone = state.pop("decoder.conv_out.bias")
    state["decoder.extra.weight"] = gone
    save_file(state, path)
    with pytest.raises(ValueError, match=rf"{path}.*missing decoder\.conv_out\.bias; unexpected decoder\.extra"):
        AutoencoderKL.from_pretrained(tmp_path)
    del state["decoder.extra.weight"]
    state["decoder.conv_out.bias"] = torch.zeros(5)
    save_file(state, path)
    with pytest.raises(ValueError, match=rf"{path} has tensors of the wrong shape.*conv_out\.bias \(5,\)"):
        AutoencoderKL.from_pretrained(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"{path} is not a readable safetensors file"):
        AutoencoderKL.from_pretrained(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]}, "AttnDownEncoderBlock2D.*not supported"),
    ({"act_fn": "gelu"}, "unknown act_fn 'gelu'"),
    ({"norm_type": "spatial"}, "unknown or unsupported AutoencoderKL config key.*norm_type"),
    ({"layers_per_block": "2"}, "layers_per_block must be a non-negative integer, got '2'"),
    ({"norm_num_groups": 5}, "norm_num_groups=5 does not divide"),
    ({"_class_name": "AutoencoderTiny"}, "describes a diffusers AutoencoderTiny, not an AutoencoderKL"),
])
def test_bad_config_is_refused_naming_the_file(tmp_path, change, message):
    diffusers_kl(**KL_CASES["f2-attn-quant"]).save_pretrained(tmp_path)
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(change)
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=rf"{cfg_path}.*{message}"):
        AutoencoderKL.from_pretrained(tmp_path)


def test_old_config_without_newer_keys_takes_diffusers_defaults(tmp_path):
    ref = diffusers_kl(**KL_CASES["f2-attn-quant"])
    ref.save_pretrained(tmp_path)
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("force_upcast", "shift_factor", "latents_mean", "latents_std", "use_quant_conv",
                "use_post_quant_conv", "mid_block_add_attention", "scaling_factor"):
        del cfg[key]
    cfg_path.write_text(json.dumps(cfg))
    vae = AutoencoderKL.from_pretrained(tmp_path)
    assert vae.scaling_factor == 0.18215 and vae.shift_factor == 0.0 and vae.config.force_upcast


# ---- TAESD (diffusers' AutoencoderTiny)


TINY_CASES = {
    "sd-like": dict(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                    num_encoder_blocks=(1, 2, 2, 2), num_decoder_blocks=(2, 2, 2, 1)),
    "silu-bilinear-16": dict(encoder_block_out_channels=(16, 16), decoder_block_out_channels=(8, 8),
                             num_encoder_blocks=(1, 2), num_decoder_blocks=(2, 1), act_fn="silu",
                             upsample_fn="bilinear", latent_channels=16),
}


@pytest.mark.parametrize("case", sorted(TINY_CASES))
def test_taesd_matches_diffusers(case, tmp_path):
    ref = diffusers.AutoencoderTiny(**TINY_CASES[case]).eval()
    ref.save_pretrained(tmp_path)
    taesd = AutoencoderTiny.from_pretrained(tmp_path)
    f = taesd.downsampling
    x = images(2, 32)
    with torch.no_grad():
        z = taesd.encode(x)
        assert z.shape == (2, ref.config.latent_channels, 32 // f, 32 // f)
        assert max_diff(z, ref.encode(x).latents) < TOL
        z = 2 * torch.randn_like(z)
        assert max_diff(taesd.decode(z), ref.decode(z).sample) < TOL
    assert (taesd.scaling_factor, taesd.shift_factor) == (1.0, 0.0)


def test_taesd_save_pretrained_loads_in_diffusers(tmp_path):
    cfg = AutoencoderTinyConfig(**TINY_CASES["sd-like"])
    taesd = AutoencoderTiny(cfg).eval()
    taesd.save_pretrained(tmp_path)
    ref = diffusers.AutoencoderTiny.from_pretrained(tmp_path).eval()
    x = images(1, 32)
    with torch.no_grad():
        z = taesd.encode(x)
        assert max_diff(z, ref.encode(x).latents) < TOL
        assert max_diff(taesd.decode(z), ref.decode(z).sample) < TOL
    assert AutoencoderTiny.from_pretrained(tmp_path).config == cfg


def test_taesd_tiled_decode_differs_only_near_seams(tmp_path):
    """TAESD has no normalisation and no attention: away from the tile edges (beyond the
    decoder's reach) a tiled decode equals the whole one; the blend keeps the seams close."""
    taesd = AutoencoderTiny(AutoencoderTinyConfig(**TINY_CASES["silu-bilinear-16"])).eval()
    z = torch.randn(1, 16, 40, 40)
    with torch.no_grad():
        whole = taesd.decode(z)
        tiled = taesd.decode(z, tile=24, overlap=8)  # tiles at 0 and 16: seams at 16 and 24
    err = (tiled - whole).abs().amax(dim=(0, 1))  # (80, 80)
    f = taesd.downsampling
    far = torch.ones(80, dtype=torch.bool)
    far[(16 - 8) * f : (24 + 8) * f] = False  # within 8 latent pixels of either seam
    assert err[far][:, far].max() < 1e-6
    assert err.max() < 0.05  # measured 0.017-0.021 near the seams, on outputs of std 0.09-0.14


def test_taesd_and_kl_folders_are_not_mixed_up(tmp_path):
    diffusers.AutoencoderTiny(**TINY_CASES["sd-like"]).save_pretrained(tmp_path / "tiny")
    diffusers_kl(**KL_CASES["f2-attn-quant"]).save_pretrained(tmp_path / "kl")
    with pytest.raises(ValueError, match="describes a diffusers AutoencoderTiny, not an AutoencoderKL"):
        AutoencoderKL.from_pretrained(tmp_path / "tiny")
    with pytest.raises(ValueError, match="describes a diffusers AutoencoderKL, not an AutoencoderTiny"):
        AutoencoderTiny.from_pretrained(tmp_path / "kl")


def test_taesd_unequal_widths_are_refused():
    with pytest.raises(ValueError, match="encoder_block_out_channels must all be equal"):
        AutoencoderTinyConfig(encoder_block_out_channels=(8, 16), num_encoder_blocks=(1, 1))


def test_taesd_bin_only_folder_is_refused(tmp_path):
    diffusers.AutoencoderTiny(**TINY_CASES["sd-like"]).save_pretrained(tmp_path)
    (tmp_path / WEIGHTS).unlink()
    Path(tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(ValueError, match=r"only pickled weights"):
        AutoencoderTiny.from_pretrained(tmp_path)
