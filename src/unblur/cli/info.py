"""``unblur info``: describe a run."""

from __future__ import annotations

import json
from pathlib import Path

from ..utils import read_jsonl


def add_parser(sub) -> None:
    i = sub.add_parser("info", help="describe a run: config, parameters, FLOPs, steps, data")
    i.add_argument("run")
    i.set_defaults(fn=run_info)


def run_info(args) -> int:
    import torch

    from ..nets import count_parameters, forward_flops
    from ..runs import MODEL_FILE, STATE_FILE, Run
    from ..runs.checkpoint import model_kind, model_step
    from ..runs.pretrained import builtin_path, is_builtin

    path = builtin_path(args.run) if is_builtin(args.run) else Path(args.run)
    kind = model_kind(path / MODEL_FILE if path.is_dir() else path)
    if kind == "autoencoder":
        return _autoencoder_info(path)
    if kind == "clip":
        return _clip_info(path)
    run = Run.load(args.run, device="cpu")
    info, net = run.data, run.net
    params = count_parameters(net, trainable_only=False)  # a loaded run has gradients off
    flops = forward_flops(net, torch.zeros(1, *info.shape), torch.zeros(1), None)
    steps = model_step(path / MODEL_FILE)
    if steps is None:  # an export written before the step was recorded: the last whole metrics line
        steps = _last_logged_step(path / "metrics.jsonl")
    print(f"run:        {args.run}")
    print(f"data:       {info.source} ({info.kind}, shape {tuple(info.shape)}, {info.num_items} items"
          + (f", {len(info.class_names)} classes" if info.class_names else "") + ")")
    if run.latent is not None:
        lat = info.latent
        print(f"latent:     {'x'.join(map(str, run.image_shape))} images <-> {'x'.join(map(str, info.shape))} latents "
              f"of {lat['autoencoder']} ({lat['kind']}, sha256 {str(lat['sha256'])[:12]}"
              f"{', embedded copy in the run' if lat.get('embedded') else ''}), shift {lat['shift']:+.4f}, "
              f"scale {lat['scale']:.4f}")
    print(f"network:    {type(net).__name__}, {params:,} parameters, {flops / 1e6:.2f} MFLOP per sample forward")
    print(f"process:    {run.process!r}")
    print(f"trained:    {steps} steps" + ("" if (path / STATE_FILE).exists() else " (no resume state)"))
    made = _builtin_meta(path / MODEL_FILE)
    if made:
        print(f"built-in:   {made.get('description', '')}; made by `{made['command']}` (seed {made['seed']}, "
              f"{made['steps']} steps, {made.get('train_seconds', 0) / 60:.1f} min), {made.get('weights', '')}")
        print(f"measured:   {json.dumps(made.get('figures', {}))}")
    print("config:")
    print(run.config.to_json())
    return 0


def _builtin_meta(path: Path) -> dict | None:
    """The provenance ``scripts/train_builtin.py`` stores in a shipped run's metadata."""
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            meta = json.loads(f.read(n)).get("__metadata__", {})
        return json.loads(meta["builtin"]) if "builtin" in meta else None
    except (OSError, ValueError, KeyError):
        return None


def _autoencoder_info(path: Path) -> int:
    """``unblur info`` for an autoencoder run: factor, latent shape, scale factor, held-out PSNR/SSIM."""
    from ..nets import count_parameters
    from ..pipelines import load_autoencoder
    from ..runs import MODEL_FILE, STATE_FILE, load_model
    from ..runs.checkpoint import model_step
    from ..training.autoencoder import holdout_split

    ae = load_autoencoder(path, device="cpu")
    folder = Path(ae.path)
    _, cfg, info = load_model(folder / MODEL_FILE)
    C, H, W = info.shape
    c, h, w = ae.latent_shape(H, W)
    net = ae.model.config
    steps = model_step(folder / MODEL_FILE)
    held = [r for r in read_jsonl(folder / "metrics.jsonl") if "heldout_psnr" in r]
    print(f"run:        {path}")
    print(f"kind:       autoencoder (KL), downsampling {ae.downsampling}: {C}x{H}x{W} images <-> {c}x{h}x{w} "
          f"latents ({C * H * W / (c * h * w):.3g}x fewer values)")
    print(f"data:       {info.source} ({info.num_items} images)")
    print(f"network:    AutoencoderKL, widths {','.join(map(str, net.block_out_channels))}, "
          f"{count_parameters(ae.model, trainable_only=False):,} parameters, middle attention "
          f"{'on' if net.mid_block_add_attention else 'off'}")
    print(f"latents:    scaling_factor {ae.scaling_factor:.6g} (1 / std of the latent means on the training images), "
          f"shift_factor {ae.shift_factor:g}")
    if held:
        last = held[-1]
        ssim = f", SSIM {last['heldout_ssim']:.4f}" if "heldout_ssim" in last else ""
        n_held = len(holdout_split(info.num_items, cfg.autoencoder.holdout, cfg.train.seed)[1])
        print(f"held out:   {n_held} images ({cfg.autoencoder.holdout:.0%}): reconstruction PSNR "
              f"{last['heldout_psnr']:.2f} dB{ssim} (step {last['step']})")
    print(f"trained:    {steps} steps" + ("" if (folder / STATE_FILE).exists() else " (no resume state)"))
    print(f"weights:    sha256 {ae.sha256}")
    print(f"use:        a latent diffusion run takes it with --latent {str(path)!r}; in Python, "
          "unblur.pipelines.load_autoencoder opens it")
    print("config:")
    print(cfg.to_json())
    return 0


def _clip_info(path: Path) -> int:
    """``unblur info`` for a contrastive encoder run: towers, embedding width, held-out retrieval."""
    from ..nets import count_parameters
    from ..pipelines.unclip import load_clip
    from ..runs import STATE_FILE
    from ..runs.checkpoint import model_step

    enc = load_clip(path, device="cpu")
    folder, c = Path(enc.path), enc.config.clip
    held = [r for r in read_jsonl(folder / "metrics.jsonl") if "heldout_t2i_top1" in r]
    C, H, W = enc.image_shape
    print(f"run:        {path}")
    print(f"kind:       contrastive encoder: {C}x{H}x{W} images and captions -> {enc.dim}-wide unit embeddings")
    print(f"data:       {enc.config.data.source}")
    text = "a learned text encoder" if c.text_encoder == "learned" else f"{c.text_encoder} caption features (frozen)"
    print(f"network:    CNN widths {','.join(map(str, c.widths))}; {text}, {c.text_head} head; "
          f"{count_parameters(enc.model, trainable_only=False):,} parameters; logit scale "
          f"{float(enc.model.scale()):.2f} (bound {c.max_logit_scale:g})")
    if held:
        last = held[-1]
        zs = f", zero-shot {last['heldout_zero_shot']:.3f}" if "heldout_zero_shot" in last else ""
        print(f"held out:   {c.holdout:.0%} of the pairs: text->image top-1 {last['heldout_t2i_top1']:.3f}, "
              f"image->text top-1 {last['heldout_i2t_top1']:.3f}, pair cosine {last['heldout_pair_cosine']:.3f}"
              f"{zs} (step {last['step']})")
    print(f"trained:    {model_step(folder / 'model.safetensors')} steps"
          + ("" if (folder / STATE_FILE).exists() else " (no resume state)"))
    print(f"weights:    sha256 {enc.sha256}")
    print(f"use:        a prior (unblur train --model prior --clip {str(path)!r}), a decoder (unblur train --clip "
          f"{str(path)!r}), unblur eval --clip {str(path)!r}; in Python, unblur.pipelines.unclip.load_clip")
    print("config:")
    print(enc.config.to_json())
    return 0


def _last_logged_step(path: Path) -> int | str:
    steps = [r["step"] for r in read_jsonl(path) if isinstance(r.get("step"), int)]
    return steps[-1] if steps else "?"
