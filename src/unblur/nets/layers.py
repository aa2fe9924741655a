"""Building blocks shared by the networks: noise embedding, residual blocks, attention, resampling.

Every block accepts NCHW tensors in either memory format and keeps it: no ``.contiguous()``
call silently brings a channels-last tensor back to NCHW, and the attention projections use
``(B, H*W, C)`` views, which are free in channels-last (one copy in NCHW).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..utils import zero_init

# On CPU, the fused (flash) attention kernel is slow in bf16/fp16 for short sequences: at 8x8 and
# 4x4 feature maps (64 and 16 positions) its forward + backward took 2.5-10x longer than the
# plain matmul-softmax-matmul path on a 2-core AVX-512 machine, while in fp32 and for long
# sequences (over 128 x 128 scores) the fused kernel wins. ``attention`` picks accordingly.
_CPU_MATH_MAX_SCORES = 128 * 128


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """``scaled_dot_product_attention`` with the faster kernel for short reduced-precision CPU work."""
    if (q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)
            and q.shape[-2] * k.shape[-2] <= _CPU_MATH_MAX_SCORES):
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of ``c_noise`` (Vaswani et al.; as in ADM and EDM's DhariwalUNet).

    ``emb[i] = cos(scale * c_noise * f_i)`` and ``sin(...)`` with frequencies ``f_i`` spaced
    geometrically from 1 down to ``1 / max_period``. With ``scale = 1`` and
    ``max_period = 10000`` this serves both a DDPM timestep index in [0, 999] (the fastest
    features wind many times, the slowest barely move) and EDM's ``0.25 * ln(sigma)`` in about
    [-2, 2] (the fastest features sweep about a period, which is what EDM trained ADM with).
    """

    def __init__(self, dim: int, *, scale: float = 1.0, max_period: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"noise embedding dim must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs * scale, persistent=False)

    def forward(self, c_noise: Tensor) -> Tensor:
        args = c_noise.float()[:, None] * self.freqs[None, :]  # (B, dim/2)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, dim)


def group_norm_modulate(
    x: Tensor, norm: nn.GroupNorm, scale: Tensor | None = None, shift: Tensor | None = None
) -> Tensor:
    """``GroupNorm(x) * (1 + scale) + shift`` (AdaGN), with the norm's affine folded in.

    The affine ``gamma, beta`` and the per-sample ``scale, shift`` (B, C) combine into one
    per-sample ``a, b`` so that the full-size tensor is touched by one ``addcmul`` after the
    normalisation, instead of by four element-wise ops.
    """
    if scale is None:
        return norm(x)
    h = F.group_norm(x, norm.num_groups, None, None, norm.eps)  # (B, C, H, W), same layout
    a = norm.weight * (1 + scale)  # (B, C)
    b = norm.bias * (1 + scale) + shift  # (B, C)
    return torch.addcmul(b[:, :, None, None].to(h.dtype), h, a[:, :, None, None].to(h.dtype))


class ResBlock(nn.Module):
    """ADM residual block: GN, SiLU, conv, AdaGN(emb), SiLU, dropout, zero-init conv; skip."""

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, *, dropout: float = 0.0, groups: int = 32
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)  # -> scale, shift
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = dropout
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        # x: (B, C_in, H, W); emb: (B, E), already passed through SiLU by the caller.
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        scale, shift = self.emb(emb).chunk(2, dim=1)  # (B, C_out) each
        h = F.silu(group_norm_modulate(h, self.norm2, scale, shift))
        h = F.dropout(h, p=self.dropout, training=self.training)
        return self.skip(x) + self.conv2(h)


class Attention(nn.Module):
    """Multi-head attention over the H*W positions of a feature map, residual, zero-init out.

    Self-attention when ``context_dim`` is None; otherwise cross-attention from the positions to
    a sequence of context tokens (text), with a learned null token always prepended so that a
    sample with no text (or every token masked out) still has one token to attend to.
    """

    def __init__(
        self,
        channels: int,
        *,
        head_channels: int = 64,
        groups: int = 32,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        if channels % head_channels:
            raise ValueError(
                f"attention width {channels} is not a multiple of head_channels={head_channels}"
            )
        self.heads = channels // head_channels
        self.norm = nn.GroupNorm(groups, channels)
        self.cross = context_dim is not None
        if self.cross:
            self.q = nn.Linear(channels, channels)
            self.context_norm = nn.LayerNorm(context_dim)
            self.kv = nn.Linear(context_dim, 2 * channels)
            self.null_token = nn.Parameter(torch.randn(1, 1, context_dim) * 0.02)
        else:
            self.qkv = nn.Linear(channels, 3 * channels)
        self.out = zero_init(nn.Linear(channels, channels))

    def forward(
        self, x: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None
    ) -> Tensor:
        B, C, H, W = x.shape
        nh, d = self.heads, C // self.heads
        # (B, H*W, C): a free view when x is channels-last; F.linear copies otherwise.
        h = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)
        if not self.cross:
            qkv = self.qkv(h).view(B, H * W, 3, nh, d).permute(2, 0, 3, 1, 4)  # (3, B, nh, HW, d)
            out = attention(qkv[0], qkv[1], qkv[2])  # (B, nh, HW, d)
        else:
            q = self.q(h).view(B, H * W, nh, d).transpose(1, 2)  # (B, nh, HW, d)
            null = self.null_token.expand(B, 1, -1).to(h.dtype)
            if context is None:
                ctx, mask = null, None  # (B, 1, D_ctx)
            else:
                ctx = torch.cat([null, context.to(h.dtype)], dim=1)  # (B, 1 + L, D_ctx)
                mask = None
                if context_mask is not None:
                    ones = context_mask.new_ones(B, 1)
                    mask = torch.cat([ones, context_mask.bool()], dim=1)[:, None, None, :]
            L = ctx.shape[1]
            kv = self.kv(self.context_norm(ctx)).view(B, L, 2, nh, d).permute(2, 0, 3, 1, 4)
            out = attention(q, kv[0], kv[1], mask)  # (B,nh,HW,d)
        out = self.out(out.transpose(1, 2).reshape(B, H * W, C))  # (B, HW, C)
        # Back to (B, C, H, W) in channels-last memory: a view, no copy.
        return x + out.view(B, H, W, C).permute(0, 3, 1, 2).to(x.dtype)


class Downsample(nn.Module):
    """Learned 2x down-sampling: a stride-2 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """2x up-sampling: nearest neighbour, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)
