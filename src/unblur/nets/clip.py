"""A contrastive text-image encoder at laptop scale (CLIP, Radford et al. 2021).

``ClipModel`` maps images (B, C, H, W) in [-1, 1] and caption features into one normalised
``embed_dim``-wide space:

* the image tower is a small CNN: per level a residual block and a stride-2 convolution, then
  the last feature map average-pooled to 4x4 (so where a shape sits survives) and projected;
* the text tower is the masked mean of frozen token features (MiniLM's, by default, computed
  once per caption) or of the learned encoder's (``text_ids``), then a two-layer projection;
* ``logit_scale`` is log(1 / temperature), learned, and clamped to [0, log(max_logit_scale)]
  wherever it is used (CLIP clips the scale at 100).

The loss is ``objectives.info_nce`` over the batch's similarity matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POOL = 4  # the image tower's last feature map is pooled to POOL x POOL before the projection


@dataclass(frozen=True)
class ClipNetConfig:
    channels: int = 3  # image channels
    embed_dim: int = 64  # the shared embedding's width
    widths: tuple[int, ...] = (32, 64, 128)  # CNN width per level
    text_dim: int = 384  # width of the caption token features (MiniLM: 384)
    text_hidden: int = 256  # hidden width of the caption projection (text_head="mlp")
    text_head: str = "mlp"  # mlp: LayerNorm, Linear, GELU, Linear | linear: LayerNorm, Linear
    temperature: float = 0.07  # initial temperature
    max_logit_scale: float = 100.0  # the logit scale's upper bound
    learned_text: bool = False  # token ids through a LearnedTextEncoder (text_dim wide) instead of features
    max_tokens: int = 32
    learned_layers: int = 2

    def __post_init__(self) -> None:
        if not self.widths:
            raise ValueError("ClipNetConfig.widths must name at least one level")
        if self.text_head not in ("mlp", "linear"):
            raise ValueError(f"text_head must be mlp or linear, got {self.text_head!r}")
        if self.max_logit_scale < 1:
            raise ValueError(f"max_logit_scale must be >= 1, got {self.max_logit_scale}")


def _groups(width: int) -> int:
    return math.gcd(width, 8)


class _ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(width), width), nn.Conv2d(width, width, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(width), width), nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class ClipImageEncoder(nn.Module):
    """Images (B, C, H, W) -> unnormalised embeddings (B, embed_dim)."""

    def __init__(self, cfg: ClipNetConfig) -> None:
        super().__init__()
        w0 = cfg.widths[0]
        self.stem = nn.Conv2d(cfg.channels, w0, 3, padding=1)
        layers: list[nn.Module] = []
        width = w0
        for w in cfg.widths:
            layers += [nn.Conv2d(width, w, 3, stride=2, padding=1), _ResBlock(w)]
            width = w
        self.body = nn.Sequential(*layers)
        self.norm = nn.GroupNorm(_groups(width), width)
        self.proj = nn.Linear(width * POOL * POOL, cfg.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(self.stem(x))  # (B, W, H / 2^levels, W / 2^levels)
        h = F.adaptive_avg_pool2d(F.silu(self.norm(h)), POOL)  # (B, W, 4, 4)
        return self.proj(h.flatten(1))  # (B, E)


class ClipTextHead(nn.Module):
    """Token features (B, L, D) and mask (B, L) -> unnormalised embeddings (B, embed_dim)."""

    def __init__(self, cfg: ClipNetConfig) -> None:
        super().__init__()
        if cfg.text_head == "linear":  # a linear map of the pooled features: the embedding of a caption is the
            # mean of its words' projections (before the norm), so new combinations of known words land where
            # their parts point
            self.net = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, cfg.embed_dim))
        else:
            self.net = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, cfg.text_hidden),
                                     nn.GELU(), nn.Linear(cfg.text_hidden, cfg.embed_dim))

    def forward(self, feats: Tensor, mask: Tensor) -> Tensor:
        return self.net(pool_tokens(feats, mask))


def pool_tokens(feats: Tensor, mask: Tensor) -> Tensor:
    """The masked mean of token features (B, L, D) over the real tokens of ``mask`` (B, L): (B, D)."""
    m = mask.to(feats.dtype)[:, :, None]
    return (feats * m).sum(1) / m.sum(1).clamp_min(1.0)


class ClipModel(nn.Module):
    """The two towers and the learned logit scale.

    ``embed_images(x)`` and ``embed_texts(feats_or_ids, mask)`` return unit vectors (B, E);
    ``forward(x, text, mask)`` returns (image embeddings, text embeddings, logit scale).
    """

    def __init__(self, cfg: ClipNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image = ClipImageEncoder(cfg)
        self.text = ClipTextHead(cfg)
        self.text_encoder: nn.Module | None = None
        if cfg.learned_text:
            from ..text.learned import LearnedTextEncoder

            self.text_encoder = LearnedTextEncoder(cfg.text_dim, layers=cfg.learned_layers, max_tokens=cfg.max_tokens)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)))

    @property
    def max_log_scale(self) -> float:
        return math.log(self.cfg.max_logit_scale)

    def scale(self) -> Tensor:
        """exp(logit_scale) clamped to [1, max_logit_scale]."""
        return self.logit_scale.clamp(0.0, self.max_log_scale).exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep the parameter itself within its bounds (called after every optimizer step)."""
        self.logit_scale.clamp_(0.0, self.max_log_scale)

    def embed_images(self, x: Tensor) -> Tensor:
        return F.normalize(self.image(x).float(), dim=-1)

    def embed_texts(self, text: Tensor, mask: Tensor) -> Tensor:
        """``text``: token features (B, L, D), or token ids (B, L) for the learned encoder."""
        if self.text_encoder is not None:
            text = self.text_encoder(text, mask)
        return F.normalize(self.text(text.float(), mask).float(), dim=-1)

    def forward(self, x: Tensor, text: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.embed_images(x), self.embed_texts(text, mask), self.scale()


__all__ = ["ClipImageEncoder", "ClipModel", "ClipNetConfig", "ClipTextHead", "pool_tokens"]
