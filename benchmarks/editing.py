"""Editing with trained Gaussian runs: inpainting held-out digits, img2img on shapes, and a picture
per edit kind.

``digits``: an unconditional EDM model trained for ``--minutes`` on 80% of the 8x8 digits (the
split and the digits classifier of ``cold_digits.py``). Held-out digits are inpainted with four
masks (left half, right half, the centre 4x4, a random half of the pixels, drawn per digit) by:
the hole filled with the training mean; ``replace`` with the run's sampler (dpmpp-2m, 20 steps);
``replace`` with ancestral steps at RePaint's NFE; and ``repaint`` (50 steps, jumps 10 x 10,
410 NFE). Reported: the classifier's accuracy on the completions against the true labels, and
the Fréchet distance of the completions to the held-out digits in the classifier's hidden layer
(FD, as FID; 0 for the held-out digits themselves).

``shapes``: an unconditional EDM model on ``builtin:shapes`` (32x32), trained for ``--minutes``;
img2img of held-out shape images at strengths 0.3, 0.5, 0.8 and 1: how often the input's shape
and colour survive (``unblur.data.shapes_check``) against how much the image changes (PSNR to
the input). With ``--pictures DIR`` it also draws img2img, inpainting, outpainting, inversion and
interpolation pictures from the shapes run (and inpainting from the digits run).

Training runs are kept in ``--runs`` and reused when present.

    python benchmarks/editing.py digits --minutes 5
    python benchmarks/editing.py shapes --minutes 10 --pictures docs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from cold_digits import digits_split, features, get_run

from unblur.config import Config, apply_overrides
from unblur.editing import repaint_nfe
from unblur.eval.distances import frechet_distance
from unblur.eval.restoration import psnr
from unblur.images import save_png
from unblur.show import labelled_grid
from unblur.training.trainer import Trainer


def digit_masks(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """(n, 1, 8, 8) bool masks (True = regenerate) of the four kinds."""
    left = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    left[..., :4] = True
    centre = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    centre[..., 2:6, 2:6] = True
    g = torch.Generator().manual_seed(seed)
    rand = torch.stack([torch.randperm(64, generator=g) < 32 for _ in range(n)]).reshape(n, 1, 8, 8)
    return {"left half": left.expand(n, -1, -1, -1), "right half": left.flip(-1).expand(n, -1, -1, -1),
            "centre 4x4": centre.expand(n, -1, -1, -1), "random 50%": rand}


def cmd_digits(args) -> None:
    train, held, clf, acc = digits_split()
    x = held.x
    trainer, secs = get_run(Path(args.runs) / "digits-edm", {"process.kind": "edm", "cond.classes": False},
                            train, args.minutes)
    run = trainer.ema_run()
    print(f"digits EDM run: {trainer.step} steps ({f'trained now in {secs / 60:.1f} min' if secs else 'reused'}); "
          f"{len(x)} held-out digits; classifier accuracy on them {acc(x):.3f}")
    ref = features(clf, x)
    mean = train.x.mean(0, keepdim=True)
    nfe = repaint_nfe(50, 10, 10)
    methods = [
        ("mean fill", None),
        ("replace, dpmpp-2m 20 steps", dict(method="replace", sampler="dpmpp-2m", steps=20)),
        (f"replace, ddpm {nfe} steps", dict(method="replace", sampler="ddpm", steps=nfe)),
        (f"repaint 50 steps, jumps 10x10 ({nfe} NFE)", dict(method="repaint", steps=50, jump_length=10, jump_n=10)),
    ]
    print("\nInpainting held-out digits: classifier accuracy / FD to the held-out digits (lower is better)")
    names = list(digit_masks(1))
    print("| method | " + " | ".join(names) + " | seconds |")
    print("|---|" + "---|" * (len(names) + 1))
    pictures = {}
    for label, kw in methods:
        cells, t0 = [], time.time()
        for name, m in digit_masks(len(x)).items():
            if kw is None:
                z = torch.where(m, mean, x)
            else:
                z = run.edit(x, m, seed=0, batch=len(x), **kw).x
            cells.append(f"{acc(z):.3f} / {frechet_distance(features(clf, z), ref):.2f}")
            pictures[(label, name)] = z[:8]
        print(f"| {label} | " + " | ".join(cells) + f" | {time.time() - t0:.0f} |")
    print("| held-out digits | " + " | ".join(f"{acc(x):.3f} / 0" for _ in names) + " | - |")
    if args.pictures:
        # Rows: input, then per mask kind: the mask, replace (20 steps), replace (410) and repaint.
        rows, labels = [x[:8]], ["held-out digits"]
        for name, m in digit_masks(len(x)).items():
            rows.append(torch.where(m[:8], torch.full_like(x[:8], 0.4), x[:8] * 0.5 - 0.5))
            rows += [pictures[(label, name)] for label, _ in methods[1:]]
            labels += [f"mask: {name}", "replace, 20 steps", f"replace, {nfe} steps", "repaint 10x10"]
        out = Path(args.pictures) / "edit_inpaint_digits.png"
        save_png(labelled_grid(torch.cat(rows), 8, labels, scale=4), out)
        print(f"\npicture: {out} (8 held-out digits; per mask: the mask, replace 20, replace {nfe}, repaint)")


def shapes_run(args) -> Trainer:
    out = Path(args.runs) / "shapes-edm"
    cfg = apply_overrides(Config(), {"data.source": "builtin:shapes", "process.kind": "edm",
                                     "train.minutes": args.minutes, "train.steps": 10**9, "train.sample_every": 0,
                                     "train.checkpoint_every": 1000, "sample.grid_n": 16})
    if (out / "model.safetensors").exists():
        return Trainer(cfg, out, resume=True, progress=False)
    t0 = time.time()
    tr = Trainer(cfg, out, overwrite=True)
    tr.run()
    print(f"trained the shapes run in {(time.time() - t0) / 60:.1f} min")
    return tr


def cmd_shapes(args) -> None:
    from unblur.data.shapes import load_shapes, make_items
    from unblur.data.shapes_check import check_item

    trainer = shapes_run(args)
    run = trainer.ema_run()
    items = make_items(args.n, seed=4242)
    x = load_shapes(n=args.n, seed=4242).x
    print(f"shapes EDM run: {trainer.step} steps; img2img of {len(x)} held-out shape images "
          f"({run.plan().sampler}, {run.plan().steps} steps of the full grid)")
    print("\n| strength | shape kept | colour kept | both | PSNR to the input dB |")
    print("|---|---|---|---|---|")
    results = {}
    for s in args.strengths:
        z = run.edit(x, strength=s, seed=0, batch=100).x
        checks = [check_item(z[i], it) for i, it in enumerate(items)]
        shape = np.mean([c["shape"] for c in checks])
        colour = np.mean([c["colour"] for c in checks])
        both = np.mean([c["shape"] and c["colour"] for c in checks])
        results[s] = z
        print(f"| {s:g} | {shape:.3f} | {colour:.3f} | {both:.3f} | {psnr(z, x).mean():.2f} |")
    checks = [check_item(x[i], it) for i, it in enumerate(items)]
    print(f"| the inputs themselves | {np.mean([c['shape'] for c in checks]):.3f} | "
          f"{np.mean([c['colour'] for c in checks]):.3f} | - | - |")
    if args.pictures:
        shapes_pictures(run, x, results, Path(args.pictures))


def shapes_pictures(run, x: torch.Tensor, results: dict, folder: Path) -> None:
    k = 6
    scale = 4
    # img2img: rows input, then each strength.
    rows = [x[:k]] + [results[s][:k] for s in sorted(results)]
    save_png(labelled_grid(torch.cat(rows), k, ["input"] + [f"strength {s:g}" for s in sorted(results)], scale=scale),
             folder / "edit_img2img.png")
    # inpainting: a centre box regenerated, replace and repaint, 2 variations each.
    m = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    m[..., 8:24, 8:24] = True
    rep = run.edit(x[:k], m, n=1, seed=1).x
    rp = run.edit(x[:k], m, method="repaint", steps=50, jump_length=10, jump_n=10, seed=1).x
    shown = torch.where(m, torch.full_like(x[:k], 0.4), x[:k] * 0.5 - 0.5)
    save_png(labelled_grid(torch.cat([x[:k], shown, rep, rp]), k, ["input", "mask", "replace", "repaint 10x10"],
                           scale=scale), folder / "edit_inpaint.png")
    # outpainting: 32x32 -> 32x64 (16 px left and right), in tiles of 32.
    out = run.outpaint(x[:4], (16, 16, 0, 0), seed=2).x
    canvas = torch.nn.functional.pad(x[:4], (16, 16, 0, 0), value=1.0)
    save_png(labelled_grid(torch.cat([canvas, out]), 4, ["input (32x32)", "outpainted 32x64"], scale=scale),
             folder / "edit_outpaint.png")
    # inversion: input, the inverted noise (shown scaled), reconstruction.
    inv = run.invert(x[:k], steps=50)
    noise = (inv.noise / inv.level).clamp(-2, 2) / 2
    save_png(labelled_grid(torch.cat([x[:k], noise, inv.reconstruction]), k,
                           ["input", "inverted noise", "reconstruction"], scale=scale), folder / "edit_invert.png")
    err = float((inv.reconstruction - x[:k]).abs().max())
    # interpolation: between two pairs of images, 8 frames each.
    f1 = run.interpolate(x[0:1], x[1:2], frames=8, steps=50)
    f2 = run.interpolate(x[2:3], x[3:4], frames=8, steps=50, strength=0.6)
    save_png(labelled_grid(torch.cat([f1, f2]), 8, ["strength 1", "strength 0.6"], scale=scale),
             folder / "edit_interpolate.png")
    print(f"\npictures in {folder}/: edit_img2img.png, edit_inpaint.png, edit_outpaint.png, edit_invert.png "
          f"(largest reconstruction error {err:.4f}), edit_interpolate.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    d = sub.add_parser("digits")
    d.add_argument("--minutes", type=float, default=5.0)
    s = sub.add_parser("shapes")
    s.add_argument("--minutes", type=float, default=10.0)
    s.add_argument("--n", type=int, default=300, help="held-out shape images")
    s.add_argument("--strengths", type=float, nargs="+", default=[0.3, 0.5, 0.8, 1.0])
    for p in (d, s):
        p.add_argument("--runs", default="runs/editing", help="folder of the training runs (reused)")
        p.add_argument("--pictures", help="folder to draw the pictures into (e.g. docs)")
    args = ap.parse_args()
    torch.manual_seed(0)
    {"digits": cmd_digits, "shapes": cmd_shapes}[args.what](args)


if __name__ == "__main__":
    main()
