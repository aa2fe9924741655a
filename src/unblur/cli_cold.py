"""``unblur restore`` and ``unblur degrade``: cold diffusion on image files.

Both take one image or a folder (searched recursively) and mirror it: each output keeps its
input's path relative to the input folder, and its name.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def list_images(path: str | Path) -> tuple[Path, list[Path]]:
    """(root, image files): a single image is its own root's only file; a folder is searched recursively."""
    from .data.folder import IMAGE_EXTENSIONS, _list_files, _no_images_message

    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            exts = " ".join(sorted(IMAGE_EXTENSIONS))
            raise ValueError(f"{str(path)!r} is not an image file (expected one of {exts})")
        return path.parent, [path]
    if path.is_dir():
        files, others = _list_files(path)
        if not files:
            raise ValueError(_no_images_message(path, others))
        return path, files
    raise ValueError(f"--input {str(path)!r} does not exist: give an image file or a folder of images")


def read_image(path: Path, *, channels: int | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
    """One image file as (C, H, W) in [-1, 1]; converted to ``channels`` and resized to ``size`` (H, W) if given."""
    from .data.folder import _flatten

    try:
        with Image.open(path) as im:
            img = _flatten(im)
            img.load()
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file
        raise ValueError(f"cannot read image {str(path)!r}: {e}") from None
    if channels is not None:
        img = img.convert("L" if channels == 1 else "RGB")
    if size is not None and (img.height, img.width) != tuple(size):
        img = img.resize((size[1], size[0]), Image.BICUBIC)
    a = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))


def write_image(x: torch.Tensor, path: Path) -> None:
    from .images import to_pil

    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(x).save(path)


def cmd_degrade(args) -> int:
    from tqdm import tqdm

    from .config import Config, apply_overrides, parse_set
    from .processes.cold import COLD_PROCESSES, build_cold_process
    from .utils import choice_error

    if args.process not in COLD_PROCESSES:
        raise choice_error("cold process", args.process, COLD_PROCESSES)
    if not 0 <= args.level <= 1:
        raise ValueError(f"--level must lie in [0, 1], got {args.level}")
    over = {"process.kind": args.process, **parse_set(args.set)}
    if args.blend_data:
        over["process.blend_data"] = args.blend_data
    p = apply_overrides(Config(), over).process
    root, files = list_images(args.input)
    out = Path(args.out)
    processes: dict = {}
    for i, f in enumerate(tqdm(files, unit="img", desc=f"degrade {args.process} t={args.level}")):
        x = read_image(f)[None]  # (1, C, H, W)
        shape = tuple(x.shape[1:])
        if shape not in processes:
            processes[shape] = build_cold_process(p, shape=shape, for_model=False)
        proc = processes[shape]
        gen = torch.Generator().manual_seed(args.seed + i) if args.process in ("noise", "blend") else None
        write_image(proc.degrade(x, args.level, gen)[0], out / f.relative_to(root))
    print(f"wrote {len(files)} degraded images ({args.process}, level {args.level}) to {out}/")
    return 0


def cmd_restore(args) -> int:
    with torch.no_grad():
        return _restore(args)


def _restore(args) -> int:
    from tqdm import tqdm

    from .cli import load_run
    from .guidance import clip_x0
    from .processes.cold import ColdProcess
    from .sampling.cold import estimate_level, restore

    cfg, info, net, process, denoiser, dev = load_run(args.run, args.device)
    if not isinstance(process, ColdProcess):
        raise ValueError(f"run {args.run!r} was trained with the Gaussian process {cfg.process.kind!r}; "
                         "restore needs a cold-diffusion run (unblur train --process blur, ...)")
    if args.level is not None and args.estimate_level:
        raise ValueError("give either --level or --estimate-level, not both")
    if args.level is not None and not 0 <= args.level <= 1:
        raise ValueError(f"--level must lie in [0, 1], got {args.level}")
    denoiser = clip_x0(denoiser) if cfg.sample.clip else denoiser
    C, H, W = info["shape"]
    root, files = list_images(args.input)
    ref_root = Path(args.reference) if args.reference else None
    if ref_root is not None and not ref_root.is_dir():
        raise ValueError(f"--reference {str(ref_root)!r} is not a folder of clean images")
    out = Path(args.out)
    sampler = args.sampler or "cold"
    steps = args.steps or cfg.sample.steps
    records = []
    bar = tqdm(total=len(files), unit="img", desc=f"restore {process.kind}")
    for start in range(0, len(files), args.batch):
        chunk = files[start : start + args.batch]
        x = torch.stack([read_image(f, channels=C, size=(H, W)) for f in chunk]).to(dev)
        if args.level is not None:
            level = torch.full((len(x),), float(args.level), dtype=torch.float64)
        else:
            level = estimate_level(denoiser, x, process=process)
        x_hat = restore(denoiser, x, level, process=process, sampler=sampler, steps=steps,
                        generator=torch.Generator(dev).manual_seed(args.seed))
        for f, xi, xh, lv in zip(chunk, x, x_hat, level.tolist()):
            rel = f.relative_to(root)
            write_image(xh, out / rel)
            rec = {"file": str(rel), "level": lv}
            if ref_root is not None:
                from .eval.restoration import psnr, ssim

                ref_path = ref_root / rel
                if not ref_path.is_file():
                    raise ValueError(f"--reference has no clean image for {str(rel)!r} (looked for {str(ref_path)!r})")
                ref = read_image(ref_path, channels=C, size=(H, W))[None].to(dev)
                rec["psnr"] = float(psnr(xh[None], ref)[0])
                rec["psnr_input"] = float(psnr(xi[None], ref)[0])
                if min(H, W) >= 3:
                    rec["ssim"] = float(ssim(xh[None], ref)[0])
                    rec["ssim_input"] = float(ssim(xi[None], ref)[0])
            records.append(rec)
        bar.update(len(chunk))
    bar.close()
    (out / "restore.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    msg = f"restored {len(records)} images to {out}/ ({sampler}, {steps} steps per unit level"
    msg += f", mean level {np.mean([r['level'] for r in records]):.3f})"
    print(msg)
    if ref_root is not None:
        for key in ("psnr", "ssim"):
            if key in records[0]:
                a, b = np.mean([r[key] for r in records]), np.mean([r[key + "_input"] for r in records])
                print(f"{key.upper()}: restored {a:.3f}, degraded input {b:.3f} (against {ref_root}/)")
    return 0


def add_commands(sub) -> None:
    """Register ``restore`` and ``degrade`` on the ``unblur`` sub-command parser."""
    r = sub.add_parser("restore", help="restore degraded images with a cold-diffusion run")
    r.add_argument("run", help="run folder of a cold-diffusion model (unblur train --process blur, ...)")
    r.add_argument("--input", required=True, help="an image or a folder of images (searched recursively)")
    r.add_argument("--out", required=True, help="output folder; each image keeps its relative path and name")
    r.add_argument("--level", type=float, help="degradation level t in [0, 1] of every input")
    r.add_argument("--estimate-level", action="store_true",
                   help="estimate each image's level (the default when --level is not given)")
    r.add_argument("--reference", help="folder of the clean images (same relative paths): report PSNR and SSIM")
    r.add_argument("--sampler", help="cold (default) | cold-naive | one-shot")
    r.add_argument("--steps", type=int, help="sampler steps for a level of 1 (default: the run's)")
    r.add_argument("--batch", type=int, default=64, help="images per forward pass")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto")
    r.set_defaults(fn=cmd_restore)

    d = sub.add_parser("degrade", help="write degraded copies of images (cold-diffusion degradations)")
    d.add_argument("--process", required=True, help="blur | pixelate | mask | desaturate | snow | blend | noise")
    d.add_argument("--level", type=float, required=True, help="degradation level t in [0, 1]")
    d.add_argument("--input", required=True, help="an image or a folder of images (searched recursively)")
    d.add_argument("--out", required=True, help="output folder; each image keeps its relative path and name")
    d.add_argument("--blend-data", help="blend: the second data set whose images are mixed in")
    d.add_argument("--seed", type=int, default=0, help="noise and blend: image i uses seed + i")
    d.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="a degradation option, e.g. --set process.blur_sigma_max=4 (repeatable)")
    d.set_defaults(fn=cmd_degrade)


__all__ = ["add_commands", "argparse", "cmd_degrade", "cmd_restore", "list_images", "read_image"]
