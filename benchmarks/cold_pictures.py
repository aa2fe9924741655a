"""Pictures of the cold degradations: the forward process across t, and the reverse walk.

For every degradation, ``docs/cold_NAME.png`` shows the forward process x_t = D(x0, t) at
t = 0, 0.2, ..., 1 on a colour photograph (scikit-image's "chelsea", 48 x 72, not square)
and on three 8x8 digits. For each ``--run NAME=RUN`` (a cold run trained on the digits) it
adds the reverse: the improved cold sampler's states x_s from t = 1 down to 0, restoring
held-out digits from D(x0, 1) (or from ``--level``), and generating from the process's
image-free start where it has one, with the clean digit beside its restoration.

    python benchmarks/cold_pictures.py --run blur=runs/cold_digits/blur --run mask=runs/cold_digits/mask
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from unblur.config import Config
from unblur.data import load_data, split
from unblur.processes.cold import COLD_PROCESSES, ColdProcess, build_cold_process
from unblur.sampling.cold import COLD_SAMPLER_FNS, level_grid
from unblur.utils import seeded_generators

LEVELS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def photo(size=(48, 72), which: str = "chelsea") -> torch.Tensor:
    from skimage import data as skdata
    from skimage.transform import resize

    a = resize(getattr(skdata, which)()[: (512 * size[0]) // size[1] if which == "astronaut" else None], size,
               anti_aliasing=True)  # (H, W, 3) in [0, 1]
    return torch.from_numpy(a).permute(2, 0, 1)[None].float() * 2 - 1


def partner(size=(48, 72)) -> torch.Tensor:
    from skimage import data as skdata
    from skimage.transform import resize

    a = resize(skdata.coffee(), size, anti_aliasing=True)
    return torch.from_numpy(a).permute(2, 0, 1)[None].float() * 2 - 1


def show(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, 3) in [0, 1] for matplotlib."""
    a = ((img.detach().float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return np.repeat(a, 3, 2) if a.shape[2] == 1 else a


def process_for(kind: str, others=None, **over):
    from dataclasses import replace

    if kind == "blend":
        return ColdProcess("blend", others=others)
    return build_cold_process(replace(Config().process, kind=kind, **over))


def reverse_rows(run: Path, held: torch.Tensor, level: float, steps: int):
    """[(label, [images...])]: the cold sampler's walk from D(x, level) and, if possible, from the start."""
    from unblur.runs import Run

    r = Run.load(run, device="cpu")
    proc, den = r.process, r.sampling_denoiser()
    rows = []
    x0 = held[:3]
    xt = proc.degrade(x0, level, seeded_generators(range(3)))
    states: list = []
    COLD_SAMPLER_FNS["cold"](den, xt, level_grid(level, steps), process=proc, callback=states.append)
    picks = [xt] + [states[k].x for k in np.linspace(0, len(states) - 1, 5).round().astype(int)[1:]]
    for b in range(3):
        rows.append((f"restore (cold) from t={level:g}", [p[b] for p in picks] + [x0[b]]))
    if proc.can_generate:
        n = 1 if proc.kind == "mask" else 3  # the fully masked start is one image
        x1 = proc.start((n, *r.data.shape), seeded_generators(range(100, 100 + n)))
        states = []
        COLD_SAMPLER_FNS["cold"](den, x1, level_grid(1.0, steps), process=proc, callback=states.append)
        picks = [x1] + [states[k].x for k in np.linspace(0, len(states) - 1, 5).round().astype(int)[1:]]
        for b in range(n):
            rows.append(("generate (cold) from the start", [p[b] for p in picks]))
    return rows


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", default=[], metavar="NAME=RUN", help="a cold run for the reverse")
    ap.add_argument("--level", action="append", default=[], metavar="NAME=T", help="restoration level (default 1)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="docs")
    ap.add_argument("--only", help="comma-separated degradations (default: all)")
    args = ap.parse_args()
    runs = dict(r.split("=", 1) for r in args.run)
    levels = {k: float(v) for k, v in (s.split("=", 1) for s in args.level)}
    torch.set_grad_enabled(False)
    data = load_data("builtin:digits")
    _, held = split(data, 0.2, seed=0)
    digits = held.x[:3]
    cat = photo()
    photo_b = photo(which="astronaut")
    other = partner()
    kinds = args.only.split(",") if args.only else list(COLD_PROCESSES)
    for kind in kinds:
        variants = [("centre", {"mask_kind": "centre"}), ("patches", {"mask_kind": "patches", "mask_patch": 6}),
                    ("fade", {"mask_kind": "fade"})] if kind == "mask" else [("", {})]
        fwd = []  # (label, [images at LEVELS])
        for vname, over in variants:
            if kind == "blur":
                over = {"blur_sigma_max": 6.0}
            if kind == "noise":
                over = {"noise_sigma_max": 1.0}
            proc = process_for(kind, others=other, **over)
            g = torch.Generator().manual_seed(0)
            layer = proc.draw_layer(cat, g) if proc.stochastic else None
            label = f"{kind}{' ' + vname if vname else ''}"
            fwd.append((label, [proc.degrade(cat, t, layer=layer)[0] for t in LEVELS]))
        if kind == "desaturate":  # grey digits do not change: a second photograph instead
            fwd.append(("desaturate", [proc.degrade(photo_b, t)[0] for t in LEVELS]))
            digits_rows = 0
        else:
            digits_rows = 3
        dproc = process_for(kind, others=held.x[3:4], **({"blur_sigma_max": 4.0} if kind == "blur" else {}))
        for b in range(digits_rows):
            layer = dproc.draw_layer(digits[b : b + 1], torch.Generator().manual_seed(b)) if dproc.stochastic else None
            fwd.append((f"{kind} (digits)", [dproc.degrade(digits[b : b + 1], t, layer=layer)[0] for t in LEVELS]))
        rev = reverse_rows(Path(runs[kind]), held.x, levels.get(kind, 1.0), args.steps) if kind in runs else []
        ncols = max(len(LEVELS), max((len(r[1]) for r in rev), default=0))
        nrows = len(fwd) + len(rev)
        fig, axes = plt.subplots(nrows, ncols, figsize=(1.5 * ncols, 1.25 * nrows + 0.6), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for r, (label, imgs) in enumerate(fwd):
            for c, img in enumerate(imgs):
                axes[r, c].imshow(show(img), interpolation="nearest")
                if r == 0:
                    axes[r, c].set_title(f"t = {LEVELS[c]:g}", fontsize=9)
            axes[r, 0].text(-0.1, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
        for k, (label, imgs) in enumerate(rev):
            r = len(fwd) + k
            for c, img in enumerate(imgs):
                axes[r, c].imshow(show(img), interpolation="nearest")
                if k == 0:
                    names = ["x_start"] + [f"step {i}/4" for i in range(1, len(imgs) - 1)]
                    names += ["clean x0" if label.startswith("restore") else "sample"]
                    axes[r, c].set_title(names[c] if c < len(names) else "", fontsize=8)
            axes[r, 0].text(-0.1, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=7)
        title = f"cold diffusion: {kind}. Rows 1-{len(fwd)}: forward x_t = D(x0, t)"
        if rev:
            title += f"; rows {len(fwd) + 1}-{nrows}: reverse walk of a trained restorer (improved sampler)"
        fig.suptitle(title, fontsize=9)
        fig.subplots_adjust(left=0.22, right=0.99, top=1 - 0.5 / (1.25 * nrows + 0.6), bottom=0.01, wspace=0.05,
                            hspace=0.15)
        out = Path(args.out) / f"cold_{kind}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=90)
        plt.close(fig)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
