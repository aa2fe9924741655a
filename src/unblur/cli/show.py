"""``unblur show``: pictures of the forward process, sampling trajectories, the 2-D toy figure
and training curves (the pictures themselves are made by ``unblur.show``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..images import save_png
from .common import DEVICE_HELP, positive_int


def add_parser(sub) -> None:
    from ..show import DEGRADATIONS, PARTNER_DEGRADATIONS

    p = sub.add_parser("show", help="pictures: forward | trajectory | toy | curves | edit (PNG and GIF)")
    p.add_argument("what", choices=["forward", "trajectory", "toy", "curves", "edit"])
    p.add_argument("run", nargs="?", help="run folder (needed by trajectory, toy, curves and edit)")
    p.add_argument("--data", help="forward/toy: data to draw (default: the run's, or builtin:digits)")
    p.add_argument("--process", default="vp", help="forward without a run: " + " | ".join(sorted(DEGRADATIONS)) +
                   " | " + " | ".join(sorted(PARTNER_DEGRADATIONS)) + " (which mixes in other images of --data)")
    p.add_argument("--size", type=positive_int, help="forward: resize the images")
    p.add_argument("--n", type=positive_int, default=4, help="images (rows)")
    p.add_argument("--levels", type=int, default=8, help="columns: levels of t (forward) or steps shown (trajectory)")
    p.add_argument("--points", type=positive_int, default=2000, help="toy: points drawn")
    p.add_argument("--sampler", help="trajectory/toy: sampler (default: the run's)")
    p.add_argument("--steps", type=positive_int, help="trajectory/toy: sampler steps (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="which images are drawn, and the noise of the process")
    p.add_argument("--out", help="PNG path, a GIF written beside it (default: RUN/NAME.png, or forward.png)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    e = p.add_argument_group("edit", "the edit strip: input | mask | x0_hat at --levels steps | output, per image")
    e.add_argument("--input", help="an image or a folder (its first --n images)")
    e.add_argument("--mask", help="inpainting mask picture (white = regenerate), or a folder matched by path")
    e.add_argument("--mask-box", metavar="X0,Y0,X1,Y1", help="inpaint this box")
    e.add_argument("--extend", metavar="L,R,T,B", help="outpaint by these pixels")
    e.add_argument("--strength", type=float, help="edit strength in (0, 1] (default: 0.75 img2img, 1 inpainting)")
    e.add_argument("--method", default="replace", help="replace | repaint")
    e.add_argument("--class", dest="class_", action="append", metavar="NAME|INDEX", help="class")
    e.add_argument("--prompt", action="append", metavar="TEXT", help="caption")
    p.set_defaults(fn=run_show)


def _out(args, default: str) -> Path:
    out = Path(args.out or default)
    if out.suffix.lower() not in (".png",):
        raise ValueError(f"--out must end in .png (a .gif is written beside it where there is one), got {out}")
    return out


def run_show(args) -> int:
    from .. import show

    if args.what == "forward":
        return _forward(args)
    if not args.run:
        raise ValueError(f"show {args.what} needs a run folder: unblur show {args.what} RUN")
    if args.what == "curves":
        records = show.read_metrics(args.run)
        out = _out(args, str(Path(args.run) / "curves.png"))
        save_png(show.curves_figure(records, title=f"{args.run}: {len(records)} records"), out)
        print(f"wrote {out} ({len(records)} records)")
        return 0

    from ..runs import Run

    run = Run.load(args.run, device=args.device)
    if args.what == "edit":
        return _edit(args, run)
    plan = run.plan(args.sampler, args.steps)
    if args.what == "trajectory":
        if not run.is_image:
            raise ValueError("show trajectory draws images; for a 2-D model use `unblur show toy`")
        if args.levels < 2:
            raise ValueError(f"--levels must be >= 2, got {args.levels}")
        infos, _ = show.record_trajectory(run, plan, n=args.n, seed=args.seed)
        strip, frames = show.trajectory_pictures(infos, columns=args.levels)
        out = _out(args, str(Path(args.run) / "trajectory.png"))
        save_png(strip, out)
        show.save_gif(frames, out.with_suffix(".gif"), ms=150)
        print(f"wrote {out} and {out.with_suffix('.gif')} ({plan.sampler}, {plan.steps} steps, {args.n} samples)")
        return 0
    # toy
    if run.data.kind != "vector" or tuple(run.data.shape) != (2,):
        raise ValueError(f"show toy needs a model of 2-D points; this run makes {run.data.kind} data of shape "
                         f"{tuple(run.data.shape)}")
    from ..runs.catalog import load_data

    data = load_data(args.data or run.config.data.source, n=args.points, seed=args.seed)
    infos, samples = show.record_trajectory(run, plan, n=args.points, seed=args.seed)
    img = show.toy_figure(run.sampling_denoiser(), run.process, data.x, samples, device=run.device, seed=args.seed)
    out = _out(args, str(Path(args.run) / "toy.png"))
    save_png(img, out)
    lim = float(np.percentile(data.x.abs().numpy(), 99.5)) * 1.25
    show.save_gif(show.toy_frames(infos, lim), out.with_suffix(".gif"), ms=150)
    print(f"wrote {out} and {out.with_suffix('.gif')} ({plan.sampler}, {plan.steps} steps, {args.points} points)")
    return 0


def _forward(args) -> int:
    """The forward strip of a run's own process (Gaussian or cold) or of a named one."""
    from .. import show
    from ..runs.catalog import load_data
    from ..utils import resolve_device

    device = resolve_device(args.device)
    if args.run:
        from ..runs import Run

        run = Run.load(args.run, device="cpu")
        source = args.data or run.config.data.source
        name = f"the run's {run.process!r}"
        device = torch.device("cpu")
    else:
        show.check_degradation(args.process)  # an unknown name fails before any loading
        source = args.data or "builtin:digits"
        name = args.process
    if args.levels < 2:
        raise ValueError(f"--levels must be >= 2, got {args.levels}")
    if args.run and not args.data and args.size is None:
        from ..runs.catalog import load_training_data

        data = load_training_data(run.config)  # the run's own data, as it was trained
    else:
        data = load_data(source, size=args.size)
    if data.kind != "image":
        raise ValueError(f"show forward draws images; {source!r} holds vectors (use `unblur show toy` for 2-D data)")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))
    x0 = data.x[order[: args.n]]
    if args.run:
        degrade = show.process_degrade(run.process, seed=args.seed)
    else:  # blend mixes in the other images of the data (all of them if every one is shown)
        partners = data.x[order[args.n :]] if len(data) > args.n else data.x
        degrade = show.get_degrade(args.process, device, partners=partners)
    if args.run and tuple(x0.shape[1:]) != tuple(run.image_shape):
        raise ValueError(f"the run degrades images of shape {tuple(run.image_shape)}, but {source!r} holds "
                         f"{tuple(x0.shape[1:])}: give --data with images of the run's size, or --size")
    ts = np.linspace(0.0, 1.0, args.levels).tolist()
    img = show.forward_strip(x0.to(device), degrade, ts)
    out = _out(args, "forward.png")
    save_png(img, out)
    frames = [show.forward_frame(x0.to(device), degrade, t) for t in np.linspace(0, 1, 30).tolist()]
    show.save_gif(frames, out.with_suffix(".gif"), ms=100)
    print(f"wrote {out} and {out.with_suffix('.gif')} ({name}, {len(ts)} levels of t)")
    return 0


def _edit(args, run) -> int:
    """The edit strip of up to --n images of --input (inpainting with --mask/--mask-box,
    outpainting with --extend, img2img otherwise) and a GIF of the x0_hat estimates."""
    from .. import show
    from ..images import list_images, make_grid
    from ..runs.edits import parse_extend
    from ..types import StepInfo
    from .edit import _mask_for, _read, strength_arg

    if not args.input:
        raise ValueError("show edit needs --input IMG|DIR: the images to edit")
    if not run.is_image:
        raise ValueError(f"show edit draws images; {run.name} makes vectors")
    if args.levels < 1:
        raise ValueError(f"--levels must be >= 1, got {args.levels}")
    strength = strength_arg(str(args.strength)) if args.strength is not None else None
    root, files = list_images(args.input)
    size = tuple(run.image_shape[-2:])
    xs, masks = [], []
    for f in files[: args.n]:
        x, orig = _read(f, run, "--input")
        xs.append(x)
        masks.append(_mask_for(args, f.relative_to(root), size, orig))
    x = torch.cat(xs)
    mask = None if masks[0] is None else torch.cat(masks)
    walks: list[list[StepInfo]] = []  # Run.edit walks the images one by one

    def keep(info: StepInfo) -> None:
        if info.step == 0:
            walks.append([])
        walks[-1].append(StepInfo(info.step, info.total, info.x.float().cpu(), info.sigma.cpu(),
                                  info.sigma_next.cpu(), info.x0_hat.float().cpu()))

    kw = dict(classes=args.class_ or [], prompts=args.prompt or [], sampler=args.sampler, steps=args.steps,
              seed=args.seed, method=args.method, callback=keep)
    if args.extend:
        from ..runs.edits import extend_canvas

        res = run.outpaint(x, parse_extend(args.extend), strength=strength or 1.0, **kw)
        x, mask = extend_canvas(x, parse_extend(args.extend), model_size=size)
        what = "outpaint"
    else:
        res = run.edit(x, mask, strength=strength or (1.0 if mask is not None else 0.75), **kw)
        what = "inpaint" if mask is not None else "img2img"
    infos = [StepInfo(steps[0].step, steps[0].total, torch.cat([s.x for s in steps]), steps[0].sigma,
                      steps[0].sigma_next, torch.cat([s.x0_hat for s in steps])) for steps in zip(*walks)]
    strip = show.edit_strip(x, mask, infos, res.x, columns=args.levels)
    out = _out(args, str(Path(args.run) / "edit.png"))
    save_png(strip, out)
    frames = [make_grid(i.x0_hat.clamp(-1, 1), scale=show.grid_scale(x.shape[-2])) for i in infos]
    show.save_gif(frames, out.with_suffix(".gif"), ms=150)
    print(f"wrote {out} and {out.with_suffix('.gif')} ({what}, {len(x)} images, {len(infos)} steps)")
    return 0
