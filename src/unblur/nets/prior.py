"""The diffusion prior's transformer (Ramesh et al. 2022, sec. 2.2): a small transformer over the
tokens [text embedding, noise level, noised image embedding, query], whose query token's output
is projected to the prediction. Same ``Net`` contract as the MLP:
``net(x_in (B, D), c_noise (B,), cond={"embedding": (B, E)}) -> (B, D)``; a zero embedding is
the null condition (condition dropout, the unconditional half of guidance).

The paper's prior also reads the caption's token encodings (it uses a causal decoder over
them); this one reads the caption through its encoder's text embedding only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..types import Cond
from ..utils import zero_init
from .layers import NoiseEmbedding

TOKENS = 4  # text embedding, noise level, noised image embedding, query


@dataclass(frozen=True)
class PriorTransformerConfig:
    dim: int = 64  # the image embeddings' width D (input and output)
    cond_dim: int = 64  # the text embeddings' width E
    width: int = 256  # the transformer's model width
    layers: int = 4  # transformer layers (pre-norm)
    heads: int = 4  # attention heads
    embed_dim: int = 64  # sinusoidal features of c_noise
    noise_embed_scale: float = 1.0  # c_noise multiplier before the sinusoidal features
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("dim", "cond_dim", "width", "layers", "heads", "embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"PriorTransformerConfig.{name} must be positive, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"the width {self.width} must be a multiple of the heads {self.heads}")


class PriorTransformerNet(nn.Module):
    def __init__(self, cfg: PriorTransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        W = cfg.width
        self.noise_embed = NoiseEmbedding(cfg.embed_dim, scale=cfg.noise_embed_scale)
        self.noise_token = nn.Sequential(nn.Linear(cfg.embed_dim, W), nn.SiLU(), nn.Linear(W, W))
        self.text_token = nn.Linear(cfg.cond_dim, W)
        self.x_token = nn.Linear(cfg.dim, W)
        self.query = nn.Parameter(torch.zeros(W))
        self.pos = nn.Parameter(torch.randn(TOKENS, W) * 0.02)
        layer = nn.TransformerEncoderLayer(W, cfg.heads, dim_feedforward=4 * W, dropout=cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(W)
        self.output = zero_init(nn.Linear(W, cfg.dim))

    @classmethod
    def from_config(cls, cfg: PriorTransformerConfig) -> PriorTransformerNet:
        return cls(cfg)

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: Cond = None) -> Tensor:
        if x_in.ndim != 2 or x_in.shape[1] != self.cfg.dim:
            raise ValueError(f"PriorTransformerNet expects x_in of shape (B, {self.cfg.dim}), got "
                             f"{tuple(x_in.shape)}")
        B = x_in.shape[0]
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(B)
        e = (cond or {}).get("embedding")
        if e is None:
            e = x_in.new_zeros(B, self.cfg.cond_dim)
        tokens = torch.stack([self.text_token(e.to(x_in.dtype)),
                              self.noise_token(self.noise_embed(c_noise).to(x_in.dtype)),
                              self.x_token(x_in), self.query.to(x_in.dtype).expand(B, -1)], dim=1)  # (B, 4, W)
        h = self.blocks(tokens + self.pos.to(x_in.dtype))
        return self.output(self.out_norm(h[:, -1]))  # (B, D): the query token's output


__all__ = ["PriorTransformerConfig", "PriorTransformerNet"]
