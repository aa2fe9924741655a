"""``unblur eval`` and ``unblur sweep``: measure a run against real data."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from .common import (
    DEVICE_HELP,
    GRID_HELP,
    SAMPLER_HELP,
    add_threads_arg,
    apply_threads,
    positive_int,
    progress_factory,
)


def add_parser(sub) -> None:
    from ..eval.report import DEFAULTS_HELP

    e = sub.add_parser("eval", help="FID/KID, precision/recall, IS, bits/dim or NLL of a run, beside a data floor")
    _common_eval_args(e)
    e.add_argument("--metrics", help=f"comma-separated: fid,kid,pr,is,bpd,nll,psnr,ssim (default: {DEFAULTS_HELP})")
    e.add_argument("--sampler", help="sampler for the generated samples: " + SAMPLER_HELP)
    e.add_argument("--steps", type=positive_int, help="sampler steps (default: the run's)")
    e.add_argument("--ode-steps", type=positive_int, help="RK4 steps of the probability-flow ODE (default 32)")
    e.add_argument("--likelihood-n", type=positive_int,
                   help="real items whose bits/dim or NLL is computed (default 64)")
    e.add_argument("--level", dest="restore_level", type=float,
                   help="psnr/ssim of a cold run: degrade held-out images to this level, then restore (default 0.5)")
    e.add_argument("--json", help="write the report here")
    c = e.add_argument_group("prompt fidelity: the CLIP score (and the shapes checker) of --n images per prompt "
                             "(default 8)")
    c.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt to make --n images of (repeatable); "
                   "with prompts, eval reports the CLIP score instead of the data metrics")
    c.add_argument("--prompt-file", metavar="FILE", help="a text file with one prompt per line")
    c.add_argument("--clip", metavar="ENCODER", help="the contrastive encoder run that scores image-prompt pairs "
                   "(default: the decoder's own encoder)")
    c.add_argument("--prior", metavar="RUN", help="the prior, when RUN is an unCLIP decoder (trained with --clip)")
    c.add_argument("--guidance", type=float, help="guidance scale of the images (default: the run's)")
    c.add_argument("--prior-guidance", type=float, help="the prior's guidance scale (default: the prior run's)")
    e.set_defaults(fn=run_eval)

    s = sub.add_parser("sweep", help="sample quality against NFE and wall time, for several samplers")
    _common_eval_args(s)
    s.add_argument("--samplers", default="ddim,heun,dpmpp-2m", help="comma-separated sampler names (any that "
                   "--sampler of unblur sample accepts); every row samples on one grid (--grid)")
    s.add_argument("--steps", default="5,10,20,50", help="comma-separated step counts; the wall-time column is "
                   "comparable between rows only on an otherwise idle machine")
    s.add_argument("--out", help="output folder (default: RUN/sweep)")
    s.set_defaults(fn=run_sweep)


def _common_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder (or its model.safetensors)")
    p.add_argument("--data", help="real data to compare with (default: the run's own data)")
    p.add_argument("--resize", action="store_true", help="resize --data images to the model's size")
    p.add_argument("--n", type=positive_int, help="generated samples (default: half the real data)")
    p.add_argument("--features", default="auto",
                   help="auto | builtin:digits | inception:PATH | torchvision:ARCH:PATH | hf:PATH | pixels")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed + i; the real data's split uses it too")
    p.add_argument("--batch", type=positive_int, default=256, help="samples per forward pass")
    p.add_argument("--grid", help=GRID_HELP)
    p.add_argument("--no-cache", action="store_true", help="recompute the reference features")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_threads_arg(p)


def load_real(args, run):
    """The real data for a report: --data (default: the run's own data), checked against the model."""
    from ..runs.catalog import load_data, load_training_data

    cfg, info = run.config, run.data
    toy = info.kind == "vector" and str(args.data or cfg.data.source).startswith("builtin:toy2d")
    if toy:  # a fresh draw of the toy distribution, not the training points
        return load_data(args.data or cfg.data.source, n=max(2 * (args.n or 1000), 2000), seed=cfg.train.seed + 12345)
    if not args.data:
        return load_training_data(cfg)
    if args.resize and info.kind == "image":
        C, H, W = info.image_shape
        return load_data(args.data, size=(H, W), channels=C)
    return load_data(args.data)


def _as_images(run) -> tuple:
    """(the data description eval compares against,): the images a latent run decodes to."""
    if run.latent is None:
        return (run.data,)
    return (dataclasses.replace(run.data, shape=run.image_shape, latent=None),)


def _latent(run) -> dict:
    """A latent run's decoder and latent shape for ``evaluate`` and ``sweep``."""
    if run.latent is None:
        return {}
    return {"decode": run.decode, "sample_shape": run.data.shape}


def _settings(args, run, **changes):
    from ..eval.report import EvalSettings, check_metrics

    metrics = check_metrics(args.metrics.split(",")) if args.metrics else None  # None: the run's defaults
    kwargs = dict(metrics=metrics, n=args.n, features=args.features, seed=args.seed, batch=args.batch,
                  use_cache=not args.no_cache)
    for name in ("ode_steps", "likelihood_n", "restore_level"):
        value = getattr(args, name, None)
        if value is not None:
            kwargs[name] = value
    return dataclasses.replace(EvalSettings(**kwargs), **changes)


def run_eval(args) -> int:
    from ..eval.report import evaluate
    from ..runs import Run

    run = Run.load(args.run, device=args.device)
    plan = run.plan(args.sampler, args.steps, args.grid)
    if args.prompt or args.prompt_file:
        return run_prompt_eval(args, run, plan)
    for flag in ("clip", "prior", "guidance", "prior_guidance"):
        if getattr(args, flag) is not None:
            raise ValueError(f"--{flag.replace('_', '-')} applies to the CLIP score of images made from prompts: "
                             "give --prompt or --prompt-file")
    real = load_real(args, run)
    settings = _settings(args, run, sampler=plan.sampler, steps=plan.steps, grid=plan.grid)
    apply_threads(args)
    report = evaluate(run.sampling_denoiser(), run.process, *_as_images(run), real, settings=settings,
                      device=run.device, progress=progress_factory(), **_latent(run))
    report["run"] = str(args.run)
    return _write_report(args, report, summarize(report))


def _write_report(args, report: dict, text: str) -> int:
    """Print a report's summary and, with --json, write the report there."""
    from ..utils import atomic_write_bytes

    if args.json:
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
    print(text)
    if args.json:
        print(f"report: {args.json}")
    return 0


def run_prompt_eval(args, run, plan) -> int:
    """Make --n images per prompt (through the prior and decoder for an unCLIP decoder, else with
    the run's own caption conditioning) and report their CLIP score and shapes-checker accuracy."""
    import torch

    from ..eval.prompts import prompt_report, summarize_prompts
    from ..kinds import MODEL_KINDS
    from ..runs import Run
    from ..runs.catalog import check_prompts
    from ..runs.unclip import Unclip
    from .sample import read_prompts

    prompts = check_prompts(read_prompts(args))
    n = args.n or 8
    apply_threads(args)
    rec = run.data.clip
    if rec is not None and not rec.for_prior:  # an unCLIP decoder: text -> prior -> embeddings -> images
        if not args.prior:
            raise ValueError(f"{run.name} draws images of image embeddings: give the prior that turns prompts into "
                             "them (--prior RUN)")
        chain = Unclip(run, Run.load(args.prior, device=run.device))
        stream = chain.sample(n, prompts=prompts, guidance=args.guidance, sampler=plan.sampler, steps=plan.steps,
                              grid=plan.grid, prior_guidance=args.prior_guidance, seed=args.seed, batch=args.batch)
        clip = MODEL_KINDS["clip"].open(args.clip, device=run.device) if args.clip else chain.clip
    else:
        if not args.clip:
            raise ValueError("--clip ENCODER names the contrastive encoder run (unblur train --model clip) that "
                             "scores the images against their prompts")
        if args.prior:
            raise ValueError(f"--prior applies to an unCLIP decoder (trained with --clip), and {run.name} is not one")
        stream = run.sample(n, prompts=prompts, guidance=args.guidance, sampler=plan.sampler, steps=plan.steps,
                            grid=plan.grid, seed=args.seed, batch=args.batch)
        clip = MODEL_KINDS["clip"].open(args.clip, device=run.device)
    C, H, W = clip.image_shape
    if tuple(run.image_shape) != (C, H, W):
        made = "x".join(map(str, run.image_shape))
        raise ValueError(f"the encoder {str(clip.path)!r} reads {C}x{H}x{W} images, but {run.name} makes {made} "
                         "images: give an encoder trained on images of that size")
    from tqdm import tqdm

    xs = []
    with tqdm(total=n * len(prompts), desc="images", unit="img") as bar:
        for b in stream:
            xs.append(b.x)
            bar.update(len(b.x))
    report = prompt_report(clip, torch.cat(xs), [p for p in prompts for _ in range(n)], seed=args.seed)
    report.update(run=str(args.run), prompts=len(prompts), per_prompt=n, sampler=plan.sampler, steps=plan.steps,
                  prior=str(args.prior) if args.prior else None)
    return _write_report(args, report, summarize_prompts(report))


def summarize(report: dict) -> str:
    """A few human lines: each metric beside its floor (and pure noise)."""
    lines = [f"data: {report['data']}" + (f"; features: {report['features']}" if "features" in report else "")]
    if "warning" in report:
        lines.append(f"WARNING: {report['warning']}")
    lines += [f"note: {note}" for note in report.get("notes", [])]
    floor, noise = report.get("floor", {}), report.get("noise", {})
    for key, fmt in (("fid", ".3f"), ("kid", ".5f"), ("precision", ".3f"), ("recall", ".3f"), ("is", ".3f")):
        if report.get(key) is None:
            continue
        line = f"{key:>10}: {report[key]:{fmt}}"
        if key in floor:
            line += f"   (data floor {floor[key]:{fmt}}"
            line += f", pure noise {noise[key]:{fmt}})" if key in noise else ")"
        if key == "kid":
            line += f"  +- {report['kid_se']:.5f}  [{report.get('kid_scale', 'unscaled MMD^2')}]"
        lines.append(line)
    for key in ("bpd_ode", "bpd_vlb"):
        if report.get(key) is not None:
            lines.append(f"{key:>10}: {report[key]:.4f} +- {report[key + '_se'] or 0:.4f} bits/dim "
                         f"({report['bpd_items']} real images)")
    if report.get("nll") is not None:
        line = f"{'nll':>10}: {report['nll']:.4f} +- {report['nll_se']:.4f} nats ({report['nll_items']} points)"
        if "true_entropy" in report:
            line += f"; true entropy {report['true_entropy']:.4f}, true NLL of these points {report['true_nll']:.4f}"
        lines.append(line)
    for key, unit in (("psnr", " dB"), ("ssim", "")):
        if report.get(key) is not None:
            lines.append(f"{key:>10}: {report[key]:.4f}{unit} restored from level {report['restore_level']:g} "
                         f"(degraded input {report['degraded'][key]:.4f}{unit}; {report['restored_items']} images)")
    return "\n".join(lines)


def run_sweep(args) -> int:
    from ..eval.report import sweep, sweep_plot, sweep_table
    from ..runs import Run

    run = Run.load(args.run, device=args.device)
    real = load_real(args, run)
    args.metrics = "fid"
    settings = _settings(args, run, grid=run.plan(grid=args.grid).grid)
    samplers = [_sweep_sampler(run, s.strip(), settings.grid) for s in args.samplers.split(",") if s.strip()]
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--steps must be a comma-separated list of integers, got {args.steps!r}") from None
    if not steps or min(steps) < 1:
        raise ValueError(f"--steps must list positive integers, got {args.steps!r}")
    apply_threads(args)
    result = sweep(run.sampling_denoiser(), run.process, *_as_images(run), real, samplers=samplers, steps=steps,
                   settings=settings, device=run.device, progress=progress_factory(), **_latent(run))
    out = Path(args.out) if args.out else Path(args.run) / "sweep"
    out.mkdir(parents=True, exist_ok=True)
    table = sweep_table(result)
    (out / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "sweep.md").write_text(table + "\n")
    sweep_plot(result, out / "sweep.png")
    print(f"features: {result['features']}; {result['settings']['n']} samples per row")
    print(table)
    print(f"wrote {out}/sweep.json, sweep.md, sweep.png")
    return 0


def _sweep_sampler(run, name: str, grid: str) -> str:
    """A sampler of the sweep by its canonical name; an unknown sampler, one that does not apply to
    the run, or a "Karras" alias on a sweep over another grid fails before any work."""
    from ..runs.catalog import resolve_sampler

    plan = run.plan(name)
    if resolve_sampler(name)[1] not in (None, grid):  # a "Karras" alias asks for a grid of its own
        raise ValueError(f"the sweep samples every row on the {grid} grid, but {name!r} asks for the {plan.grid} "
                         f"grid: pass --grid {plan.grid}, or name the sampler {plan.sampler!r}")
    return plan.sampler
