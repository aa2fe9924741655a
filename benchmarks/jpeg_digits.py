"""JPEG-artefact removal on the 8x8 digits with a cold-diffusion restorer (``--process jpeg``).

A restorer is trained on 80% of the digits for ``--minutes`` (the rest is held out); JPEG
quality falls from 100 at t = 0 to 5 at t = 1 (quality = round(100 - 95 t)). On the held-out
digits, at each level: PSNR and SSIM of the compressed input, of the one-shot restoration
R(D(x, t), t) and of the ``cold`` and ``cold-naive`` walks, and the accuracy of a fixed digits
classifier (as in ``cold_digits.py``) on each. The run is kept in ``--runs`` and reused.

    python benchmarks/jpeg_digits.py --minutes 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from cold_digits import digits_split, get_run

from unblur.eval.restoration import psnr, ssim
from unblur.sampling.cold import restore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/jpeg_digits", help="folder of the training run (reused)")
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget")
    ap.add_argument("--levels", default="0.3,0.5,0.7,1.0", help="comma-separated levels t")
    ap.add_argument("--steps", type=int, default=20, help="cold sampler steps over t in [0, 1]")
    args = ap.parse_args()

    train, held, _, acc = digits_split()
    x = held.x
    trainer, secs = get_run(Path(args.runs) / "jpeg", {"process.kind": "jpeg"}, train, args.minutes)
    run = trainer.ema_run()
    R, proc = run.sampling_denoiser(), run.process
    print(f"restorer: {trainer.step} steps of {trainer.cfg.train.batch_size} in {secs / 60:.1f} min; "
          f"{len(x)} held-out digits; classifier accuracy on them {acc(x):.3f}\n")
    print("| level t (quality) | input PSNR dB / SSIM / acc | one-shot | cold | cold-naive | gain (cold) dB |")
    print("|---|---|---|---|---|---|")
    for t in [float(v) for v in args.levels.split(",")]:
        xt = proc.degrade(x, t)
        cells = []
        with torch.no_grad():
            outs = [xt] + [restore(R, xt, t, process=proc, sampler=s, steps=args.steps)
                           for s in ("one-shot", "cold", "cold-naive")]
        for z in outs:
            cells.append(f"{float(psnr(z, x).mean()):.2f} / {float(ssim(z, x).mean()):.3f} / {acc(z):.3f}")
        gain = float(psnr(outs[2], x).mean() - psnr(xt, x).mean())
        print(f"| {t:g} ({round(100 - 95 * t)}) | " + " | ".join(cells) + f" | {gain:+.2f} |")


if __name__ == "__main__":
    main()
