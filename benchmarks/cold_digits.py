"""Cold diffusion on the 8x8 digits: deblurring, generation by blur, and inpainting.

Two restorers are trained on 80% of the digits (the rest is held out): one for ``blur`` and one
for ``mask`` (a centre square). Then, on the held-out digits and with a fixed digits
classifier (scikit-learn's ``MLPClassifier`` trained on the same 80% of real digits; it stands
in for a shipped feature network):

* deblurring at the largest blur (t = 1): PSNR / SSIM of the degraded input, of one-shot
  restoration R(D(x, 1), 1), and of the ``cold`` and ``cold-naive`` walks; the classifier's
  accuracy on each and the Fréchet distance of its hidden features to the training digits;
* generation by blur from both fitted starts (``process.blur_start`` blurred and means): the
  classifier's mean top-class probability and the entropy of its predicted-class histogram
  (ln 10 = 2.303 is uniform over the digits);
* inpainting from t = 0.5 (the centre 4x4 square masked): PSNR on the visible pixels, PSNR on
  the whole image, and the classifier's accuracy on the completions.

Training runs are kept in ``--runs`` and reused when present.

    python benchmarks/cold_digits.py --minutes 8 --mask-minutes 4
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from unblur.config import Config, apply_overrides, parse_set
from unblur.data import load_data, split
from unblur.eval.distances import frechet_distance
from unblur.eval.restoration import psnr, ssim
from unblur.guidance import clip_x0
from unblur.sampling.cold import generate_cold, restore
from unblur.training.trainer import Trainer
from unblur.utils import seeded_generators


def classifier(x_train: torch.Tensor, y_train: torch.Tensor):
    from sklearn.neural_network import MLPClassifier

    x = ((x_train.reshape(len(x_train), -1) + 1) / 2).numpy()
    return MLPClassifier(hidden_layer_sizes=(128,), max_iter=800, random_state=0).fit(x, y_train.numpy())


def probs(clf, x: torch.Tensor) -> np.ndarray:
    return clf.predict_proba(((x.clamp(-1, 1).reshape(len(x), -1) + 1) / 2).numpy())


def features(clf, x: torch.Tensor) -> torch.Tensor:
    """The classifier's hidden layer (ReLU), the feature space of the Fréchet distances."""
    a = ((x.clamp(-1, 1).reshape(len(x), -1) + 1) / 2).numpy()
    return torch.from_numpy(np.maximum(a @ clf.coefs_[0] + clf.intercepts_[0], 0))


def recognisability(clf, x: torch.Tensor) -> tuple[float, float]:
    p = probs(clf, x)
    q = np.bincount(p.argmax(1), minlength=10) / len(p)
    return float(p.max(1).mean()), float(-sum(v * math.log(v) for v in q if v > 0))


def digits_split():
    """(train 80%, held-out 20%, the digits classifier fitted on train, accuracy(images) on the
    held-out labels): the split and the measure every digits benchmark here shares."""
    data = load_data("builtin:digits")
    train, held = split(data, 0.2, seed=0)
    clf = classifier(train.x, train.labels)
    y = held.labels.numpy()
    return train, held, clf, lambda z: float((probs(clf, z).argmax(1) == y).mean())


def get_run(out: Path, overrides: dict, data, minutes: float):
    """Train into ``out`` unless a finished run is there; return the Trainer (EMA restorer, process)."""
    cfg = apply_overrides(Config(), {"data.source": "builtin:digits", "train.sample_every": 0,
                                     "train.checkpoint_every": 1000, "sample.grid_n": 64,
                                     "train.minutes": minutes, "train.steps": 10**9, **overrides})
    done = (out / "model.safetensors").exists()
    t0 = time.time()
    if done:
        trainer = Trainer(cfg, out, resume=True, data=data, progress=False)
    else:
        trainer = Trainer(cfg, out, overwrite=True, data=data, progress=True)
        trainer.run()
    return trainer, (0.0 if done else time.time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/cold_digits", help="folder of the two training runs (reused)")
    ap.add_argument("--minutes", type=float, default=8.0, help="blur training budget")
    ap.add_argument("--mask-minutes", type=float, default=4.0, help="mask training budget")
    ap.add_argument("--blur-sigma", type=float, default=4.0, help="process.blur_sigma_max (pixels)")
    ap.add_argument("--steps", type=int, default=20, help="cold sampler steps over t in [0, 1]")
    ap.add_argument("--n", type=int, default=1000, help="generated samples per sampler and start")
    ap.add_argument("--dropout", type=float, default=0.0,
                    help="blur restorer: dropout in the residual blocks (0.1 measured worse on held-out digits)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="blur run: any other config override, as `unblur train --set` takes it (repeatable)")
    args = ap.parse_args()

    train, held, clf, acc = digits_split()
    x = held.x
    runs = Path(args.runs)

    print("digits classifier: scikit-learn MLPClassifier(128) on the 80% training split of the real 8x8 digits "
          f"(held-out accuracy {acc(x):.3f}); it stands in for a shipped digits feature network\n")

    # -- deblurring and generation by blur ---------------------------------------------------
    trainer, secs = get_run(runs / "blur", {"process.kind": "blur", "process.blur_sigma_max": args.blur_sigma,
                                            "model.dropout": args.dropout, **parse_set(args.set)},
                            train, args.minutes)
    R, proc = clip_x0(trainer.ema_denoiser()), trainer.process  # clamped to [-1, 1], as `unblur restore` does
    print(f"blur run: {trainer.step} steps ({f'trained now in {secs:.0f} s' if secs else 'reused'}), "
          f"sigma_max {proc.blur_sigma_max} px, {args.steps} sampler steps; {len(x)} held-out digits\n")
    xt = proc.degrade(x, 1.0)
    rows = [("degraded input D(x, 1)", xt),
            ("one-shot R(D(x, 1), 1)", restore(R, xt, 1.0, process=proc, sampler="one-shot")),
            ("cold-naive (Algorithm 1)", restore(R, xt, 1.0, process=proc, sampler="cold-naive", steps=args.steps)),
            ("cold (Algorithm 2)", restore(R, xt, 1.0, process=proc, sampler="cold", steps=args.steps))]
    print("Deblurring at the largest blur (t = 1), held-out digits; FD: Fréchet distance to the training digits "
          "in the classifier's hidden layer (realism, as FID)")
    print(f"| {'images':<28} | PSNR dB | gain dB | SSIM  | classifier accuracy | FD    |")
    print(f"|{'-' * 30}|---------|---------|-------|---------------------|-------|")
    base = psnr(xt, x).mean()
    ref = features(clf, train.x)
    for label, z in rows:
        p = psnr(z, x).mean()
        fd = frechet_distance(features(clf, z), ref)
        print(f"| {label:<28} | {p:7.2f} | {p - base:+7.2f} | {ssim(z, x).mean():.3f} | {acc(z):19.3f} | {fd:5.2f} |")
    print(f"| {'clean':<28} |       - |       - | 1.000 | {acc(x):19.3f} | "
          f"{frechet_distance(features(clf, x), ref):5.2f} |\n")

    print("Deblurring across levels (steps per unit level): PSNR dB / classifier accuracy")
    print("| level | one-shot        | cold-naive 20   | cold 10         | cold 20         | cold 50         |")
    print("|-------|-----------------|-----------------|-----------------|-----------------|-----------------|")
    for level in (0.5, 0.75, 1.0):
        xl = proc.degrade(x, level)
        cells = []
        for sampler, steps in (("one-shot", 1), ("cold-naive", 20), ("cold", 10), ("cold", 20), ("cold", 50)):
            z = restore(R, xl, level, process=proc, sampler=sampler, steps=steps)
            cells.append(f"{psnr(z, x).mean():5.2f} / {acc(z):.3f}")
        print(f"| {level:5.2f} | " + " | ".join(f"{c:<15}" for c in cells) + " |")
    print()

    print(f"Generation by blur, {args.n} samples from each start (ln 10 = {math.log(10):.3f}): blurred = a "
          "mixture fitted to the fully blurred digits (the default), means = a mixture fitted to their mean "
          "intensity, a flat image (Bansal et al.); both plus the fitted symmetry-breaking noise")
    print("| start   | sampler    | steps | mean top-class prob | class entropy |")
    print("|---------|------------|-------|---------------------|---------------|")
    for start in ("blurred", "means"):
        for steps in sorted({args.steps, 50, 100}):
            for sampler in ("cold", "cold-naive"):
                s = generate_cold(R, (args.n, 1, 8, 8), process=replace(proc, blur_start=start), sampler=sampler,
                                  steps=steps, generator=seeded_generators(range(args.n)))
                top, ent = recognisability(clf, s)
                print(f"| {start:<7} | {sampler:<10} | {steps:5d} | {top:19.3f} | {ent:13.3f} |")
    top, ent = recognisability(clf, x)
    print(f"| {'real held-out digits':<28} |     - | {top:19.3f} | {ent:13.3f} |\n")

    # -- inpainting ---------------------------------------------------------------------------
    trainer, secs = get_run(runs / "mask", {"process.kind": "mask", "process.mask_kind": "centre"}, train,
                            args.mask_minutes)
    R, proc = clip_x0(trainer.ema_denoiser()), trainer.process
    level = 0.5
    m = proc.mask(torch.tensor([level]), (8, 8))  # (1, 1, 8, 8) masked fraction
    visible = (m == 0).float()
    print(f"mask run: {trainer.step} steps ({f'trained now in {secs:.0f} s' if secs else 'reused'}); "
          f"inpainting at t = {level}: the centre {int(m.sum())} of 64 pixels masked")
    xt = proc.degrade(x, level)
    print("| images                     | PSNR visible dB | PSNR all dB | classifier accuracy |")
    print("|----------------------------|-----------------|-------------|---------------------|")
    for label, z in [("masked input", xt),
                     ("one-shot R(x_t, t)", restore(R, xt, level, process=proc, sampler="one-shot")),
                     ("cold (Algorithm 2)", restore(R, xt, level, process=proc, sampler="cold", steps=args.steps))]:
        pv = psnr(z, x, mask=visible)
        pv_txt = "lossless" if np.isinf(pv).all() else ">100" if (pv > 100).all() else f"{pv.mean():.2f}"
        print(f"| {label:<26} | {pv_txt:>15} | {psnr(z, x).mean():11.2f} | {acc(z):19.3f} |")
    print(f"| {'clean':<26} |               - |           - | {acc(x):19.3f} |")


if __name__ == "__main__":
    main()
