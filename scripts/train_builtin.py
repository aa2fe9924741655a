"""Train the small runs shipped inside the package (``builtin:digits``, ``builtin:shapes``,
``builtin:blur``), measure them, and write them to ``src/unblur/pretrained/NAME/``.

    python scripts/train_builtin.py digits            # train, measure, write the shipped run
    python scripts/train_builtin.py all
    python scripts/train_builtin.py digits --short    # the shortened schedule only: print its figure

Each run is trained for a fixed number of steps from a fixed seed (so the same command on the
same machine gives the same weights), then its EMA weights are stored in bfloat16 with, in the
model file's metadata under ``builtin``: the command, the seed, the steps, the figures measured
here on the shipped weights, and the figure of the shortened schedule (``--short``: the first
``SHORT_STEPS`` steps of the same run, whose mean training loss over its last logged steps a
test compares against a fresh run of this script).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from unblur.config import Config, apply_overrides
from unblur.runs import Run, load_model, save_model
from unblur.runs.pretrained import BUILTIN_RUNS, ROOT
from unblur.training.trainer import Trainer
from unblur.utils import read_jsonl

SHORT_STEPS = 60
SHORT_LOG_EVERY = 5
SHORT_TAIL = 6  # logged losses averaged for the short figure
SHORT_TOLERANCE = 0.10  # relative: a rerun on another CPU differs only in float rounding

CONFIGS = {
    "digits": {  # class-conditional 8x8 digits
        "data.source": "builtin:digits", "cond.classes": True, "cond.dropout": 0.1, "train.steps": 3000,
        "train.batch_size": 128, "model.base_channels": 32, "sample.grid_n": 100,
    },
    "shapes": {  # text-to-image, 32x32 shapes with MiniLM captions
        "data.source": "builtin:shapes", "cond.text_encoder": "minilm", "cond.dropout": 0.1, "train.steps": 4000,
        "train.batch_size": 32, "train.bf16": True, "model.base_channels": 32, "model.num_res_blocks": 1,
        "model.attn_resolutions": (), "sample.sampler": "dpmpp-2m-sde", "sample.steps": 30, "sample.grid_n": 16,
    },
    "blur": {  # cold-diffusion deblurring of the digits
        "data.source": "builtin:digits", "process.kind": "blur", "train.steps": 1500, "train.batch_size": 128,
        "model.base_channels": 32, "sample.grid_n": 64,
    },
}
COMMON = {"train.seed": 0, "train.minutes": None, "train.sample_every": 0, "train.checkpoint_every": 0,
          "train.device": "cpu", "train.threads": 2}


def config(name: str, *, short: bool) -> Config:
    over = {**CONFIGS[name], **COMMON}
    if short:
        over.update({"train.steps": SHORT_STEPS, "train.log_every": SHORT_LOG_EVERY})
    return apply_overrides(Config(), over)


def train(name: str, out: Path, *, short: bool) -> Path:
    tr = Trainer(config(name, short=short), out, overwrite=True, progress=not short)
    tr.run()
    tr.close()
    return out


def short_figure(folder: Path) -> float:
    """The mean training loss over the last ``SHORT_TAIL`` logged steps of a short run."""
    losses = [r["loss"] for r in read_jsonl(folder / "metrics.jsonl") if "loss" in r]
    return float(statistics.fmean(losses[-SHORT_TAIL:]))


def measure(name: str, run: Run) -> dict:
    """The figures of a shipped run (see the README's "Built-in runs")."""
    torch.manual_seed(0)
    if name == "digits":
        from unblur.eval.features import digits_classifier

        clf = digits_classifier("cpu")
        want = torch.arange(10).repeat_interleave(50)
        xs = [b.x for b in run.sample(50, classes=list(range(10)), guidance=3.0, sampler="dpmpp-2m", steps=20,
                                      seed=0, batch=250)]
        with torch.no_grad():
            pred = clf(torch.cat(xs)).argmax(1)
        return {"class_agreement_g3": round(float((pred == want).float().mean()), 4),
                "how": "shipped digits classifier on 500 samples (50 per class), guidance 3, dpmpp-2m 20 steps"}
    if name == "shapes":
        import numpy as np

        from unblur.data.shapes import make_items
        from unblur.data.shapes_check import check_item

        items = make_items(100, seed=12345)
        xs = [b.x for b in run.sample(1, prompts=[it.caption for it in items], guidance=3.0, seed=0, batch=50)]
        x = torch.cat(xs)
        res = [check_item(x[i], it) for i, it in enumerate(items)]
        return {"colour_accuracy_g3": round(float(np.mean([r["colour"] for r in res])), 4),
                "shape_accuracy_g3": round(float(np.mean([r["shape"] for r in res])), 4),
                "how": "100 random captions, guidance 3, the run's sampler (dpmpp-2m-sde, 30 steps), shapes checker"}
    if name == "blur":
        from unblur.data import load_data

        x0 = load_data("builtin:digits").x[-200:]
        t = torch.full((len(x0),), 0.7)
        x_t = run.process.degrade(x0, t)
        y, _ = run.restore(x_t, 0.7)

        def psnr(a, b):
            return float((10 * torch.log10(4.0 / (a - b).square().flatten(1).mean(1))).mean())

        return {"psnr_blurred_t07": round(psnr(x_t, x0), 2), "psnr_restored_t07": round(psnr(y.clamp(-1, 1), x0), 2),
                "how": "the last 200 digits blurred to t = 0.7, restored with the cold sampler at the known level"}
    raise ValueError(name)


def ship(name: str, folder: Path, figures: dict, short: float, seconds: float) -> Path:
    """Write the run's EMA weights in bfloat16, with its provenance, to the package."""
    state, cfg, info = load_model(folder / "model.safetensors")
    state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
    meta = {"command": f"python scripts/train_builtin.py {name}", "seed": cfg.train.seed,
            "steps": cfg.train.steps, "train_seconds": round(seconds, 1), "figures": figures,
            "short": {"steps": SHORT_STEPS, "log_every": SHORT_LOG_EVERY, "tail": SHORT_TAIL,
                      "mean_loss": round(short, 6), "tolerance": SHORT_TOLERANCE},
            "weights": "EMA, bfloat16", "description": BUILTIN_RUNS[name]}
    dest = ROOT / name
    dest.mkdir(parents=True, exist_ok=True)
    save_model(dest / "model.safetensors", state, cfg, info, step=cfg.train.steps,
               extra={"builtin": json.dumps(meta)})
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", choices=[*BUILTIN_RUNS, "all"])
    p.add_argument("--short", action="store_true", help="only the shortened schedule: print its figure as JSON")
    p.add_argument("--work", help="folder for the training runs (default: a temporary one)")
    args = p.parse_args(argv)
    names = list(BUILTIN_RUNS) if args.name == "all" else [args.name]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="unblur-builtin-"))
    try:
        for name in names:
            s = short_figure(train(name, work / f"{name}-short", short=True))
            if args.short:
                print(json.dumps({"name": name, "steps": SHORT_STEPS, "mean_loss": s}))
                continue
            t0 = time.time()
            folder = train(name, work / name, short=False)
            seconds = time.time() - t0
            figures = measure(name, Run.load(folder, device="cpu"))
            dest = ship(name, folder, figures, s, seconds)
            size = (dest / "model.safetensors").stat().st_size
            print(f"{name}: {seconds / 60:.1f} min, {size / 2**20:.2f} MiB -> {dest}; {json.dumps(figures)}; "
                  f"short loss {s:.5f}", file=sys.stderr)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
