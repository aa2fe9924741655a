"""A residual MLP denoiser for vector data (B, D), with the same ``Net`` contract as the U-Net."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..types import Cond
from ..utils import zero_init
from .layers import NoiseEmbedding


@dataclass(frozen=True)
class MLPConfig:
    dim: int = 2  # data dimension D of x_in (B, D); also the output size
    hidden: int = 256  # width of the residual blocks
    depth: int = 4  # number of residual blocks
    num_classes: int = 0  # number of classes; 0 = not class-conditional (index num_classes = null)
    embed_dim: int = 64  # sinusoidal features of c_noise
    noise_embed_scale: float = 1.0  # c_noise multiplier before the sinusoidal features
    noise_embed_max_period: float = 10000.0  # slowest sinusoid's period in units of c_noise
    layer_norm: bool = True  # LayerNorm at the start of every residual block
    dropout: float = 0.0  # dropout probability inside the residual blocks
    out_dim: int | None = None  # output size; None = dim
    cond_dim: int = 0  # width of cond["embedding"] (B, cond_dim): concatenated to the input and added to the
    #   noise embedding (a diffusion prior's text embedding); 0 = none. Zeros are the null condition.

    def __post_init__(self) -> None:
        for name in ("dim", "hidden", "depth", "embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"MLPConfig.{name} must be positive, got {getattr(self, name)}")


class _MLPBlock(nn.Module):
    """x + W2 dropout(SiLU(W1 (LN(x) * (1 + scale) + shift))), W2 zero-initialised."""

    def __init__(self, hidden: int, *, layer_norm: bool, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden) if layer_norm else nn.Identity()
        self.emb = nn.Linear(hidden, 2 * hidden)
        self.fc1 = nn.Linear(hidden, 2 * hidden)
        self.fc2 = zero_init(nn.Linear(2 * hidden, hidden))
        self.dropout = dropout

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.emb(emb).chunk(2, dim=1)  # (B, hidden) each
        h = torch.addcmul(shift, self.norm(x), 1 + scale)
        h = F.dropout(F.silu(self.fc1(h)), p=self.dropout, training=self.training)  # (B, 2*hidden)
        return x + self.fc2(h)


class MLPDenoiserNet(nn.Module):
    """``net(x_in (B, D), c_noise (B,), cond=None) -> (B, out_dim)``; ``cond`` may hold "class" and "embedding"."""

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden
        self.noise_embed = NoiseEmbedding(
            cfg.embed_dim, scale=cfg.noise_embed_scale, max_period=cfg.noise_embed_max_period
        )
        self.emb_mlp = nn.Sequential(nn.Linear(cfg.embed_dim, H), nn.SiLU(), nn.Linear(H, H))
        self.class_embed = nn.Embedding(cfg.num_classes + 1, H) if cfg.num_classes else None
        self.cond_embed = nn.Linear(cfg.cond_dim, H) if cfg.cond_dim else None
        self.input = nn.Linear(cfg.dim + cfg.cond_dim, H)
        self.blocks = nn.ModuleList(
            _MLPBlock(H, layer_norm=cfg.layer_norm, dropout=cfg.dropout) for _ in range(cfg.depth)
        )
        self.out_norm = nn.LayerNorm(H) if cfg.layer_norm else nn.Identity()
        self.output = zero_init(nn.Linear(H, cfg.out_dim or cfg.dim))

    @classmethod
    def from_config(cls, cfg: MLPConfig) -> MLPDenoiserNet:
        return cls(cfg)

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: Cond = None) -> Tensor:
        if x_in.ndim != 2 or x_in.shape[1] != self.cfg.dim:
            raise ValueError(
                f"MLPDenoiserNet expects x_in of shape (B, {self.cfg.dim}), got {tuple(x_in.shape)}"
            )
        B = x_in.shape[0]
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(B)
        emb = self.emb_mlp(self.noise_embed(c_noise))  # (B, H)
        if self.class_embed is not None:
            labels = (cond or {}).get("class")
            if labels is None:
                labels = torch.full((B,), self.cfg.num_classes, dtype=torch.long, device=x_in.device)
            emb = emb + self.class_embed(labels)
        if self.cond_embed is not None:
            e = (cond or {}).get("embedding")
            if e is None:
                e = x_in.new_zeros(B, self.cfg.cond_dim)
            e = e.to(x_in.dtype)
            emb = emb + self.cond_embed(e)
            x_in = torch.cat([x_in, e], dim=1)  # (B, D + cond_dim)
        emb = F.silu(emb)
        h = self.input(x_in)  # (B, H)
        for block in self.blocks:
            h = block(h, emb)
        return self.output(F.silu(self.out_norm(h)))  # (B, out_dim)


__all__ = ["MLPConfig", "MLPDenoiserNet"]
