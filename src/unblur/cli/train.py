"""``unblur train`` and ``unblur demo``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_config_args, positive_float, positive_int, resolve_config


def add_parser(sub) -> None:
    from ..runs.catalog import DEGRADATIONS, gaussian_processes

    # Argument declarations look alike across commands (same shape, other names): kept as plain argparse.
    t = sub.add_parser("train", help="train a model on images or vectors")
    t.add_argument("--data", help="folder | FILE.npy | builtin:digits | builtin:toy2d:NAME")
    t.add_argument("--out", required=True, help="run folder to write")
    t.add_argument("--steps", type=positive_int, help="optimizer steps")
    t.add_argument("--minutes", type=positive_float, help="wall-clock budget")
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t.add_argument("--process", help=" | ".join(gaussian_processes()) + " | cold diffusion: "
                   + " | ".join(DEGRADATIONS) + " (options: --set process.KEY=VALUE)")
    t.add_argument("--blend-data", help="blend: the second data set mixed into the images")
    t.add_argument("--model", dest="model_kind", metavar="KIND", help=model_help())
    t.add_argument("--clip", metavar="ENCODER", help="a contrastive encoder run (--model clip): condition a U-Net on "
                   "its image embeddings (the unCLIP decoder), or train a --model prior on its embeddings "
                   "(cond.clip)")
    t.add_argument("--latent", metavar="AE", help="diffuse in the latent space of this autoencoder: an unblur "
                   "autoencoder run or a diffusers AutoencoderKL / TAESD folder (the data is encoded once, cached)")
    t.add_argument("--embed-ae", action="store_true", help="with --latent: copy the autoencoder's weights into the "
                   "run folder, so the run stands alone")
    add_config_args(t)
    t.set_defaults(fn=run_train)

    d = sub.add_parser("demo", help="train on the built-in digits for a few minutes, then sample")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--minutes", type=positive_float, default=5.0)
    d.add_argument("--device", default=None)
    d.set_defaults(fn=run_demo)


def model_help() -> str:
    """``--model``'s help, from the model-kind registry: each kind's names and what it trains."""
    from ..kinds import MODEL_KINDS

    kinds = "; ".join(f"{' | '.join(k.config_names)}: {k.help}" for k in MODEL_KINDS.values())
    return f"what to train (default auto). {kinds}; options of a kind: --set SECTION.KEY=VALUE"


DEFAULT_MINUTES = 10.0  # the budget of `unblur train` given neither --steps nor --minutes (nor train.steps/minutes)
BUDGET_KEYS = {"train.steps", "train.minutes"}


def run_train(args) -> int:
    from ..config import apply_overrides
    from ..training import train

    cfg, explicit = resolve_config(args)
    default_budget = not args.resume and not explicit & BUDGET_KEYS
    if default_budget:  # the clock decides; a library call keeps train.steps (resume: the run's own budget)
        cfg = apply_overrides(cfg, {"train.minutes": DEFAULT_MINUTES, "train.steps": 10**9})
    if args.dry_run:
        print(cfg.to_json())
        return 0
    if args.resume and args.overwrite:
        raise ValueError("give either --resume (continue the run) or --overwrite (replace it), not both")
    if default_budget:
        say(f"budget: {DEFAULT_MINUTES:g} minutes, the default (give --steps N or --minutes M to choose)")
    if not args.resume and "data.source" not in explicit:
        say(f"no --data given: training on the built-in 8x8 digits ({cfg.data.source}); --data FOLDER trains on "
            "your images")
    out = Path(args.out)
    summary = train(cfg, out, resume=args.resume, overwrite=args.overwrite, explicit=explicit, report=say)
    print(f"trained {summary['step']} steps (stopped by {summary['stopped_by']}), last loss "
          f"{summary.get('loss', float('nan')):.4f}; run in {out}/, samples in {summary['grid']}")
    # A run stopped by SIGINT or SIGTERM was saved, but did not finish: a scheduler must see that.
    return 128 + summary["signal"] if summary.get("signal") else 0


def say(line: str) -> None:
    """Print one line about the run on stdout without breaking a progress bar."""
    from tqdm import tqdm

    tqdm.write(line)


def unblur_command() -> str:
    """How to run ``unblur`` from here: the virtual environment's script as a path relative to the
    current folder (``.venv/bin/unblur`` after ``make demo``), else plain ``unblur``."""
    import os
    import sys

    script = Path(sys.executable).parent / "unblur"
    if not script.exists():
        return "unblur"
    rel = os.path.relpath(script)
    return rel if not rel.startswith("..") else str(script)


def run_demo(args) -> int:
    """Train on the built-in digits for a few minutes and write a grid of samples."""
    from ..config import Config, apply_overrides
    from ..training import train
    from .sample import run_sample

    out = Path(args.out)
    cfg = apply_overrides(Config(), {
        "data.source": "builtin:digits",
        "train.minutes": args.minutes,
        "train.steps": 10**9,
        "train.device": args.device or "auto",
        "train.sample_every": 0,
        "train.checkpoint_every": 200,
    })
    print(f"unblur demo: training on the 8x8 digits for {args.minutes:g} minutes into {out}/ "
          "(Ctrl-C stops early and keeps the checkpoint)")
    # explicit=None: the demo stays unconditional (the digits' classes are not used), as it was measured.
    summary = train(cfg, out, overwrite=True, report=say)
    sample_args = argparse.Namespace(run=str(out), n=64, sampler=None, steps=None, grid=None, seed=0, batch=64,
                                     overwrite=True,
                                     out=str(out / "samples" / "demo"), device=args.device or "auto", class_=None,
                                     prompt=None, prompt_file=None, negative_prompt=None, image=None, guidance=None)
    run_sample(sample_args)
    unblur = unblur_command()
    print(f"\ndone: {summary['step']} steps. Samples: {out}/samples/demo/grid.png")
    print(f"next: {unblur} sample {out} --n 16 --sampler heun --steps 18")
    if unblur != "unblur":
        print(f"      (or `source {Path(unblur).parent / 'activate'}` first, then `unblur sample {out} ...`)")
    return 0
