"""The ADM U-Net (Dhariwal & Nichol 2021), with class, text and image conditioning.

``UNet(cfg)(x_in, c_noise, cond) -> out`` follows the ``Net`` contract of ``unblur.types``:
``x_in`` (B, C, H, W), ``c_noise`` (B,), ``cond`` None or a mapping with optional keys

* ``"class"`` (B,) long: index ``num_classes`` is the learned null class (classifier-free
  guidance); a missing key means the null class for every sample.
* ``"text"`` (B, L, context_dim) float and ``"text_mask"`` (B, L) bool, True = real token: the
  masked mean of the tokens is projected and added to the noise embedding, and the
  cross-attention layers attend to the tokens plus a learned null token that is always
  present. A missing ``"text"`` leaves only the null token (and a zero pooled feature), so the
  unconditional model is the same network with no text given.
* ``"image"`` (B, image_cond_channels, H, W) float, concatenated to the input channels; a
  missing key means zeros.
* ``"embedding"`` (B, embed_dim) float, e.g. a CLIP image embedding (the unCLIP decoder, Ramesh
  et al. 2022, sec. 2.1): projected and added to the noise embedding, and projected to
  ``embed_tokens`` extra context tokens for the cross-attention. Zeros (or a missing key) are
  the null embedding.

``cfg.channels_last`` makes the network compute in channels-last (NHWC) layout, which GPUs'
tensor cores prefer. On a 2-core AVX2 CPU it measured no faster than NCHW for whole training
steps (oneDNN's channels-last convolutions win at high resolution, but its channels-last
GroupNorm backward is several times slower), so the default is NCHW. Either way the output is
returned in the input's memory format, and a channels-last input works with either setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..types import Cond
from ..utils import zero_init
from .layers import Attention, Downsample, NoiseEmbedding, ResBlock, Upsample
from .presets import unet_preset


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 3  # channels of the noisy input x_in
    out_channels: int = 3  # channels of the output (the prediction)
    base_channels: int = 64  # width of the first level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # width multiplier per level; len = number of levels
    num_res_blocks: int = 2  # residual blocks per level on the way down (one more on the way up)
    attn_resolutions: tuple[int, ...] = (2, 4)  # downsampling factors with attention (1 = full size)
    cross_attn_resolutions: tuple[int, ...] | None = None  # factors with text cross-attention; None: attn's
    mid_attention: bool = True  # self-attention (and cross-attention) in the middle block
    head_channels: int = 32  # channels per attention head (heads = width // head_channels)
    dropout: float = 0.0  # dropout probability inside the residual blocks
    num_classes: int = 0  # number of classes; 0 = not class-conditional (index num_classes = null)
    context_dim: int | None = None  # text token feature size; None = no text conditioning
    image_cond_channels: int = 0  # channels of cond["image"] concatenated to x_in; 0 = none
    embed_dim: int = 0  # width of cond["embedding"] (B, D), e.g. a CLIP image embedding: added to the noise
    #   embedding and projected to `embed_tokens` extra context tokens (unCLIP's decoder); 0 = none
    embed_tokens: int = 0  # context tokens made from cond["embedding"] (needs context_dim)
    norm_groups: int = 32  # GroupNorm groups (must divide every level's width)
    emb_mult: int = 4  # noise-embedding width = emb_mult * base_channels
    noise_embed_scale: float = 1.0  # c_noise multiplier before the sinusoidal features
    noise_embed_max_period: float = 10000.0  # slowest sinusoid's period in units of c_noise
    channels_last: bool = False  # compute in channels-last (NHWC) layout (GPU tensor cores)

    def __post_init__(self) -> None:
        if not self.channel_mult:
            raise ValueError("channel_mult must name at least one level, e.g. (1, 2, 2)")
        widths = sorted({self.base_channels * m for m in self.channel_mult})
        for w in widths:
            if w % self.norm_groups:
                raise ValueError(
                    f"norm_groups={self.norm_groups} does not divide the level width {w} "
                    f"(base_channels={self.base_channels}, channel_mult={self.channel_mult})"
                )
        attn_widths = [
            self.base_channels * m
            for i, m in enumerate(self.channel_mult)
            if 2**i in self.attn_resolutions or (self.context_dim and 2**i in self.cross_resolutions)
        ]
        if self.mid_attention:
            attn_widths.append(self.base_channels * self.channel_mult[-1])
        for w in attn_widths:
            if w % self.head_channels:
                raise ValueError(
                    f"head_channels={self.head_channels} does not divide the attention width {w}"
                )
        bad = [f for f in (*self.attn_resolutions, *self.cross_resolutions) if f < 1 or f & (f - 1)]
        if bad:
            raise ValueError(
                f"attn_resolutions holds downsampling factors (1, 2, 4, ...), got {bad}"
            )

    @property
    def levels(self) -> int:
        return len(self.channel_mult)

    @property
    def cross_resolutions(self) -> tuple[int, ...]:
        """Downsampling factors with cross-attention to the text (the middle block always has it)."""
        if self.cross_attn_resolutions is None:
            return tuple(self.attn_resolutions)
        return tuple(self.cross_attn_resolutions)


class UNet(nn.Module):
    """ADM U-Net: ``net(x_in, c_noise, cond=None) -> out`` (see the module docstring)."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch, groups = cfg.base_channels, cfg.norm_groups
        emb_dim = cfg.emb_mult * ch
        self.noise_embed = NoiseEmbedding(
            ch, scale=cfg.noise_embed_scale, max_period=cfg.noise_embed_max_period
        )
        self.emb_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_embed = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None
        self.text_pool = nn.Linear(cfg.context_dim, emb_dim) if cfg.context_dim else None
        self.embed_proj = nn.Linear(cfg.embed_dim, emb_dim) if cfg.embed_dim else None
        self.embed_tok = None
        if cfg.embed_dim and cfg.embed_tokens:
            if not cfg.context_dim:
                raise ValueError("UNetConfig.embed_tokens needs context_dim (the width of the context tokens)")
            self.embed_tok = nn.Linear(cfg.embed_dim, cfg.embed_tokens * cfg.context_dim)

        def attn(width: int, self_attn: bool = True, cross: bool = True) -> nn.ModuleList | None:
            layers = [Attention(width, head_channels=cfg.head_channels, groups=groups)] if self_attn else []
            if cfg.context_dim and cross:
                layers.append(
                    Attention(
                        width,
                        head_channels=cfg.head_channels,
                        groups=groups,
                        context_dim=cfg.context_dim,
                    )
                )
            return nn.ModuleList(layers) if layers else None

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, dropout=cfg.dropout, groups=groups)

        self.input_conv = nn.Conv2d(cfg.in_channels + cfg.image_cond_channels, ch, 3, padding=1)
        # Down path: each entry is (res block, attention or None) or a Downsample.
        self.down = nn.ModuleList()
        skip_widths = [ch]
        width = ch
        for level, mult in enumerate(cfg.channel_mult):
            use_attn, use_cross = 2**level in cfg.attn_resolutions, 2**level in cfg.cross_resolutions
            for _ in range(cfg.num_res_blocks):
                out = ch * mult
                self.down.append(_Stage(res(width, out), attn(out, use_attn, use_cross)))
                width = out
                skip_widths.append(width)
            if level < cfg.levels - 1:
                self.down.append(Downsample(width))
                skip_widths.append(width)
        self.mid_res1 = res(width, width)
        self.mid_attn = attn(width, cfg.mid_attention, True)
        self.mid_res2 = res(width, width)
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            use_attn, use_cross = 2**level in cfg.attn_resolutions, 2**level in cfg.cross_resolutions
            for _ in range(cfg.num_res_blocks + 1):
                out = ch * mult
                block = res(width + skip_widths.pop(), out)
                self.up.append(_Stage(block, attn(out, use_attn, use_cross)))
                width = out
            if level > 0:
                self.up.append(Upsample(width))
        self.out_norm = nn.GroupNorm(groups, width)
        self.out_conv = zero_init(nn.Conv2d(width, cfg.out_channels, 3, padding=1))
        if cfg.channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, cfg: UNetConfig) -> UNet:
        return cls(cfg)

    def check_shape(self, x: Tensor) -> None:
        """Raise a ValueError unless ``x`` is (B, in_channels, H, W) with H, W divisible."""
        cfg = self.cfg
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"UNet expects x_in of shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}"
            )
        div = 2 ** (cfg.levels - 1)
        H, W = x.shape[-2:]
        if H % div or W % div:
            raise ValueError(
                f"UNet with {cfg.levels} levels needs H and W divisible by {div}, got an input of "
                f"shape {tuple(x.shape)} (H={H}, W={W}): pad or resize to a multiple of {div}"
            )

    def embed(self, c_noise: Tensor, cond: Cond, batch: int) -> Tensor:
        """The conditioning vector of every residual block: (B, emb_dim), after SiLU."""
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(batch)
        emb = self.emb_mlp(self.noise_embed(c_noise))  # (B, E)
        cond = cond or {}
        if self.class_embed is not None:
            labels = cond.get("class")
            if labels is None:
                labels = torch.full(
                    (batch,), self.cfg.num_classes, dtype=torch.long, device=emb.device
                )
            emb = emb + self.class_embed(labels)
        if self.text_pool is not None and cond.get("text") is not None:
            text = cond["text"]  # (B, L, D_text)
            mask = cond.get("text_mask")
            if mask is None:
                pooled, present = text.mean(dim=1), 1.0
            else:
                m = mask.to(text.dtype)[:, :, None]  # (B, L, 1)
                pooled = (text * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)  # (B, D_text)
                # Every token masked out is the null caption: the same as no text at all.
                present = mask.any(dim=1).to(emb.dtype)[:, None]  # (B, 1)
            emb = emb + self.text_pool(pooled.to(emb.dtype)) * present
        if self.embed_proj is not None:
            e = cond.get("embedding")
            if e is None:
                e = emb.new_zeros(batch, self.cfg.embed_dim)
            emb = emb + self.embed_proj(e.to(emb.dtype))
        return F.silu(emb)

    def _embedding_tokens(self, e: Tensor | None, text: Tensor | None, mask: Tensor | None, B: int,
                          x_in: Tensor) -> tuple[Tensor, Tensor]:
        """The context with ``embed_tokens`` tokens projected from the embedding appended (always
        attended: the null embedding, zeros, gives the tokens of the projection's bias)."""
        cfg = self.cfg
        if e is None:
            e = x_in.new_zeros(B, cfg.embed_dim)
        toks = self.embed_tok(e.to(x_in.dtype)).view(B, cfg.embed_tokens, cfg.context_dim)  # (B, k, D_ctx)
        ones = torch.ones(B, cfg.embed_tokens, dtype=torch.bool, device=x_in.device)
        if text is None:
            return toks, ones
        if mask is None:
            mask = torch.ones(text.shape[:2], dtype=torch.bool, device=x_in.device)
        return torch.cat([text.to(toks.dtype), toks], dim=1), torch.cat([mask.bool(), ones], dim=1)

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: Cond = None) -> Tensor:
        self.check_shape(x_in)
        cfg = self.cfg
        B = x_in.shape[0]
        emb = self.embed(c_noise, cond, B)  # (B, E)
        cond = cond or {}
        text, text_mask = cond.get("text"), cond.get("text_mask")
        if self.embed_tok is not None:
            text, text_mask = self._embedding_tokens(cond.get("embedding"), text, text_mask, B, x_in)
        h = x_in
        if cfg.image_cond_channels:
            image = cond.get("image")
            if image is None:
                image = torch.zeros(
                    (B, cfg.image_cond_channels, *x_in.shape[-2:]),
                    dtype=x_in.dtype,
                    device=x_in.device,
                )
            h = torch.cat([h, image.to(h.dtype)], dim=1)  # (B, C_in + C_img, H, W)
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        h = self.input_conv(h.contiguous(memory_format=fmt))  # (B, ch, H, W)
        skips = [h]
        for stage in self.down:
            h = stage(h, emb, text, text_mask) if isinstance(stage, _Stage) else stage(h)
            skips.append(h)
        h = self.mid_res1(h, emb)  # (B, C_mid, H / 2**(levels-1), W / 2**(levels-1))
        if self.mid_attn is not None:
            h = _attend(self.mid_attn, h, text, text_mask)
        h = self.mid_res2(h, emb)
        for stage in self.up:
            if isinstance(stage, _Stage):
                h = torch.cat([h, skips.pop()], dim=1)  # (B, C + C_skip, h, w)
                h = stage(h, emb, text, text_mask)
            else:
                h = stage(h)  # (B, C, 2h, 2w)
        h = self.out_conv(F.silu(self.out_norm(h)))  # (B, out_channels, H, W)
        if x_in.is_contiguous(memory_format=torch.channels_last) and not x_in.is_contiguous():
            return h.contiguous(memory_format=torch.channels_last)
        return h.contiguous()


class _Stage(nn.Module):
    """A residual block followed by optional self- and cross-attention."""

    def __init__(self, block: ResBlock, attn: nn.ModuleList | None) -> None:
        super().__init__()
        self.block = block
        self.attn = attn

    def forward(
        self, h: Tensor, emb: Tensor, text: Tensor | None, text_mask: Tensor | None
    ) -> Tensor:
        h = self.block(h, emb)
        if self.attn is not None:
            h = _attend(self.attn, h, text, text_mask)
        return h


def _attend(layers: nn.ModuleList, h: Tensor, text: Tensor | None, mask: Tensor | None) -> Tensor:
    for layer in layers:
        h = layer(h, text, mask) if layer.cross else layer(h)
    return h


def default_unet_config(
    size: tuple[int, int] | int,
    channels: int = 3,
    *,
    device: str | None = None,
    num_classes: int = 0,
    context_dim: int | None = None,
    image_cond_channels: int = 0,
    out_channels: int | None = None,
    dropout: float = 0.0,
) -> UNetConfig:
    """A sensible U-Net for images of ``size`` = (H, W) with ``channels`` channels on ``device``
    (a device type; None: the reference sizes, which a saved config with sizes None builds).

    The sizes come from ``nets.presets``: levels grow with the image (8 and 16 px -> 2 levels,
    32 -> 3, 64 -> 4, larger -> 5, capped so that H and W stay divisible); a CPU gets width 32
    and one block per level above 16 px, the reference 64 and two, with attention at the
    coarsest levels. Self-attention sits in the middle block above 8 px.
    """
    H, W = (size, size) if isinstance(size, int) else tuple(size)
    side = min(H, W)
    _, chosen = unet_preset((H, W), device)
    base = chosen.base_channels
    return UNetConfig(
        in_channels=channels,
        out_channels=channels if out_channels is None else out_channels,
        base_channels=base,
        channel_mult=chosen.channel_mult,
        num_res_blocks=chosen.num_res_blocks,
        attn_resolutions=chosen.attn_resolutions,
        mid_attention=side > 8 or bool(context_dim),
        head_channels=32,
        dropout=dropout,
        num_classes=num_classes,
        context_dim=context_dim,
        image_cond_channels=image_cond_channels,
        norm_groups=min(32, base),
    )


__all__ = ["UNet", "UNetConfig", "default_unet_config"]
