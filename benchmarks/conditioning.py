"""Acceptance measurements of conditioning: classes, super-resolution, text-to-image.

    python benchmarks/conditioning.py classes  --minutes 8     # class-conditional digits
    python benchmarks/conditioning.py superres --minutes 8     # 4x super-resolution on digits
    python benchmarks/conditioning.py text     --minutes 19 --bf16    # MiniLM captions on builtin:shapes

* ``classes``: a U-Net on the 8x8 digits with class labels and condition dropout 0.1, trained for
  ``--minutes`` on the CPU; then ``--per-class`` samples of every class at guidance 0, 1 and 3.
  A scikit-learn logistic-regression classifier trained on the real digits' training split
  (75%; its accuracy on the other 25% is printed) says which digit each sample shows; the
  table gives how often it agrees with the class asked for.
* ``superres``: the digits upsampled to 16x16 are the high-resolution images; their 4x4 area
  averages, resized back bicubically, are the condition. Trained on the training split; on the
  held-out split, the PSNR against the true 16x16 image of one sample per input (and of the
  mean of ``--draws`` samples) beside bicubic upsampling of the 4x4 input.
* ``text``: builtin:shapes (32x32) with captions through the default MiniLM encoder; six
  (colour, shape) combinations never appear in training. A small U-Net (``--width`` 32, one
  residual block per level, attention in the middle block only) trains on batches of 32.
  200 held-out prompts drawn from those combinations (every phrasing) are sampled with
  ``--sampler`` (dpmpp-2m-sde, 30 steps) at guidance 0, 1, 3 and 5 and checked by
  ``unblur.data.shapes_check``: colour and shape accuracy. At guidance 3, 200 prompts of seen
  combinations tell composition apart from plain undertraining, another 200 held-out prompts
  show the spread, and dpmpp-2m with 20 steps gives the deterministic sampler's figure. A grid
  of prompts and samples is written to ``--grid``. ``--bf16`` trains under bfloat16 autocast
  (about 1.7x the steps on an AVX-512 CPU); ``--reuse`` evaluates the run in ``--out`` again.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from unblur.conditioning import make_lowres, null_cond
from unblur.config import Config, apply_overrides, parse_set
from unblur.data import load_data, split
from unblur.training.trainer import Trainer
from unblur.utils import seeded_generators


def train(cfg: Config, out: Path, data=None) -> tuple[Trainer, float]:
    t0 = time.time()
    tr = Trainer(cfg, out, overwrite=True, data=data)
    summary = tr.run()
    seconds = time.time() - t0
    print(f"trained {summary['step']} steps in {seconds / 60:.1f} min (stopped by {summary['stopped_by']}), "
          f"last loss {summary.get('loss', float('nan')):.4f}")
    return tr, seconds


def sample(tr: Trainer, cond, n: int, guidance: float, *, sampler: str = "dpmpp-2m", steps: int = 20, seed: int = 0,
           batch: int = 250):
    """Samples (n, C, H, W) in [-1, 1] of the run's EMA network for a context, at a guidance scale."""
    run = tr.ema_run()
    plan = run.plan(sampler, steps)
    out = []
    for s in range(0, n, batch):
        c = {k: v[s : s + batch] for k, v in cond.items()}
        b = len(next(iter(c.values())))
        gens = seeded_generators(range(seed + s, seed + s + b))
        out.append(run.generate(b, plan=plan, cond=c, uncond=null_cond(c, tr.conditioner.num_classes),
                                guidance=guidance, generator=gens).cpu())
    return torch.cat(out)


def cmd_classes(args) -> None:
    from sklearn.linear_model import LogisticRegression

    data = load_data("builtin:digits")
    tr_d, te_d = split(data, 0.25, seed=0)
    clf = LogisticRegression(max_iter=3000).fit(((tr_d.x.reshape(len(tr_d), -1) + 1) / 2).numpy(), tr_d.labels.numpy())
    acc = clf.score(((te_d.x.reshape(len(te_d), -1) + 1) / 2).numpy(), te_d.labels.numpy())
    print(f"classifier: logistic regression on {len(tr_d)} real training digits; held-out accuracy {acc:.3f}")
    cfg = apply_overrides(Config(), {
        "data.source": "builtin:digits", "cond.classes": True, "cond.dropout": 0.1,
        "train.minutes": args.minutes, "train.steps": args.steps or 10**9, "train.sample_every": 0,
        "train.checkpoint_every": 0, "sample.grid_n": 100, "train.threads": args.threads,
    })
    tr, seconds = train(cfg, Path(args.out) / "classes")
    want = torch.arange(10).repeat_interleave(args.per_class)
    rows = []
    for w in args.guidance:
        t0 = time.time()
        x = sample(tr, {"class": want}, len(want), w)
        pred = clf.predict(((x.reshape(len(x), -1).clamp(-1, 1) + 1) / 2).numpy())
        agree = float((pred == want.numpy()).mean())
        rows.append((w, agree, time.time() - t0))
    print(f"\nclass-conditional digits: {seconds / 60:.1f} min CPU training, {args.per_class} samples per class, "
          "dpmpp-2m 20 steps")
    print("| guidance | classifier agrees with the requested class |")
    print("|---|---|")
    for w, agree, _ in rows:
        print(f"| {w:g} | {agree:.3f} |")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def cmd_superres(args) -> None:
    data = load_data("builtin:digits", size=16)
    tr_d, te_d = split(data, 0.25, seed=0)
    cfg = apply_overrides(Config(), {
        "data.source": "builtin:digits", "data.size": "16", "cond.image": "superres", "cond.superres_factor": 4,
        "cond.dropout": 0.1, "train.minutes": args.minutes, "train.steps": args.steps or 10**9,
        "train.sample_every": 0, "train.checkpoint_every": 0, "sample.grid_n": 64, "train.threads": args.threads,
    })
    tr, seconds = train(cfg, Path(args.out) / "superres", data=tr_d)
    hi = te_d.x[: args.n]
    low = make_lowres(hi, 4)  # area average to 4x4, then bicubic back to 16x16
    draws = []
    for k in range(args.draws):
        draws.append(sample(tr, {"image": low}, len(hi), 1.0, seed=1000 * k))
    x = draws[0]
    print(f"\n4x super-resolution on digits (4x4 -> 16x16): {seconds / 60:.1f} min CPU training, {len(hi)} held-out "
          "digits, dpmpp-2m 20 steps")
    print("| method | PSNR (dB), mean over images |")
    print("|---|---|")
    print(f"| bicubic upsampling of the 4x4 input | {psnr(low, hi).mean():.2f} |")
    print(f"| one sample per input | {psnr(x, hi).mean():.2f} |")
    print(f"| mean of {args.draws} samples per input | {psnr(torch.stack(draws).mean(0), hi).mean():.2f} |")


HELD_OUT = [("red", "triangle"), ("green", "circle"), ("blue", "cross"), ("yellow", "square"),
            ("purple", "diamond"), ("orange", "circle")]


def cmd_text(args) -> None:
    from unblur.data.shapes import load_shapes, make_items
    from unblur.data.shapes_check import check_item
    from unblur.images import save_png
    from unblur.text import get_text_encoder

    data = load_shapes(n=args.images, seed=0, exclude=HELD_OUT)
    cfg = apply_overrides(Config(), {
        "data.source": "builtin:shapes", "cond.text_encoder": "minilm", "cond.dropout": 0.1,
        "model.base_channels": args.width, "model.num_res_blocks": args.blocks,
        "train.minutes": args.minutes, "train.steps": args.steps or 10**9,
        "train.sample_every": 0, "train.checkpoint_every": 0, "sample.grid_n": 16, "train.threads": args.threads,
        "train.batch_size": args.batch, "train.bf16": args.bf16,
        # Self- and cross-attention in the middle block only (8x8): 1.3x the images per second of
        # attention at the 8x8 level as well, which buys more steps in the same minutes.
        "model.attn_resolutions": (),
        "train.lr_schedule": args.lr_schedule, **parse_set(args.set),
    })
    out = Path(args.out) / "text"
    if args.reuse and (out / "model.safetensors").exists():
        tr, seconds = Trainer(cfg, out, resume=True, data=data, progress=False), None
        print(f"reusing the run in {out}: {tr.step} steps, batch {tr.cfg.train.batch_size}")
    else:
        tr, seconds = train(cfg, out, data=data)
    items = make_items(args.prompts, seed=12345, only=HELD_OUT)
    enc = get_text_encoder("minilm", max_tokens=cfg.cond.max_tokens)
    feats, mask = enc.encode([it.caption for it in items])
    cond = {"text": feats, "text_mask": mask}
    rows, grids = [], {}
    def score(x, its):
        res = [check_item(x[i], it) for i, it in enumerate(its)]
        return np.mean([r["colour"] for r in res]), np.mean([r["shape"] for r in res])

    for w in args.guidance:
        x = sample(tr, cond, len(items), w, sampler=args.sampler, steps=args.sample_steps)
        rows.append((w, *score(x, items)))
        grids[w] = x
    budget = "reused run" if seconds is None else f"{seconds / 60:.1f} min CPU training"
    print(f"\ntext-to-image on builtin:shapes (MiniLM): {budget}, {tr.step} steps of {tr.cfg.train.batch_size} "
          f"on {len(data)} images; {len(items)} prompts of held-out combinations {HELD_OUT}; "
          f"{args.sampler} {args.sample_steps} steps")
    print("| guidance | colour accuracy | shape accuracy |")
    print("|---|---|---|")
    for w, c, s in rows:
        print(f"| {w:g} | {c:.3f} | {s:.3f} |")
    seen = make_items(args.prompts, seed=54321, exclude=HELD_OUT)
    sf, sm = enc.encode([it.caption for it in seen])
    x = sample(tr, {"text": sf, "text_mask": sm}, len(seen), 3.0, sampler=args.sampler, steps=args.sample_steps)
    print("| 3, combinations seen in training | {:.3f} | {:.3f} |".format(*score(x, seen)))
    other = make_items(args.prompts, seed=777, only=HELD_OUT)
    of, om = enc.encode([it.caption for it in other])
    x = sample(tr, {"text": of, "text_mask": om}, len(other), 3.0, sampler=args.sampler, steps=args.sample_steps)
    print("| 3, another {} held-out prompts | {:.3f} | {:.3f} |".format(len(other), *score(x, other)))
    if args.sampler != "dpmpp-2m":
        x = sample(tr, cond, len(items), 3.0, sampler="dpmpp-2m", steps=20)
        print("| 3, dpmpp-2m 20 steps (deterministic) | {:.3f} | {:.3f} |".format(*score(x, items)))
    if args.grid:
        w = 3.0 if 3.0 in grids else args.guidance[-1]
        save_png(prompt_grid(grids[w][:24], [it.caption for it in items[:24]]), args.grid)
        print(f"grid of the first 24 prompts at guidance {w:g}: {args.grid}")


def prompt_grid(x, captions, cols: int = 6, scale: int = 4):
    """A picture of samples with their prompts written under them."""
    import textwrap

    from PIL import Image, ImageDraw

    from unblur.images import to_pil

    H, W = x.shape[-2:]
    cw, ch = W * scale + 12, H * scale + 44
    rows = -(-len(x) // cols)
    canvas = Image.new("RGB", (cols * cw, rows * ch), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (img, cap) in enumerate(zip(x, captions)):
        r, c = divmod(i, cols)
        canvas.paste(to_pil(img).resize((W * scale, H * scale), Image.NEAREST), (c * cw + 6, r * ch + 4))
        for k, line in enumerate(textwrap.wrap(cap, 22)[:3]):
            draw.text((c * cw + 6, r * ch + H * scale + 6 + 11 * k), line, fill=(0, 0, 0))
    return canvas


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["classes", "superres", "text"])
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--steps", type=int, default=None, help="stop at this many steps instead of the clock")
    p.add_argument("--out", default="/tmp/unblur-bench-cond")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--guidance", type=float, nargs="+", default=None)
    p.add_argument("--n", type=int, default=400, help="superres: held-out images")
    p.add_argument("--draws", type=int, default=4, help="superres: samples per input")
    p.add_argument("--images", type=int, default=10000, help="text: training images")
    p.add_argument("--width", type=int, default=32, help="text: U-Net base channels")
    p.add_argument("--batch", type=int, default=32, help="text: batch size")
    p.add_argument("--prompts", type=int, default=200, help="text: held-out prompts")
    p.add_argument("--blocks", type=int, default=1, help="text: U-Net residual blocks per level")
    p.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"],
                   help="text: learning-rate schedule (cosine decays to 0 at --steps)")
    p.add_argument("--bf16", action="store_true", help="text: train under bfloat16 autocast")
    p.add_argument("--sampler", default="dpmpp-2m-sde", help="text: sampler of the table")
    p.add_argument("--sample-steps", type=int, default=30, help="text: sampler steps")
    p.add_argument("--reuse", action="store_true", help="text: evaluate the run in --out instead of training one")
    p.add_argument("--grid", default=None, help="text: PNG of prompts' samples")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="text: any other config override, as `unblur train --set` takes it (repeatable)")
    args = p.parse_args()
    if args.guidance is None:
        args.guidance = [0.0, 1.0, 3.0] if args.what == "classes" else [0.0, 1.0, 3.0, 5.0]
    torch.set_num_threads(args.threads)
    {"classes": cmd_classes, "superres": cmd_superres, "text": cmd_text}[args.what](args)


if __name__ == "__main__":
    main()
