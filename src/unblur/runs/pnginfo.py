"""The settings that made an image, carried inside its PNG: as JSON in an ``unblur`` text chunk,
and as the ``parameters`` text chunk in the layout AUTOMATIC1111's web UI writes (and image
sites, ComfyUI and other tools read):

    a red circle above a blue square
    Negative prompt: blurry
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 3, Seed: 7, Size: 32x32,
    Model hash: 1a2b3c4d5e, Model: builtin:shapes, Version: unblur 0.1.0

(on one line after "Negative prompt"). ``unblur sample`` and ``unblur serve`` write both;
``unblur sample --from-png`` and the page read the JSON back and make the same image again.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from .. import __version__
from ..sampling import a1111_name

CHUNK = "unblur"  # the JSON chunk's keyword
PARAMETERS = "parameters"  # AUTOMATIC1111's keyword


def settings_of(run, record: dict[str, Any], *, kind: str = "generate", size: tuple[int, int] | None = None,
                **extra: Any) -> dict[str, Any]:
    """The settings of one output of ``run`` from its record (``Run.sample`` or ``Run.edit``):
    which run (name and weights hash), the context, the sampler and the seed, plus ``extra``
    (``request_seed``, ``n``, ``batch`` and ``index`` let a sample be made again bit for bit)."""
    size = size or tuple(run.image_shape[-2:])
    if len(size) != 2:
        raise ValueError(f"{run.name} makes vectors of shape {tuple(run.image_shape)}, not images: no PNG settings")
    keep = ("prompt", "negative_prompt", "class", "class_name", "guidance", "sampler", "steps", "grid", "seed",
            "strength", "method", "level", "index", "embedding_of")
    out = {"unblur": __version__, "kind": kind, "run": run.ref, "model_hash": run.weights_sha256,
           "size": [int(size[0]), int(size[1])]}
    out.update({k: record[k] for k in keep if record.get(k) is not None})
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def parameters_text(s: dict[str, Any]) -> str:
    """AUTOMATIC1111's ``parameters`` text for the settings ``s``."""
    prompt = s.get("prompt") or (f"class {s['class_name']}" if s.get("class_name") is not None else "")
    lines = [prompt]
    if s.get("negative_prompt"):
        lines.append(f"Negative prompt: {s['negative_prompt']}")
    fields: list[tuple[str, Any]] = []
    if s.get("steps") is not None:
        fields.append(("Steps", s["steps"]))
    if s.get("sampler"):
        fields.append(("Sampler", a1111_name(s["sampler"])))  # AUTOMATIC1111's name, else ours
    if s.get("grid"):
        fields.append(("Schedule type", str(s["grid"]).capitalize()))
    if s.get("guidance") is not None:
        fields.append(("CFG scale", f"{float(s['guidance']):g}"))
    if s.get("seed") is not None:
        fields.append(("Seed", s["seed"]))
    h, w = s["size"]
    fields.append(("Size", f"{w}x{h}"))
    fields.append(("Model hash", str(s["model_hash"])[:10]))
    fields.append(("Model", s["run"]))
    if s.get("strength") is not None:
        fields.append(("Denoising strength", f"{float(s['strength']):g}"))
    if s.get("class") is not None:
        fields.append(("Class", s.get("class_name", s["class"])))
    fields.append(("Version", f"unblur {s.get('unblur', __version__)}"))
    lines.append(", ".join(f"{k}: {_field(v)}" for k, v in fields))
    return "\n".join(lines)


def _field(v: Any) -> str:
    """A value as AUTOMATIC1111 writes it: quoted (JSON) when it holds a comma, colon or quote."""
    v = str(v)
    return json.dumps(v) if any(c in v for c in ',:"\n') else v


def text_chunks(s: dict[str, Any]) -> dict[str, str]:
    """The PNG text chunks for the settings ``s``: the JSON and AUTOMATIC1111's ``parameters``."""
    return {CHUNK: json.dumps(s, sort_keys=True), PARAMETERS: parameters_text(s)}


def read_settings(source: str | Path | bytes, *, name: str | None = None) -> dict[str, Any]:
    """The settings in a PNG written by unblur (a path, or the file's bytes); a clear error when
    the file is not a PNG or carries no unblur settings."""
    from PIL import Image, UnidentifiedImageError

    from ..images import pillow_bomb_check

    label = name or (str(source) if not isinstance(source, bytes) else "the image")
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {label!r}: {e.strerror or e}") from None
    try:
        with pillow_bomb_check(), Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise ValueError(f"{label!r} is a {img.format} image, not a PNG: settings travel in PNG text chunks")
            text = dict(getattr(img, "text", {}) or {})
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{label!r} is not a readable image ({e})") from None
    if CHUNK not in text:
        extra = " (it has AUTOMATIC1111 parameters, but not unblur's settings)" if PARAMETERS in text else ""
        raise ValueError(f"{label!r} carries no unblur settings{extra}: give a PNG written by unblur sample or "
                         "unblur serve")
    try:
        s = json.loads(text[CHUNK])
    except json.JSONDecodeError as e:
        raise ValueError(f"{label!r}: its unblur settings are not valid JSON ({e})") from None
    if not isinstance(s, dict) or "run" not in s:
        raise ValueError(f"{label!r}: its unblur settings name no run")
    return s
