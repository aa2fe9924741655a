"""The embedding kind: one vector per sample, turned on by ``cond.clip``.

A decoder (a U-Net with ``cond.clip``) is conditioned on the CLIP image embedding of each
training image; a prior (``model.kind=prior``) on the CLIP text embedding of each caption. Both
read the key ``"embedding"`` (B, D), unit vectors; zeros are the null embedding (condition
dropout, the unconditional half of guidance). The per-item embeddings are computed by the
contrastive encoder before training (``pipelines.unclip``) and handed over as
``Data.embeddings``; at sampling time the caller gives the vectors (``embeddings=`` of
``Run.sample``): the pipeline makes them from prompts, images and interpolations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import Config
from .base import Items, Kind, Requests, register


class EmbeddingItems(Items):
    def __init__(self, table: Tensor, dim: int) -> None:
        self.table, self.info = table, {}
        self.dim = dim

    def __len__(self) -> int:
        return len(self.table)

    def items(self, idx: Tensor) -> dict[str, Tensor]:
        return {"embedding": self.table[idx].float()}


class EmbeddingRequests(Requests):
    """Given vectors (K, D): each is a request value (its index); ``n`` samples each."""

    def __init__(self, vectors: Tensor, labels: list[str] | None) -> None:
        self.vectors, self.labels = vectors, labels
        self.choices = list(range(len(vectors)))
        self.conditional = self.guides = len(vectors) > 0

    def cond(self, reqs: list[dict], device: torch.device) -> dict[str, Tensor]:
        rows = [r.get("embedding") for r in reqs]
        out = torch.zeros(len(reqs), self.vectors.shape[1])
        for i, k in enumerate(rows):
            if k is not None:
                out[i] = self.vectors[k]
        return {"embedding": out.to(device)}

    def record(self, req: dict) -> dict[str, Any]:
        k = req.get("embedding")
        if k is None:
            return {}
        out: dict[str, Any] = {"embedding": int(k)}
        if self.labels is not None:
            out["embedding_of"] = self.labels[k]
        return out


@register
class EmbeddingKind(Kind):
    name = "embedding"
    keys = ("embedding",)
    field = "embedding"
    options = ("embeddings", "embedding_labels")
    flag = "--prior / --variations-of / --interpolate"
    off = "is not conditioned on a contrastive encoder's embeddings (cond.clip)"

    def enabled(self, cfg: Config) -> bool:
        return bool(cfg.cond.clip)

    def unet_changes(self, cfg: Config, data_info, ucfg) -> dict[str, Any]:
        dim = embedding_dim(data_info)
        changes: dict[str, Any] = {"embed_dim": dim}
        if cfg.cond.clip_tokens:
            changes["embed_tokens"] = cfg.cond.clip_tokens
            if not ucfg.context_dim and not data_info.get("text_dim"):
                # No captions: the tokens are embed_dim wide, attended in the middle block (and where
                # cross-attention is asked for).
                changes["context_dim"] = dim
                changes["mid_attention"] = True
                if cfg.cond.cross_attn_resolutions is not None:
                    changes["cross_attn_resolutions"] = tuple(cfg.cond.cross_attn_resolutions)
        return changes

    def items(self, cfg: Config, data, out: str | Path, device: torch.device, *, progress: bool) -> Items:
        table = getattr(data, "embeddings", None)
        if table is None:
            raise ValueError(f"cond.clip={cfg.cond.clip!r} conditions on the encoder's embeddings of {data.source!r}, "
                             "which were not computed: train through `unblur train` (or unblur.training.train)")
        return EmbeddingItems(table.to(device), int(table.shape[1]))

    def requests(self, cfg: Config, info, device: torch.device, asked: dict[str, Any], *,
                 run: str) -> EmbeddingRequests | None:
        vectors = asked.get("embeddings")
        if vectors is None:
            return None
        vectors = torch.as_tensor(vectors, dtype=torch.float32)
        dim = embedding_dim(info)
        finite = bool(torch.isfinite(vectors).all())
        if vectors.ndim != 2 or vectors.shape[1] != dim or not finite:
            raise ValueError(f"{run} is conditioned on {dim}-wide embeddings, but the embeddings given have shape "
                             f"{tuple(vectors.shape)}{'' if finite else ' and non-finite values'}")
        labels = asked.get("embedding_labels")
        if labels is not None and len(labels) != len(vectors):
            raise ValueError(f"{len(labels)} labels for {len(vectors)} embeddings")
        return EmbeddingRequests(vectors.cpu(), list(labels) if labels is not None else None)


def embedding_dim(info) -> int:
    """The embedding width a run was built for (its ``DataInfo.clip`` record)."""
    rec = info.get("clip") if info is not None else None
    if not rec or "dim" not in rec:
        raise ValueError("the run's data description has no contrastive encoder record (DataInfo.clip)")
    return int(rec["dim"])
