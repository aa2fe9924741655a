"""The text kind: captions and prompts, turned on by ``cond.text_encoder``.

Its keys are ``"text"`` (B, L, D) features from a frozen encoder (a data set's features are
cached on disk) or ``"text_ids"`` (B, L) long for the learned encoder, with ``"text_mask"``
(B, L) bool (True = a real token). A row with every token masked out is the null caption.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import Config
from .base import Items, Kind, Requests, register


def text_encoder_on(cfg: Config) -> bool:
    return cfg.cond.text_encoder not in ("none", "")


def text_dim_of(cfg: Config) -> int | None:
    """The token-feature width of the run's text encoder; None without text conditioning."""
    if not text_encoder_on(cfg):
        return None
    from ..text import text_feature_dim

    return text_feature_dim(cfg.cond.text_encoder, learned_dim=cfg.cond.learned_dim)


class TokenItems(Items):
    """Hashed token ids (N, L) of the captions, for the learned encoder; 0 is padding."""

    def __init__(self, ids: Tensor, dim: int) -> None:
        self.ids, self.info = ids, {"text_dim": dim}

    def __len__(self) -> int:
        return len(self.ids)

    def items(self, idx: Tensor) -> dict[str, Tensor]:
        ids = self.ids[idx]  # (B, L)
        return {"text_ids": ids, "text_mask": ids != 0}


class FeatureItems(Items):
    """Frozen-encoder features of the distinct captions, plus a last all-null row."""

    def __init__(self, feats: Tensor, mask: Tensor, index: Tensor, dim: int) -> None:
        # feats (U + 1, L, D), mask (U + 1, L), index (N,) into them (U: no caption).
        self.feats, self.mask, self.index, self.info = feats, mask, index, {"text_dim": dim}

    def __len__(self) -> int:
        return len(self.index)

    def items(self, idx: Tensor) -> dict[str, Tensor]:
        rows = self.index[idx]  # (B,)
        return {"text": self.feats[rows].float(), "text_mask": self.mask[rows]}


class TextRequests(Requests):
    """Prompts (each a request value) and one negative prompt (the unconditional half)."""

    def __init__(self, key: str, prompts: list[str], negative: str | None,
                 encoded: dict[str, tuple[Tensor, Tensor]]) -> None:
        self.key, self.choices, self.negative_prompt, self.encoded = key, prompts, negative, encoded
        self.conditional = self.guides = bool(prompts)

    def cond(self, reqs: list[dict], device: torch.device) -> dict[str, Tensor]:
        if not self.encoded:
            return {}
        some_f, some_m = next(iter(self.encoded.values()))
        null = (torch.zeros_like(some_f), torch.zeros_like(some_m))
        rows = [self.encoded[r["prompt"]] if r.get("prompt") is not None else null for r in reqs]
        return {self.key: torch.stack([f for f, _ in rows]).to(device),  # (B, L, D) or (B, L)
                "text_mask": torch.stack([m for _, m in rows]).to(device).bool()}  # (B, L)

    def negative(self, batch: int, device: torch.device) -> dict[str, Tensor]:
        if self.negative_prompt is None:
            return {}
        f, m = self.encoded[self.negative_prompt]
        return {self.key: f[None].expand(batch, *f.shape).to(device),
                "text_mask": m[None].expand(batch, *m.shape).to(device).bool()}

    def record(self, req: dict) -> dict[str, Any]:
        out = {} if req.get("prompt") is None else {"prompt": req["prompt"]}
        if self.negative_prompt is not None:
            out["negative_prompt"] = self.negative_prompt
        return out


@register
class TextKind(Kind):
    name = "text"
    keys = ("text", "text_ids", "text_mask")
    field = "prompt"
    options = ("prompts", "negative")
    flag = "--prompt"
    off = "has no text conditioning (cond.text_encoder=none)"

    def enabled(self, cfg: Config) -> bool:
        return text_encoder_on(cfg)

    def unet_changes(self, cfg: Config, data_info, ucfg) -> dict[str, Any]:
        changes: dict[str, Any] = {"context_dim": data_info.get("text_dim") or text_dim_of(cfg),
                                   "mid_attention": True}
        if cfg.cond.cross_attn_resolutions is not None:
            changes["cross_attn_resolutions"] = tuple(cfg.cond.cross_attn_resolutions)
        return changes

    def wrap_net(self, cfg: Config, net: nn.Module) -> nn.Module:
        c = cfg.cond
        if c.text_encoder != "learned":
            return net
        from ..text import LearnedTextEncoder, TextConditionedNet

        return TextConditionedNet(net, LearnedTextEncoder(c.learned_dim, layers=c.learned_layers,
                                                          max_tokens=c.max_tokens))

    def null(self, key: str, value: Tensor, *, num_classes: int) -> Tensor:
        return torch.zeros_like(value, dtype=torch.bool) if key == "text_mask" else torch.zeros_like(value)

    def items(self, cfg: Config, data, out: str | Path, device: torch.device, *, progress: bool) -> Items:
        c = cfg.cond
        if not data.has_captions:
            raise ValueError(
                f"cond.text_encoder={c.text_encoder!r} but {data.source!r} has no captions: give same-stem .txt "
                "files or a metadata.jsonl (file_name, text), or use builtin:shapes"
            )
        captions = list(data.captions)
        if c.text_encoder == "learned":
            from ..text import HashTokenizer

            have = [i for i, t in enumerate(captions) if t]
            ids = torch.zeros(len(captions), c.max_tokens, dtype=torch.long)  # (N, L); no caption: all padding
            ids[have] = HashTokenizer(max_tokens=c.max_tokens)([captions[i] for i in have])[0]
            return TokenItems(ids.to(device), c.learned_dim)
        from ..text import cached_caption_features, get_text_encoder

        enc = get_text_encoder(c.text_encoder, max_tokens=c.max_tokens, device=device)
        feats, mask, index, _ = cached_caption_features(enc, captions, out, progress=progress)
        # Row U is the null caption (zero features, no token).
        feats = torch.cat([feats, feats.new_zeros(1, *feats.shape[1:])])  # (U + 1, L, D)
        mask = torch.cat([mask, mask.new_zeros(1, mask.shape[1])])  # (U + 1, L)
        index = torch.where(index < 0, len(feats) - 1, index)  # (N,)
        return FeatureItems(feats.to(device), mask.to(device), index.to(device), enc.dim)

    def requests(self, cfg: Config, info, device: torch.device, asked: dict[str, Any], *,
                 run: str) -> TextRequests:
        from ..text.encoders import check_prompts

        c = cfg.cond
        prompts = check_prompts(asked.get("prompts") or [])
        negative = asked.get("negative")
        negative = check_prompts([negative])[0] if negative is not None else None
        wanted = prompts + ([negative] if negative is not None else [])
        encoded: dict[str, tuple[Tensor, Tensor]] = {}
        if wanted:
            ids, mask = self.encode(cfg, info, wanted, device, run=run)
            encoded = {p: (ids[k], mask[k]) for k, p in enumerate(wanted)}
        return TextRequests("text_ids" if c.text_encoder == "learned" else "text", prompts, negative, encoded)

    def encode(self, cfg: Config, info, prompts: list[str], device: torch.device, *,
               run: str) -> tuple[Tensor, Tensor]:
        """(ids (B, L) or features (B, L, D), mask (B, L)) of ``prompts`` through the run's encoder."""
        c = cfg.cond
        if c.text_encoder == "learned":
            from ..text import HashTokenizer

            return HashTokenizer(max_tokens=c.max_tokens)(prompts)
        from ..text import get_text_encoder

        enc = get_text_encoder(c.text_encoder, max_tokens=c.max_tokens, device=device)
        if info.get("text_dim") not in (None, enc.dim):
            raise ValueError(f"{run} was trained on {info['text_dim']}-wide text features, but "
                             f"{c.text_encoder!r} gives {enc.dim}")
        return enc.encode(prompts)
