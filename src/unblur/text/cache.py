"""Caption features computed once per data set and kept on disk beside the run.

The cache file's name is fixed and its metadata holds a key: the SHA-256 of the encoder's
identity (model files, token limit) and of every caption. A different encoder or a changed
caption gives a different key, and the features are computed again and the file replaced.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from ..utils import atomic_write_bytes
from .encoders import ENCODE_BATCH, TextEncoder

CACHE_FILE = "text_features.safetensors"


def cache_key(encoder: TextEncoder, captions: list[str]) -> str:
    h = hashlib.sha256(encoder.identity.encode())
    for c in captions:
        h.update(b"\0" + c.encode())
    return h.hexdigest()


def cached_caption_features(
    encoder: TextEncoder, captions: list[str | None], folder: str | Path, *, progress: bool = True
) -> tuple[Tensor, Tensor, Tensor, bool]:
    """Features of the distinct captions, loaded from ``folder`` or computed and saved there.

    Returns ``(features (U, L, D) float16, mask (U, L) bool, index (N,) long, hit)``: item i's
    caption is row ``index[i]``, and -1 marks an item without a caption (the null condition).
    """
    unique = sorted({c for c in captions if c})
    row = {c: k for k, c in enumerate(unique)}
    index = torch.tensor([row[c] if c else -1 for c in captions], dtype=torch.long)
    key = cache_key(encoder, unique)
    path = Path(folder) / CACHE_FILE
    if path.is_file():
        try:
            raw = path.read_bytes()
            tensors = st_load(raw)
            import json

            meta = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")]).get("__metadata__", {})
            if meta.get("key") == key:
                return tensors["features"], tensors["mask"].bool(), index, True
        except (SafetensorError, ValueError, KeyError):
            pass  # unreadable: compute again
    if not unique:
        return torch.zeros(0, 1, encoder.dim, dtype=torch.float16), torch.zeros(0, 1, dtype=torch.bool), index, False
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(unique), unit="caption", desc="encode captions", dynamic_ncols=True)
    feats, masks = [], []
    for start in range(0, len(unique), ENCODE_BATCH):
        f, m = encoder.encode(unique[start : start + ENCODE_BATCH])
        feats.append(f)
        masks.append(m)
        if bar is not None:
            bar.update(len(f))
    if bar is not None:
        bar.close()
    L = max(m.shape[1] for m in masks)
    features = torch.cat([torch.nn.functional.pad(f, (0, 0, 0, L - f.shape[1])) for f in feats]).half()
    mask = torch.cat([torch.nn.functional.pad(m, (0, L - m.shape[1])) for m in masks])
    meta = {"key": key, "encoder": encoder.identity, "captions": str(len(unique))}
    atomic_write_bytes(path, st_save({"features": features.contiguous(), "mask": mask.to(torch.uint8)}, metadata=meta))
    return features, mask, index, False
