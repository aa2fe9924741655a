"""The ``unblur`` command: parse, validate, call the library, show progress."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.toml", help="a TOML file with [data], [model], [train], ... sections")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override one config key, e.g. --set train.lr=2e-4 (repeatable)")


def _resolve_config(args) -> Config:  # noqa: F821
    from .config import Config, apply_overrides, load_toml, parse_set

    cfg = Config()
    if args.config:
        cfg = apply_overrides(cfg, load_toml(args.config))
    over = parse_set(args.set)
    if getattr(args, "data", None):
        over["data.source"] = args.data
    if getattr(args, "steps", None) is not None:
        over["train.steps"] = args.steps
    if getattr(args, "minutes", None) is not None:
        over["train.minutes"] = args.minutes
        if getattr(args, "steps", None) is None:
            over["train.steps"] = 10**9  # the clock decides
    if getattr(args, "device", None):
        over["train.device"] = args.device
    if getattr(args, "process", None):
        over["process.kind"] = args.process
    if getattr(args, "blend_data", None):
        over["process.blend_data"] = args.blend_data
    return apply_overrides(cfg, over)


def cmd_train(args) -> int:
    from .training import train

    cfg = _resolve_config(args)
    if args.dry_run:
        print(cfg.to_json())
        return 0
    out = Path(args.out)
    summary = train(cfg, out, resume=args.resume, overwrite=args.overwrite)
    print(f"trained {summary['step']} steps (stopped by {summary['stopped_by']}), last loss "
          f"{summary.get('loss', float('nan')):.4f}; run in {out}/, samples in {summary['grid']}")
    return 0


def load_run(run: str | Path, device: str = "auto"):
    """(config, data_info, ema network, process, denoiser) of a trained run, ready to sample."""

    from .models import build_denoiser, build_net, build_process
    from .training.checkpoint import MODEL_FILE, load_model
    from .utils import resolve_device

    run = Path(run)
    path = run / MODEL_FILE if run.is_dir() else run
    if not run.exists():
        raise ValueError(f"run {str(run)!r} does not exist: give a folder written by `unblur train --out`")
    state, cfg, info = load_model(path)
    dev = resolve_device(device)
    net = build_net(cfg, info)
    net.load_state_dict(state)
    net = net.to(dev).eval().requires_grad_(False)
    process = build_process(cfg, info)
    return cfg, info, net, process, build_denoiser(cfg, net, process), dev


def cmd_sample(args) -> int:
    import torch

    with torch.no_grad():
        return _sample(args)


def _sample(args) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from .conditioning import SampleContext
    from .guidance import clip_x0
    from .images import grid_scale, make_grid, save_png, scatter_image, to_pil
    from .models import sampling_grid
    from .sampling import generate, nfe
    from .utils import seeded_generators

    cfg, info, net, process, denoiser, dev = load_run(args.run, args.device)
    s = cfg.sample
    sampler = args.sampler or s.sampler
    if cfg.process.kind not in ("edm", "vp") and not args.sampler:  # cold diffusion
        sampler = s.sampler if s.sampler in ("cold", "cold-naive") else "cold"
    steps = args.steps or s.steps
    grid = sampling_grid(cfg, args.grid)
    if args.n < 1 or args.batch < 1:
        raise ValueError(f"--n and --batch must be >= 1, got {args.n} and {args.batch}")
    is_image = info["kind"] == "image"
    prompts = list(args.prompt or [])
    if args.prompt_file:
        pf = Path(args.prompt_file)
        if not pf.is_file():
            raise ValueError(f"--prompt-file {str(pf)!r} does not exist: give a text file with one prompt per line")
        prompts += [line.strip() for line in pf.read_text(encoding="utf-8").splitlines() if line.strip()]
    ctx = SampleContext(cfg, info, net, dev, classes=args.class_ or [], prompts=prompts,
                        negative=args.negative_prompt, image=args.image, guidance=args.guidance, run=str(args.run))
    reqs = ctx.requests(args.n)
    base = denoiser
    out = Path(args.out) if args.out else Path(args.run) / "samples" / f"{sampler}-{steps}-seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    shape = tuple(info["shape"])
    chunks = []
    total_steps = -(-len(reqs) // args.batch) * steps
    bar = tqdm(total=total_steps, unit="step", desc=f"sample {sampler} x{steps}", dynamic_ncols=True)
    t0 = time.time()
    for start in range(0, len(reqs), args.batch):
        b = min(args.batch, len(reqs) - start)
        gens = seeded_generators(range(args.seed + start, args.seed + start + b), device=dev)
        cond, uncond = ctx.cond(reqs[start : start + b])
        denoiser = ctx.denoiser(base, cond, uncond)
        if is_image and s.clip:
            denoiser = clip_x0(denoiser)
        x = generate(denoiser, (b, *shape), process=process, sampler=sampler, steps=steps, grid=grid, cond=cond,
                     generator=gens, device=dev, callback=lambda info_: bar.update(1))
        chunks.append(x.float().cpu())
    bar.close()
    x = torch.cat(chunks)
    seconds = time.time() - t0
    if is_image:
        arr = ((x.clamp(-1, 1) + 1) / 2).numpy().astype(np.float32)  # (N, C, H, W) in [0, 1]
        np.save(out / "samples.npy", arr)
        for i in range(len(x)):
            to_pil(x[i]).save(out / f"{i:05d}.png")
        save_png(make_grid(x[: min(len(x), 256)], scale=grid_scale(shape[-2])), out / "grid.png")
    else:
        np.save(out / "samples.npy", x.numpy().astype(np.float32))  # (N, D) in data units
        save_png(scatter_image(x), out / "scatter.png")
    with (out / "samples.jsonl").open("w") as f:
        for i in range(len(x)):
            f.write(json.dumps({"index": i, "seed": args.seed + i, "sampler": sampler, "steps": steps,
                                "grid": grid, **ctx.record(reqs[i])}) + "\n")
    print(f"wrote {len(x)} samples to {out}/ ({sampler}, {steps} steps, {nfe(sampler, steps)} NFE, "
          f"{seconds:.1f} s)")
    return 0


def cmd_info(args) -> int:
    import torch

    from .nets import count_parameters, forward_flops
    from .training.checkpoint import STATE_FILE

    cfg, info, net, process, denoiser, dev = load_run(args.run, "cpu")
    run = Path(args.run)
    params = count_parameters(net, trainable_only=False)  # a loaded run has gradients off
    x = torch.zeros(1, *info["shape"])
    flops = forward_flops(net, x, torch.zeros(1), None)
    steps = "?"
    metrics = run / "metrics.jsonl"
    if metrics.exists():
        lines = metrics.read_text().strip().splitlines()
        if lines:
            steps = json.loads(lines[-1])["step"]
    print(f"run:        {run}")
    print(f"data:       {info['source']} ({info['kind']}, shape {tuple(info['shape'])}, {info['num_items']} items"
          + (f", {len(info['class_names'])} classes" if info.get("class_names") else "") + ")")
    print(f"network:    {type(net).__name__}, {params:,} parameters, {flops / 1e6:.2f} MFLOP per sample forward")
    print(f"process:    {process!r}")
    print(f"trained:    {steps} steps" + ("" if (run / STATE_FILE).exists() else " (no resume state)"))
    print("config:")
    print(cfg.to_json())
    return 0


def cmd_demo(args) -> int:
    """Train on the built-in digits for a few minutes and write a grid of samples."""
    from .config import Config, apply_overrides
    from .training import train

    out = Path(args.out)
    cfg = apply_overrides(Config(), {
        "data.source": "builtin:digits",
        "train.minutes": args.minutes,
        "train.steps": 10**9,
        "train.device": args.device or "auto",
        "train.sample_every": 0,
        "train.checkpoint_every": 200,
    })
    print(f"unblur demo: training on the 8x8 digits for {args.minutes} minutes into {out}/ "
          "(Ctrl-C stops early and keeps the checkpoint)")
    summary = train(cfg, out, overwrite=True)
    sample_args = argparse.Namespace(run=str(out), n=64, sampler=None, steps=None, grid=None, seed=0, batch=64,
                                     out=str(out / "samples" / "demo"), device=args.device or "auto", class_=None,
                                     prompt=None, prompt_file=None, negative_prompt=None, image=None, guidance=None)
    cmd_sample(sample_args)
    print(f"\ndone: {summary['step']} steps. Samples: {out}/samples/demo/grid.png")
    print(f"next: unblur sample {out} --n 16 --sampler heun --steps 18")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unblur", description="Diffusion models: train, sample, inspect.")
    p.add_argument("--version", action="version", version=f"unblur {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on images or vectors")
    t.add_argument("--data", help="folder | FILE.npy | builtin:digits | builtin:toy2d:NAME")
    t.add_argument("--out", required=True, help="run folder to write")
    t.add_argument("--steps", type=int, help="optimizer steps")
    t.add_argument("--minutes", type=float, help="wall-clock budget")
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t.add_argument("--process", help="edm | vp | cold diffusion: blur | pixelate | mask | desaturate | snow | "
                   "blend | noise (options: --set process.KEY=VALUE)")
    t.add_argument("--blend-data", help="blend: the second data set mixed into the images")
    _add_config_args(t)
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run", help="run folder (or its model.safetensors)")
    s.add_argument("--n", type=int, default=16, help="number of samples")
    s.add_argument("--sampler", help="ddpm | ddim | euler | euler-ancestral | heun | dpmpp-2m | dpmpp-2m-sde | "
                   "pc-langevin | cold | cold-naive (default: the run's)")
    s.add_argument("--steps", type=int, help="sampler steps (default: the run's)")
    s.add_argument("--grid", help="karras | logsnr | leading | trailing | linspace | ddim | full")
    s.add_argument("--seed", type=int, default=0, help="sample i uses seed + i, whatever the batch")
    s.add_argument("--batch", type=int, default=64, help="samples per forward pass")
    s.add_argument("--out", help="output folder (default: RUN/samples/...)")
    s.add_argument("--device", default="auto")
    s.add_argument("--class", dest="class_", action="append", metavar="NAME|INDEX",
                   help="class to sample (repeatable; each gets --n samples)")
    s.add_argument("--prompt", action="append", metavar="TEXT", help="caption to sample (repeatable; each gets --n)")
    s.add_argument("--prompt-file", metavar="FILE", help="a text file with one prompt per line")
    s.add_argument("--negative-prompt", metavar="TEXT", help="caption to guide away from (instead of the null)")
    s.add_argument("--image", metavar="FILE", help="conditioning image, e.g. a low-resolution input")
    s.add_argument("--guidance", type=float, help="classifier-free guidance scale: 1 = conditional, 0 = "
                   "unconditional (default: cond.guidance for classes and prompts, 1 for an image)")
    s.set_defaults(fn=cmd_sample)

    i = sub.add_parser("info", help="describe a run: config, parameters, FLOPs, steps, data")
    i.add_argument("run")
    i.set_defaults(fn=cmd_info)

    d = sub.add_parser("demo", help="train on the built-in digits for a few minutes, then sample")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--minutes", type=float, default=5.0)
    d.add_argument("--device", default=None)
    d.set_defaults(fn=cmd_demo)

    from .cli_cold import add_commands as add_cold_commands  # restore, degrade
    from .cli_eval import add_commands as add_eval_commands  # eval, sweep, show

    add_eval_commands(sub)
    add_cold_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as e:
        print(f"unblur {args.command}: error: {e}", file=sys.stderr)
        return 2
