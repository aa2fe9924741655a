"""``unblur edit``: img2img, inpainting, outpainting, inversion and interpolation of image files.

One image or a folder (searched recursively) is mirrored path by path into --out; a mask folder
is matched by relative path (any image suffix). Everything is read and checked before anything
is written: a bad mask, an all-black mask, a strength outside (0, 1], an --extend past the
limit or an edit the run cannot do is one line and an empty --out. Each output PNG has a JSON
record beside it (input, mask, method, strength, seed, sampler, steps, context).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from .common import (
    DEVICE_HELP,
    GRID_HELP,
    SAMPLER_HELP,
    add_threads_arg,
    apply_threads,
    nonnegative_float,
    positive_int,
)


def strength_arg(text: str) -> float:
    import argparse

    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1] (1 = from pure noise, small = close to the input), "
                                         f"got {text!r}")
    return v


def add_parser(sub) -> None:
    e = sub.add_parser("edit", help="img2img, inpainting, outpainting, inversion and interpolation of images")
    e.add_argument("run", help="run folder")
    e.add_argument("--input", required=True, help="an image or a folder of images (searched recursively); each is "
                   "resized to the run's size (same aspect ratio)")
    e.add_argument("--out", required=True, help="output folder; outputs keep their input's relative path")
    e.add_argument("--strength", type=strength_arg, help="how far the input is noised before sampling down, in (0, 1] "
                   "(default: 0.75 for img2img, 1 for inpainting and outpainting)")
    e.add_argument("--mask", metavar="PNG|DIR", help="inpainting mask (white = regenerate, black = keep; any mode, "
                   "thresholded at half), or a folder of masks matched to --input by relative path")
    e.add_argument("--mask-box", metavar="X0,Y0,X1,Y1", help="inpaint this box (pixels of the run-sized image; x1, "
                   "y1 exclusive)")
    e.add_argument("--method", default="replace", help="inpainting: replace (fast) | repaint (Lugmayr et al. "
                   "2022: resampling with jumps, ancestral steps)")
    e.add_argument("--jump-length", type=positive_int, default=10, help="repaint: levels jumped back up")
    e.add_argument("--jump-n", type=positive_int, default=10, help="repaint: walks over each jumped stretch")
    e.add_argument("--extend", metavar="L,R,T,B", help="outpaint: pixels to add left, right, top, bottom (or one "
                   "number for all); the canvas may be up to 4 times the run's size on each side")
    e.add_argument("--invert", action="store_true", help="invert each image to noise (probability-flow ODE) and "
                   "write its reconstruction and the noise (.npy)")
    e.add_argument("--iterations", type=int, default=5, help="inversion: fixed-point refinements per step (0 = "
                   "plain DDIM inversion)")
    e.add_argument("--interpolate", metavar="IMG2", help="interpolate from --input to this image through their "
                   "inverted noises (write --frames images and a strip)")
    e.add_argument("--frames", type=positive_int, default=8, help="interpolation frames")
    e.add_argument("--n", type=positive_int, default=1, help="outputs per input and per class or prompt "
                   "(variations; output j uses seed + j)")
    e.add_argument("--class", dest="class_", action="append", metavar="NAME|INDEX", help="class (repeatable)")
    e.add_argument("--prompt", action="append", metavar="TEXT", help="caption (repeatable)")
    e.add_argument("--negative-prompt", metavar="TEXT", help="caption to guide away from")
    e.add_argument("--guidance", type=nonnegative_float, help="classifier-free guidance scale")
    e.add_argument("--sampler", help=SAMPLER_HELP)
    e.add_argument("--steps", type=positive_int, help="steps of the full grid (img2img walks strength x steps)")
    e.add_argument("--grid", help=GRID_HELP)
    e.add_argument("--seed", type=int, default=0, help="output j of every input uses seed + j")
    e.add_argument("--overwrite", action="store_true", help="replace outputs already in --out")
    e.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_threads_arg(e)
    e.set_defaults(fn=run_edit)


def _mode(args) -> str:
    masked = bool(args.mask or args.mask_box)
    chosen = [name for name, on in (("mask", masked), ("extend", bool(args.extend)), ("invert", args.invert),
                                    ("interpolate", bool(args.interpolate))) if on]
    if len(chosen) > 1:
        raise ValueError(f"--{chosen[0]} and --{chosen[1]} do not combine: one edit at a time")
    if args.mask and args.mask_box:
        raise ValueError("--mask and --mask-box do not combine: give one")
    if args.method != "replace" and not masked and not args.extend:
        raise ValueError(f"--method {args.method} inpaints: give --mask, --mask-box or --extend")
    return chosen[0] if chosen else "img2img"


def _read(path: Path, run, option: str):
    """(image at the run's size (1, C, H, W), its original (H, W))."""
    from ..images import open_image, read_image

    C, H, W = run.image_shape
    with open_image(path, option=option) as img:
        h, w = img.height, img.width
    if (h, w) != (H, W):
        if abs(h * W - w * H) > max(h, w, H, W):
            raise ValueError(f"{option} {str(path)!r} is {w}x{h} but {run.name} draws {W}x{H} images: crop it to that "
                             "aspect ratio first (or outpaint a run-sized crop with --extend)")
    return read_image(path, channels=C, size=(H, W), option=option)[None], (h, w)


def _mask_for(args, rel: Path, size: tuple[int, int], orig: tuple[int, int]):
    """The mask (1, 1, H, W) of one input at the run's size, or None."""
    import torch.nn.functional as F

    from ..images import IMAGE_EXTENSIONS
    from ..runs.edits import box_mask, check_mask, parse_box, read_mask

    if args.mask_box:
        return check_mask(box_mask(parse_box(args.mask_box), size), name="--mask-box")
    if not args.mask:
        return None
    mpath = Path(args.mask)
    if mpath.is_dir():
        found = [p for p in (mpath / rel).parent.glob(rel.stem + ".*") if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not found:
            raise ValueError(f"--mask folder {str(mpath)!r} has no mask for {str(rel)!r}: give one image of that "
                             "relative path (any image suffix) per input")
        mpath = sorted(found)[0]
    m = read_mask(mpath, orig)
    if orig != tuple(size):
        m = F.interpolate(m.float(), size=tuple(size), mode="nearest") >= 0.5
    return check_mask(m, name=f"--mask {str(mpath)!r}")


def run_edit(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from ..images import list_images, make_grid, save_png, write_image
    from ..runs import Run
    from ..runs.edits import METHODS, parse_extend
    from ..utils import atomic_write_bytes, choice_error

    mode = _mode(args)
    if args.method not in METHODS:
        raise choice_error("--method", args.method, METHODS)
    run = Run.load(args.run, device=args.device)
    if not run.is_image:
        raise ValueError(f"unblur edit works on images; {run.name} makes vectors (use the library's unblur.editing)")
    run.check_edit({"mask": "inpaint", "extend": "outpaint"}.get(mode, mode))
    if args.method == "repaint":
        run.check_edit("repaint")
    root, files = list_images(args.input)
    out = Path(args.out)
    inside = out.resolve() == root.resolve() or root.resolve() in out.resolve().parents
    if (Path(args.input).is_dir() and inside) or any((out / f.relative_to(root)).resolve() == f.resolve()
                                                     for f in files):
        raise ValueError(f"--out {str(out)!r} would write over or among the --input images: choose another --out")
    size = tuple(run.image_shape[-2:])
    extend = parse_extend(args.extend) if args.extend else None
    if mode == "interpolate" and len(files) != 1:
        raise ValueError(f"--interpolate goes from one --input image to another; --input {args.input!r} holds "
                         f"{len(files)} images")
    # 1. Read and check everything before anything is written.
    jobs = []
    for f in files:
        rel = f.relative_to(root)
        x, orig = _read(f, run, "--input")
        jobs.append((rel, f, x, _mask_for(args, rel, size, orig) if mode == "mask" else None))
    other = _read(Path(args.interpolate), run, "--interpolate")[0] if mode == "interpolate" else None
    if extend is not None:
        from ..runs.edits import extend_canvas

        extend_canvas(jobs[0][2], extend, model_size=size)  # the limit, before any work
    run.plan(args.sampler or ("ddpm" if args.method == "repaint" else None), args.steps, args.grid)
    if mode not in ("invert", "interpolate"):
        run.requests(classes=args.class_ or [], prompts=args.prompt or [], negative_prompt=args.negative_prompt,
                     guidance=args.guidance)
    strength = args.strength if args.strength is not None else (0.75 if mode == "img2img" else 1.0)
    kw = dict(classes=args.class_ or [], prompts=args.prompt or [])
    gen = dict(negative_prompt=args.negative_prompt, guidance=args.guidance, sampler=args.sampler, steps=args.steps,
               grid=args.grid, seed=args.seed, n=args.n, strength=strength, method=args.method,
               jump_length=args.jump_length, jump_n=args.jump_n, **kw)
    if mode in ("invert", "interpolate") and (args.sampler or args.negative_prompt or args.guidance is not None):
        raise ValueError("inversion walks the probability-flow ODE (euler) without guidance: drop --sampler, "
                         "--negative-prompt and --guidance")
    planned = {out / rel.with_suffix(".png") for rel, *_ in jobs}
    existing = sorted(p for p in planned if p.exists())
    if existing and not args.overwrite:
        raise ValueError(f"--out {str(out)!r} already holds {existing[0]}: pass --overwrite to replace earlier "
                         "outputs, or choose another --out")
    apply_threads(args)
    run_info = {"run": str(Path(args.run)), "mask": args.mask_box and f"box {args.mask_box}"}

    def write(path: Path, x, record: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(x, path)
        atomic_write_bytes(path.with_suffix(".json"), (json.dumps(record, indent=2) + "\n").encode(), sync=False)

    label = {"mask": "inpaint", "extend": "outpaint"}.get(mode, mode)
    bar = tqdm(jobs, unit="image", desc=f"edit {label}", dynamic_ncols=True)
    made = 0
    for rel, src, x, mask in bar:
        base = {"input": str(src), **run_info}
        if args.mask and mask is not None:
            base["mask"] = str(Path(args.mask) / rel if Path(args.mask).is_dir() else args.mask)
        target = out / rel.with_suffix(".png")
        if mode == "invert":
            inv = run.invert(x, steps=args.steps, grid=args.grid, strength=strength, iterations=args.iterations,
                             **kw)
            inv_rec = {k: v for k, v in inv.records[0].items() if k != "input"}
            rec = {**inv_rec, **base, "noise": target.with_suffix(".noise.npy").name,
                   "reconstruction_max_error": float((inv.reconstruction - x).abs().max())}
            write(target, inv.reconstruction[0], rec)
            buf = io.BytesIO()
            np.save(buf, inv.noise[0].numpy())
            atomic_write_bytes(target.with_suffix(".noise.npy"), buf.getvalue(), sync=False)
            made += 1
            continue
        if mode == "interpolate":
            frames = run.interpolate(x, other, frames=args.frames, steps=args.steps, grid=args.grid,
                                     strength=strength, iterations=args.iterations, **kw)
            for k, fr in enumerate(frames):
                write(target.with_name(f"{target.stem}-frame{k:02d}.png"), fr,
                      {**base, "method": "interpolate", "to": args.interpolate, "frame": k,
                       "t": k / (len(frames) - 1), "strength": strength, "iterations": args.iterations})
            save_png(make_grid(frames, nrow=len(frames)), target.with_name(f"{target.stem}-interpolation.png"))
            made += len(frames)
            continue
        if mode == "extend":
            res = run.outpaint(x, extend, **gen)
        else:
            res = run.edit(x, mask, **gen)
        for j, (y, rec) in enumerate(zip(res.x, res.records)):
            name = target if len(res.x) == 1 else target.with_name(f"{target.stem}-{j}.png")
            rec = {**base, **{k: v for k, v in rec.items() if k not in ("input", "output")}}
            write(name, y, rec)
        made += len(res.x)
    bar.close()
    print(f"wrote {made} image{'s' * (made != 1)} to {out}/ ({label}, strength {strength:g}, {len(jobs)} input(s))")
    return 0

