"""Run artefacts: the inference export and the exact resume state, both written atomically.

* ``model.safetensors``: the EMA weights of the network, with the resolved config and the
  data description in its metadata: enough to sample with no flags. No code, no pickle.
* ``train_state.pt``: raw weights, EMA, optimizer, step and RNG states; tensors and plain
  containers only, loaded with ``torch.load(weights_only=True)``.

Each file goes to a temporary name in the same folder and is renamed over the old one, so a
kill at any moment leaves the previous good file intact.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..config import Config
from ..types import DataInfo
from ..utils import atomic_write_bytes

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
CONFIG_FILE = "config.json"
FORMAT = 1


def save_model(path: str | Path, state_dict: dict[str, torch.Tensor], config: Config, data_info: DataInfo, *,
               step: int | None = None, extra: dict[str, str] | None = None) -> None:
    """Write the inference export; ``extra``: more metadata strings (an autoencoder run's network
    config and latent shape, ``pipelines.autoencoder``)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    meta = {"format": str(FORMAT), "config": config.to_json(), "data_info": json.dumps(data_info.to_dict())}
    if step is not None:
        meta["step"] = str(step)
    meta.update(extra or {})
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def load_model(path: str | Path) -> tuple[dict[str, torch.Tensor], Config, DataInfo]:
    """(state_dict, config, data_info) from a model export; a clear error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no model file at {str(path)!r}: train a run first (unblur train --out ...)")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
    except (SafetensorError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not a readable safetensors file ({e}); it may be truncated") from None
    if "config" not in meta:
        raise ValueError(f"{str(path)!r} has no unblur config in its metadata: it was not written by unblur")
    info = DataInfo.from_dict(json.loads(meta.get("data_info", "{}")))
    return tensors, Config.from_dict(json.loads(meta["config"])), info


def model_kind(path: str | Path) -> str | None:
    """The ``model.kind`` of a model export (``autoencoder``, ``unet``, ...), read from the
    safetensors header alone; None when the file is missing or not an unblur export."""
    try:
        with Path(path).open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            meta = json.loads(f.read(n)).get("__metadata__", {})
        return str(json.loads(meta["config"]).get("model", {}).get("kind", "auto"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, MemoryError):
        return None


def model_step(path: str | Path) -> int | None:
    """The optimizer step a model export was written at (None for exports that predate the key),
    read from the safetensors header alone."""
    try:
        with Path(path).open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            meta = json.loads(f.read(n)).get("__metadata__", {})
        return int(meta["step"]) if "step" in meta else None
    except (OSError, ValueError):
        return None


def save_train_state(path: str | Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_train_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no train state at {str(path)!r}: nothing to resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ValueError(f"{str(path)!r} cannot be loaded ({type(e).__name__}: {e})") from None


def clean_temporaries(run: Path) -> None:
    """Remove temporaries left by a write that was killed midway."""
    for tmp in list(run.glob(".*.tmp")) + list(run.glob("checkpoints/.*.tmp")):
        tmp.unlink(missing_ok=True)
