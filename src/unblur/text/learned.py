"""A small text encoder trained with the diffusion model, for users without ``transformers``.

Words are hashed into a fixed number of buckets (no vocabulary to store or ship), embedded,
and mixed by a few transformer layers. ``TextConditionedNet`` wraps a network so that the
conditioning mapping carries token ids (``"text_ids"`` (B, L) long, ``"text_mask"`` (B, L))
and the encoder runs inside the network's forward pass, so it is trained, saved and
averaged (EMA) with it.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..types import Cond
from .encoders import check_prompts, warn_truncated

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class HashTokenizer:
    """Lower-cased words and punctuation -> ids in [1, vocab) by CRC32; 0 is padding."""

    def __init__(self, vocab: int = 4096, max_tokens: int = 32) -> None:
        self.vocab, self.max_tokens = int(vocab), int(max_tokens)

    def words(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())

    def __call__(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """(ids (B, max_tokens) long, mask (B, max_tokens) bool); long prompts are truncated with a warning."""
        prompts = check_prompts(prompts)
        words = [self.words(p) for p in prompts]
        warn_truncated(prompts, [len(w) for w in words], self.max_tokens)
        ids = torch.zeros(len(prompts), self.max_tokens, dtype=torch.long)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws[: self.max_tokens]):
                ids[i, j] = 1 + zlib.crc32(w.encode()) % (self.vocab - 1)
        return ids, ids != 0


class LearnedTextEncoder(nn.Module):
    """Token ids (B, L) and mask (B, L) -> features (B, L, dim): embeddings + pre-norm transformer."""

    def __init__(self, dim: int = 128, *, layers: int = 2, vocab: int = 4096, max_tokens: int = 32) -> None:
        super().__init__()
        self.dim, self.max_tokens = dim, max_tokens
        self.tokenizer = HashTokenizer(vocab, max_tokens)
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, max_tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, nhead=max(1, dim // 64), dim_feedforward=4 * dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        h = self.embed(ids) + self.pos[:, : ids.shape[1]]  # (B, L, dim)
        # A row with every token masked would give NaN in attention: let it attend freely
        # (its features are masked out downstream anyway).
        pad = ~mask & mask.any(dim=1, keepdim=True)  # (B, L), True = ignore
        return self.norm(self.blocks(h, src_key_padding_mask=pad))


class TextConditionedNet(nn.Module):
    """``net(x, c_noise, cond)`` where ``cond["text_ids"]`` is encoded by a learned encoder first."""

    def __init__(self, net: nn.Module, encoder: LearnedTextEncoder) -> None:
        super().__init__()
        self.net, self.encoder = net, encoder

    def forward(self, x: Tensor, c_noise: Tensor, cond: Cond = None) -> Tensor:
        if cond is not None and "text_ids" in cond:
            cond = dict(cond)
            ids = cond.pop("text_ids")
            mask = cond.get("text_mask")
            mask = ids != 0 if mask is None else mask.bool()
            cond["text"], cond["text_mask"] = self.encoder(ids, mask), mask
        return self.net(x, c_noise, cond)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("net"), name)


def tokenize_for(net: nn.Module, prompts: list[str]) -> Mapping[str, Tensor]:
    """``{"text_ids", "text_mask"}`` for a TextConditionedNet."""
    ids, mask = net.encoder.tokenizer(prompts)
    return {"text_ids": ids, "text_mask": mask}
