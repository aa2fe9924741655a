"""The small pretrained runs shipped inside the package, opened as ``builtin:NAME``.

Each lives in ``unblur/pretrained/NAME/model.safetensors`` (bf16 weights) and was made by
``scripts/train_builtin.py``; its metadata (``unblur info builtin:NAME``) holds the command,
the seed and the figures that script measured. They exist so that ``unblur serve`` and
``unblur sample builtin:NAME`` work within seconds of installing.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "builtin:"
ROOT = Path(__file__).resolve().parent.parent / "pretrained"
BUILTIN_RUNS = {
    "digits": "class-conditional 8x8 digits (scikit-learn)",
    "shapes": "text-to-image shapes at 32x32 (MiniLM captions)",
    "blur": "cold-diffusion deblurring of digits",
}


def is_builtin(ref: str | Path) -> bool:
    return str(ref).startswith(PREFIX)


def builtin_path(ref: str | Path) -> Path:
    """The run folder of ``builtin:NAME``; a clear error naming the runs there are."""
    name = str(ref)[len(PREFIX):]
    folder = ROOT / name
    if name not in BUILTIN_RUNS or not (folder / "model.safetensors").is_file():
        have = ", ".join(f"builtin:{n}" for n in BUILTIN_RUNS if (ROOT / n / "model.safetensors").is_file())
        raise ValueError(f"there is no built-in run {str(ref)!r}: the package holds {have or 'none'}")
    return folder
