"""``unblur info``'s description of a run folder of any model kind, as lines."""

from __future__ import annotations

import json
from pathlib import Path

from ..kinds import kind_of
from ..utils import read_jsonl
from .checkpoint import MODEL_FILE, STATE_FILE, load_model, model_step


def describe_folder(ref: str) -> list[str]:
    """What the run ``ref`` (a folder, its ``model.safetensors`` or ``builtin:NAME``) is: its
    kind's own lines (an autoencoder, an encoder) or a sampling run's data, network and process;
    then the steps it trained, a built-in run's provenance, and its config."""
    from .pretrained import builtin_path, is_builtin

    path = builtin_path(ref) if is_builtin(ref) else Path(ref)
    if not path.exists():
        raise ValueError(f"run {str(path)!r} does not exist: give a folder written by `unblur train --out`")
    file = path / MODEL_FILE if path.is_dir() else path
    _, cfg, info = load_model(file)
    kind = kind_of(cfg)
    lines = kind.describe_folder(path, cfg, info)
    if lines is None:
        lines = _describe_run(ref)
    steps = model_step(file)
    if steps is None:  # an export written before the step was recorded: the last whole metrics line
        steps = _last_logged_step(file.parent / "metrics.jsonl")
    lines.append(f"trained:    {steps} steps" + ("" if (file.parent / STATE_FILE).exists() else " (no resume state)"))
    made = _builtin_meta(file)
    if made:
        lines.append(f"built-in:   {made.get('description', '')}; made by `{made['command']}` (seed {made['seed']}, "
                     f"{made['steps']} steps, {made.get('train_seconds', 0) / 60:.1f} min), {made.get('weights', '')}")
        lines.append(f"measured:   {json.dumps(made.get('figures', {}))}")
    return [*lines, "config:", cfg.to_json()]


def _describe_run(ref: str) -> list[str]:
    import torch

    from ..nets import count_parameters, forward_flops
    from .run import Run

    run = Run.load(ref, device="cpu")
    info, net = run.data, run.net
    params = count_parameters(net, trainable_only=False)  # a loaded run has gradients off
    flops = forward_flops(net, torch.zeros(1, *info.shape), torch.zeros(1), None)
    lines = [f"run:        {ref}",
             f"data:       {info.source} ({info.kind}, shape {tuple(info.shape)}, {info.num_items} items"
             + (f", {len(info.class_names)} classes" if info.class_names else "") + ")"]
    if run.latent is not None:
        lat = info.latent
        lines.append(f"latent:     {'x'.join(map(str, run.image_shape))} images <-> {'x'.join(map(str, info.shape))} "
                     f"latents of {lat.path} ({lat.kind}, sha256 {lat.sha256[:12]}"
                     f"{', embedded copy in the run' if lat.embedded else ''}), shift {lat.shift:+.4f}, "
                     f"scale {lat.scale:.4f}")
    if info.clip is not None:
        lines.append(f"encoder:    {info.clip.path} (sha256 {info.clip.sha256[:12]}), as a "
                     f"{'prior' if info.clip.for_prior else 'decoder'}")
    lines += [f"network:    {type(net).__name__}, {params:,} parameters, {flops / 1e6:.2f} MFLOP per sample forward",
              f"process:    {run.process!r}"]
    return lines


def _builtin_meta(path: Path) -> dict | None:
    """The provenance ``scripts/train_builtin.py`` stores in a shipped run's metadata."""
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            meta = json.loads(f.read(n)).get("__metadata__", {})
        return json.loads(meta["builtin"]) if "builtin" in meta else None
    except (OSError, ValueError, KeyError):
        return None


def _last_logged_step(path: Path) -> int | str:
    steps = [r["step"] for r in read_jsonl(path) if isinstance(r.get("step"), int)]
    return steps[-1] if steps else "?"
