"""The first hour with your own pictures: a folder of mixed-size colour pictures with class
sub-folders and captions, trained with the defaults, as a new user would.

Makes ``--folder`` (``--n`` pictures, three classes of drawn scenes, 40 to 160 pixels on a side,
landscape and portrait, a same-stem .txt caption each), then runs, through the real command line:

    unblur data FOLDER
    unblur train --data FOLDER --out RUN            # the defaults: no budget, no size, no model
    unblur sample RUN --n 24 --out RUN/walk         # then with --class and --prompt

and prints what each printed, the ETA announced against the time it took, and where the grids are.

    python benchmarks/first_hour.py --folder /tmp/pictures --run /tmp/first-hour
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = {"sunsets": ("orange", "a sun over the sea"), "forests": ("green", "trees on a hill"),
           "nights": ("navy", "a moon in the night sky")}


def make_folder(folder: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        name = list(CLASSES)[i % len(CLASSES)]
        colour, what = CLASSES[name]
        w, h = (int(v) for v in rng.integers(40, 161, 2))
        img = Image.new("RGB", (w, h), colour)
        d = ImageDraw.Draw(img)
        horizon = int(h * rng.uniform(0.4, 0.7))
        d.rectangle([0, horizon, w, h], fill=tuple(int(v) for v in rng.integers(0, 120, 3)))
        r = int(min(w, h) * rng.uniform(0.1, 0.25))
        cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, max(r + 1, horizon)))
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill="yellow" if name != "forests" else "darkgreen")
        out = folder / name / f"{i:04d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        img.save(out)
        out.with_suffix(".txt").write_text(f"{what}, {w}x{h}")


def unblur(*args: str) -> tuple[str, float]:
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "unblur", *args], capture_output=True, text=True)
    text = r.stdout + "\n".join(line for line in r.stderr.replace("\r", "\n").splitlines() if "it/s" not in line)
    if r.returncode:
        raise SystemExit(f"unblur {' '.join(args)} failed ({r.returncode}):\n{text[-3000:]}")
    return text, time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", default="runs/first-hour-pictures")
    ap.add_argument("--run", default="runs/first-hour")
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    folder, run = Path(args.folder), Path(args.run)
    if not folder.exists():
        make_folder(folder, args.n)
    text, _ = unblur("data", str(folder))
    print("$ unblur data", folder, "\n" + text)
    text, seconds = unblur("train", "--data", str(folder), "--out", str(run))
    said = [ln for ln in text.splitlines() if ln.strip() and "/step" not in ln and "step/s" not in ln]
    bars = [ln for ln in text.splitlines() if "/step" in ln or "step/s" in ln]
    print(f"$ unblur train --data {folder} --out {run}   ({seconds / 60:.1f} min)\n" + "\n".join(said))
    print("progress bar, first and last:\n" + "\n".join(bars[:2] + bars[-2:]))
    for extra in ([], ["--class", "sunsets"], ["--prompt", "a moon in the night sky"]):
        out = run / "walk" / ("-".join(extra).strip("-").replace(" ", "_") or "all")
        text, seconds = unblur("sample", str(run), "--n", "24", "--out", str(out), *extra)
        print(f"$ unblur sample {run} --n 24 {' '.join(extra)}   ({seconds:.1f} s)\n{text.strip()}")


if __name__ == "__main__":
    main()
