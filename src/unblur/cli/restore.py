"""``unblur restore`` and ``unblur degrade``: cold diffusion on image files.

Both take one image or a folder (searched recursively) and mirror it: each output keeps its
input's path relative to the input folder, and its name. Each image keeps its own size (a
restorer runs on any size: ``Run.restore``), and its channels must be the run's.
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import DEVICE_HELP, add_config_args, add_threads_arg, apply_threads, positive_int


def add_parser(sub) -> None:
    from ..runs.catalog import COLD_SAMPLERS, DEGRADATIONS

    by_default = {c.restore_sampler: [n for n, d in DEGRADATIONS.items() if d.restore_sampler == c.restore_sampler]
                  for c in DEGRADATIONS.values()}  # restore sampler -> the degradations restored with it by default
    # Argument declarations look alike across commands (same shape, other names): kept as plain argparse.
    r = sub.add_parser("restore", help="restore degraded images with a cold-diffusion run, each at its own size")
    r.add_argument("run", help="run folder of a cold-diffusion model (unblur train --process blur, ...)")
    r.add_argument("--input", required=True, help="an image or a folder of images (searched recursively), each "
                   "restored at its own size (large ones in overlapping tiles); their channels must be the run's")
    r.add_argument("--out", required=True, help="output folder; each image keeps its relative path and name")
    r.add_argument("--level", type=float, help="degradation level t in [0, 1] of every input")
    r.add_argument("--estimate-level", action="store_true",
                   help="estimate each image's level (the default when --level is not given)")
    r.add_argument("--reference", help="folder of the clean images (same relative paths), each compared at its "
                   "restored image's size: report PSNR and SSIM")
    r.add_argument("--sampler", help=" | ".join((*COLD_SAMPLERS, "one-shot")) + " (default: the degradation's: "
                   + "; ".join(f"{s} for {', '.join(names)}" for s, names in by_default.items()) + ")")
    r.add_argument("--steps", type=positive_int, help="sampler steps for a level of 1 (default: the run's)")
    r.add_argument("--batch", type=positive_int, default=64,
                   help="images per forward pass (images of different sizes go in different batches)")
    r.add_argument("--seed", type=int, default=0, help="seed of random degradations' layers (snow, noise)")
    r.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_threads_arg(r)
    r.add_argument("--in-place", action="store_true", help="allow --out to be --input or in it (replaces inputs)")
    r.set_defaults(fn=run_restore)

    d = sub.add_parser("degrade", help="write degraded copies of images (cold-diffusion degradations)")
    d.add_argument("--process", required=True, help=" | ".join(DEGRADATIONS))
    d.add_argument("--level", type=float, required=True, help="degradation level t in [0, 1]")
    d.add_argument("--input", required=True, help="an image or a folder of images (searched recursively)")
    d.add_argument("--out", required=True, help="output folder; each image keeps its relative path and name")
    d.add_argument("--blend-data", help="blend: the second data set whose images are mixed in")
    d.add_argument("--seed", type=int, default=0, help="random degradations: image i uses seed + i")
    d.add_argument("--in-place", action="store_true", help="allow --out to be --input or in it (replaces inputs)")
    add_config_args(d)
    d.set_defaults(fn=run_degrade, config=None)


def check_out(root: Path, files: list[Path], out: Path, in_place: bool) -> None:
    """Refuse an --out that would overwrite the inputs (the folder itself, inside it, or one of the
    files), unless --in-place says so."""
    if in_place:
        return
    o, r = out.resolve(), root.resolve()
    clash = o == r or r in o.parents or any((out / f.relative_to(root)).resolve() == f.resolve() for f in files)
    if clash:
        raise ValueError(f"--out {str(out)!r} would overwrite the images of --input (it is the input folder or lies "
                         "inside it): choose another --out, or pass --in-place to replace the inputs")


def _check_level(level: float | None) -> None:
    if level is not None and not 0 <= level <= 1:
        raise ValueError(f"--level must lie in [0, 1], got {level}")


def run_degrade(args) -> int:
    import torch
    from tqdm import tqdm

    from ..images import list_images, read_image, write_image
    from ..runs import build_process
    from ..runs.catalog import COLD_PROCESSES
    from ..runs.lock import acquire
    from ..types import DataInfo
    from ..utils import choice_error
    from .common import resolve_config

    if args.process not in COLD_PROCESSES:
        raise choice_error("cold process", args.process, COLD_PROCESSES)
    _check_level(args.level)
    cfg, _ = resolve_config(args)
    root, files = list_images(args.input)
    out = Path(args.out)
    check_out(root, files, out, args.in_place)
    lock = acquire(out, "unblur degrade")
    processes: dict = {}
    for i, f in enumerate(tqdm(files, unit="img", desc=f"degrade {args.process} t={args.level}")):
        x = read_image(f, option="--input")[None]  # (1, C, H, W)
        shape = tuple(x.shape[1:])
        if shape not in processes:  # built per image shape (blend loads its partner images at it)
            processes[shape] = build_process(cfg, DataInfo(kind="image", shape=shape))
        proc = processes[shape]
        gen = torch.Generator().manual_seed(args.seed + i)
        write_image(proc.degrade(x, args.level, gen if proc.stochastic else None)[0], out / f.relative_to(root))
    lock.release()
    print(f"wrote {len(files)} degraded images ({args.process}, level {args.level}) to {out}/")
    return 0


def run_restore(args) -> int:
    from tqdm import tqdm

    from ..images import list_images, read_image
    from ..runs import Run
    from ..runs.lock import folder_lock

    if args.level is not None and args.estimate_level:
        raise ValueError("give either --level or --estimate-level, not both")
    _check_level(args.level)
    run = Run.load(args.run, device=args.device)
    run.check_restorable(run.image_shape)  # a Gaussian run is refused before any file is read
    root, files = list_images(args.input)
    ref_root = Path(args.reference) if args.reference else None
    if ref_root is not None and not ref_root.is_dir():
        raise ValueError(f"--reference {str(ref_root)!r} is not a folder of clean images")
    out = Path(args.out)
    check_out(root, files, out, args.in_place)
    job = _RestoreJob(run, args, root, out, ref_root)
    apply_threads(args)  # the request is checked: the work starts
    with folder_lock(out, "unblur restore"):
        (out / "restore.jsonl").unlink(missing_ok=True)
        bar = tqdm(total=len(files), unit="img", desc=f"restore {run.process.kind}")
        pending: dict[tuple[int, ...], list] = {}  # image shape -> [(file, image)]: a batch holds one size
        for f in files:
            x = read_image(f, option="--input")  # (C, H, W) at the file's own size and channels
            run.check_restorable(x.shape, what=str(f))
            pending.setdefault(tuple(x.shape), []).append((f, x))
            if sum(map(len, pending.values())) >= args.batch:  # at most --batch images held
                bar.update(job.restore(pending.pop(max(pending, key=lambda k: len(pending[k])))))
        for group in pending.values():
            bar.update(job.restore(group))
        bar.close()
    print("\n".join(job.summary()))
    return 0


class _RestoreJob:
    """What ``unblur restore`` does with each group of same-sized images: restore, write, compare, record."""

    def __init__(self, run, args, root: Path, out: Path, ref_root: Path | None):
        self.run, self.args, self.root, self.out, self.ref_root = run, args, root, out, ref_root
        self.sampler = args.sampler or run.process.restore_sampler
        self.steps = args.steps or run.config.sample.steps
        self.records: list[dict] = []

    def restore(self, group: list) -> int:
        """Restore one group of images of one shape, write them and their records; the group's size."""
        import torch

        from ..images import write_image

        x = torch.stack([xi for _, xi in group]).to(self.run.device)  # (B, C, H, W)
        x_hat, level = self.run.restore(x, self.args.level, sampler=self.sampler, steps=self.steps,
                                        seed=self.args.seed)
        records = []
        for (f, _), xi, xh, lv in zip(group, x, x_hat, level.tolist()):
            rel = f.relative_to(self.root)
            write_image(xh, self.out / rel)
            rec = {"file": str(rel), "level": lv}
            if self.ref_root is not None:
                rec.update(_compare(xi, xh, _reference(self.ref_root, rel, tuple(xh.shape)).to(xh.device)))
            records.append(rec)
        with (self.out / "restore.jsonl").open("a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in records))
        self.records += records
        return len(group)

    def summary(self) -> list[str]:
        """The closing lines: where the images went, and mean PSNR / SSIM against --reference.

        An image identical to its reference has an infinite PSNR: the mean is over the finite
        values, and the identical images are counted apart."""
        import numpy as np

        recs = self.records
        lines = [f"restored {len(recs)} images to {self.out}/ ({self.sampler}, {self.steps} steps per unit level, "
                 f"mean level {np.mean([r['level'] for r in recs]):.3f})"]
        for key in ("psnr", "ssim") if self.ref_root is not None else ():
            if key not in recs[0]:
                continue
            parts = []
            for name, field in (("restored", key), ("degraded input", key + "_input")):
                values = np.array([r[field] for r in recs], dtype=float)
                finite, same = values[np.isfinite(values)], int(np.isinf(values).sum())
                if not len(finite):
                    parts.append(f"{name} inf (all {same} identical to the reference)")
                else:
                    parts.append(f"{name} {finite.mean():.3f}" + (f" (mean of {len(finite)}; {same} identical to "
                                                                  "the reference, inf)" if same else ""))
            lines.append(f"{key.upper()}: {', '.join(parts)} (against {self.ref_root}/)")
        return lines


def _reference(ref_root: Path, rel: Path, shape: tuple[int, int, int]):
    """The clean image of ``rel``, read at the restored image's shape (C, H, W)."""
    from ..images import read_image

    ref_path = ref_root / rel
    if not ref_path.is_file():
        raise ValueError(f"--reference has no clean image for {str(rel)!r} (looked for {str(ref_path)!r})")
    return read_image(ref_path, channels=shape[0], size=shape[1:], option="--reference")


def _compare(x_in, x_hat, ref) -> dict:
    """PSNR (and SSIM for images of at least 3x3) of the restored and the degraded image against the clean one."""
    from ..eval.restoration import psnr, ssim

    rec = {"psnr": float(psnr(x_hat[None], ref[None])[0]), "psnr_input": float(psnr(x_in[None], ref[None])[0])}
    if min(ref.shape[-2:]) >= 3:
        rec["ssim"] = float(ssim(x_hat[None], ref[None])[0])
        rec["ssim_input"] = float(ssim(x_in[None], ref[None])[0])
    return rec
