"""Behaviour of the networks: shapes, zero-init, conditioning paths, layouts, FLOPs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unblur.nets import (
    MLPConfig,
    MLPDenoiserNet,
    UNet,
    UNetConfig,
    build_net,
    count_parameters,
    default_unet_config,
    forward_flops,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These nets are tiny: one thread avoids OpenMP barriers stalling on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMALL = UNetConfig(
    in_channels=2,
    out_channels=3,
    base_channels=16,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(2,),
    head_channels=8,
    norm_groups=8,
)


def perturb(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (the zero-initialised ones included) small random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return net


def make(cfg: UNetConfig = SMALL, **changes) -> UNet:
    torch.manual_seed(0)
    return UNet(dataclasses.replace(cfg, **changes)).eval()


@pytest.mark.parametrize("hw", [(8, 8), (16, 8), (8, 24)])
def test_unet_output_shape_square_and_not(hw):
    net = make()
    out = net(torch.randn(3, 2, *hw), torch.rand(3))
    assert out.shape == (3, 3, *hw)


def test_unet_rejects_indivisible_size_naming_it():
    net = make(channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match=r"divisible by 4.*\(1, 2, 10, 8\)"):
        net(torch.randn(1, 2, 10, 8), torch.rand(1))
    with pytest.raises(ValueError, match="in_channels|\\(B, 2, H, W\\)"):
        net(torch.randn(1, 3, 8, 8), torch.rand(1))


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="norm_groups=8 does not divide"):
        UNetConfig(base_channels=12, norm_groups=8)
    with pytest.raises(ValueError, match="downsampling factors"):
        UNetConfig(attn_resolutions=(3,))


def test_zero_init_output_is_exactly_zero():
    net = make(num_classes=4, context_dim=6, image_cond_channels=1)
    cond = {"class": torch.tensor([0, 1]), "text": torch.randn(2, 5, 6), "image": torch.randn(2, 1, 8, 8)}
    out = net(torch.randn(2, 2, 8, 8), torch.rand(2), cond)
    assert torch.equal(out, torch.zeros_like(out))
    mlp = MLPDenoiserNet(MLPConfig(dim=3, hidden=32, depth=2))
    assert torch.equal(mlp(torch.randn(4, 3), torch.rand(4)), torch.zeros(4, 3))


def test_class_embedding_reaches_output_and_null_class_is_default():
    net = perturb(make(num_classes=3))
    x, c = torch.randn(2, 2, 8, 8), torch.rand(2)
    a = net(x, c, {"class": torch.tensor([0, 0])})
    b = net(x, c, {"class": torch.tensor([1, 1])})
    assert not torch.allclose(a, b)
    null = net(x, c, {"class": torch.tensor([3, 3])})
    torch.testing.assert_close(net(x, c, None), null)
    torch.testing.assert_close(net(x, c, {}), null)


def test_class_conditioning_learns_after_gradient_steps():
    net = make(num_classes=3).train()
    x, c = torch.randn(4, 2, 8, 8), torch.rand(4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(2):  # step 1 moves the zero output conv, step 2 the residual branches
        opt.zero_grad()
        loss = (net(x, c, {"class": torch.tensor([0, 1, 2, 0])}) - 1).pow(2).mean()
        loss.backward()
        opt.step()
    net.eval()
    a = net(x, c, {"class": torch.zeros(4, dtype=torch.long)})
    b = net(x, c, {"class": torch.ones(4, dtype=torch.long)})
    assert a.abs().sum() > 0 and not torch.allclose(a, b)


def test_text_mask_is_respected_and_text_matters():
    net = perturb(make(context_dim=6))
    x, c = torch.randn(2, 2, 8, 8), torch.rand(2)
    text = torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    out = net(x, c, {"text": text, "text_mask": mask})
    changed = text.clone()
    changed[0, 3] += 5.0
    changed[1, 1:] -= 3.0
    torch.testing.assert_close(net(x, c, {"text": changed, "text_mask": mask}), out)
    changed[0, 0] += 1.0  # a real token
    assert not torch.allclose(net(x, c, {"text": changed, "text_mask": mask})[0], out[0])
    # Every token masked out: the null token alone is attended to, no NaN.
    none = net(x, c, {"text": text, "text_mask": torch.zeros(2, 4, dtype=torch.bool)})
    assert torch.isfinite(none).all()


def test_image_conditioning_adds_input_channels():
    net = perturb(make(image_cond_channels=3))
    assert net.input_conv.in_channels == 2 + 3
    x, c = torch.randn(2, 2, 8, 8), torch.rand(2)
    a = net(x, c, {"image": torch.randn(2, 3, 8, 8)})
    torch.testing.assert_close(net(x, c), net(x, c, {"image": torch.zeros(2, 3, 8, 8)}))
    assert not torch.allclose(a, net(x, c))


@pytest.mark.parametrize("net_cl", [True, False])
def test_channels_last_and_contiguous_agree(net_cl):
    net = perturb(make(channels_last=net_cl, context_dim=6))
    x, c = torch.randn(2, 2, 8, 8), torch.rand(2)
    cond = {"text": torch.randn(2, 3, 6)}
    a = net(x, c, cond)
    b = net(x.contiguous(memory_format=torch.channels_last), c, cond)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert b.is_contiguous(memory_format=torch.channels_last)
    ref = perturb(make(channels_last=not net_cl, context_dim=6))
    torch.testing.assert_close(ref(x, c, cond), a, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_runs_and_is_close():
    net = perturb(make(num_classes=2, context_dim=6))
    x, c = torch.randn(2, 2, 8, 8), torch.rand(2)
    cond = {"class": torch.tensor([0, 1]), "text": torch.randn(2, 3, 6)}
    ref = net(x, c, cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, c, cond)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


def test_gradient_reaches_every_parameter():
    net = perturb(make(num_classes=2, context_dim=6, image_cond_channels=1)).train()
    cond = {
        "class": torch.tensor([0, 1]),
        "text": torch.randn(2, 3, 6),
        "text_mask": torch.tensor([[True, True, False], [True, False, False]]),
        "image": torch.randn(2, 1, 8, 8),
    }
    net(torch.randn(2, 2, 8, 8), torch.rand(2), cond).square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_batch_independence_in_eval_mode():
    net = perturb(make(num_classes=3, context_dim=6))
    x, c = torch.randn(4, 2, 8, 8), torch.rand(4) * 3
    cond = {"class": torch.tensor([0, 1, 2, 3]), "text": torch.randn(4, 2, 6)}
    full = net(x, c, cond)
    for i in range(4):
        one = net(x[i : i + 1], c[i : i + 1], {k: v[i : i + 1] for k, v in cond.items()})
        torch.testing.assert_close(one, full[i : i + 1], rtol=1e-4, atol=1e-5)


def test_noise_embedding_distinguishes_both_ranges():
    net = perturb(make())
    x = torch.randn(1, 2, 8, 8).expand(2, -1, -1, -1)
    for pair in ([-1.2, -1.0], [500.0, 501.0]):  # EDM 0.25*ln(sigma), DDPM timesteps
        out = net(x, torch.tensor(pair))
        assert not torch.allclose(out[0], out[1])


def test_mlp_shapes_classes_and_errors():
    net = perturb(MLPDenoiserNet(MLPConfig(dim=5, hidden=32, depth=2, num_classes=3)))
    x, c = torch.randn(7, 5), torch.rand(7)
    out = net(x, c)
    assert out.shape == (7, 5)
    other = net(x, c, {"class": torch.zeros(7, dtype=torch.long)})
    assert not torch.allclose(out, other)
    torch.testing.assert_close(out, net(x, c, {"class": torch.full((7,), 3)}))
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        net(torch.randn(7, 4), c)


def test_build_net_and_strict_dict_config():
    net = build_net("unet", {"in_channels": 1, "out_channels": 1, "channel_mult": [1, 2],
                             "base_channels": 16, "norm_groups": 8, "head_channels": 8})
    assert isinstance(net, UNet) and net.cfg.channel_mult == (1, 2)
    assert isinstance(build_net("mlp", MLPConfig(dim=2)), MLPDenoiserNet)
    with pytest.raises(ValueError, match="did you mean 'base_channels'"):
        build_net("unet", {"base_channel": 8})
    with pytest.raises(ValueError, match="unknown network kind"):
        build_net("unets")


@pytest.mark.parametrize(("size", "levels"), [((8, 8), 2), ((16, 16), 2), ((32, 32), 3),
                                              ((64, 64), 4), ((24, 40), 3)])
def test_default_config_fits_the_data(size, levels):
    cfg = default_unet_config(size=size, channels=1)
    assert cfg.levels == levels
    assert size[0] % 2 ** (levels - 1) == 0 and size[1] % 2 ** (levels - 1) == 0
    if size[0] <= 16:
        assert 0.3e6 < count_parameters(UNet(cfg)) < 2e6


def test_flops_positive_and_scale_with_area():
    cfg = dataclasses.replace(SMALL, attn_resolutions=(), mid_attention=False)
    net = make(cfg)
    f8 = forward_flops(net, torch.randn(2, 2, 8, 8), torch.rand(2))
    f16 = forward_flops(net, torch.randn(2, 2, 16, 16), torch.rand(2))
    assert f8 > 0
    assert 3.8 < f16 / f8 < 4.05  # the tiny embedding MLP does not grow with the image
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("length", [16, 64, 200])
def test_attention_kernel_choice_matches_fp32_reference(length):
    # Short bf16 sequences take the matmul-softmax path, long ones the fused kernel: both must
    # agree with an fp32 softmax(q k^T / sqrt(d)) v, with and without a key mask.
    from unblur.nets.layers import attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, length, 32, generator=g) for _ in range(3))
    mask = torch.rand(2, 1, 1, length, generator=g) > 0.3
    mask[..., 0] = True
    for m in (None, mask):
        scores = q @ k.transpose(-1, -2) / 32**0.5
        if m is not None:
            scores = scores.masked_fill(~m, float("-inf"))
        ref = scores.softmax(-1) @ v
        out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), m)
        assert out.dtype == torch.bfloat16
        assert (out.float() - ref).abs().max() < 0.05
        assert torch.allclose(attention(q, k, v, m), ref, atol=1e-5)
