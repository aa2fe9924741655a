"""``unblur sample``: draw samples from a trained run."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .common import positive_int


def add_parser(sub) -> None:
    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run", help="run folder (or its model.safetensors)")
    s.add_argument("--n", type=positive_int, default=16, help="number of samples")
    s.add_argument("--sampler", help="ddpm | ddim | euler | euler-ancestral | heun | dpmpp-2m | dpmpp-2m-sde | "
                   "pc-langevin | cold | cold-naive (default: the run's)")
    s.add_argument("--steps", type=positive_int, help="sampler steps (default: the run's)")
    s.add_argument("--grid", help="karras | logsnr | leading | trailing | linspace | ddim | full")
    s.add_argument("--seed", type=int, default=0, help="sample i uses seed + i, whatever the batch")
    s.add_argument("--batch", type=positive_int, default=64, help="samples per forward pass")
    s.add_argument("--out", help="output folder (default: RUN/samples/...)")
    s.add_argument("--device", default="auto")
    s.add_argument("--class", dest="class_", action="append", metavar="NAME|INDEX",
                   help="class to sample (repeatable; each gets --n samples)")
    s.add_argument("--prompt", action="append", metavar="TEXT", help="caption to sample (repeatable; each gets --n)")
    s.add_argument("--prompt-file", metavar="FILE", help="a text file with one prompt per line")
    s.add_argument("--negative-prompt", metavar="TEXT", help="caption to guide away from (instead of the null)")
    s.add_argument("--image", metavar="FILE", help="conditioning image, e.g. a low-resolution input")
    s.add_argument("--guidance", type=float, help="classifier-free guidance scale: 1 = conditional, 0 = "
                   "unconditional (default: cond.guidance for classes and prompts, 1 for an image)")
    s.set_defaults(fn=run_sample)


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompt_file:
        pf = Path(args.prompt_file)
        if not pf.is_file():
            raise ValueError(f"--prompt-file {str(pf)!r} does not exist: give a text file with one prompt per line")
        prompts += [line.strip() for line in pf.read_text(encoding="utf-8").splitlines() if line.strip()]
    return prompts


def run_sample(args) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from ..images import grid_scale, make_grid, save_png, scatter_image, to_pil
    from ..runs import Run
    from ..sampling import nfe

    run = Run.load(args.run, device=args.device)
    plan = run.plan(args.sampler, args.steps, args.grid)
    batches = run.sample(args.n, classes=args.class_ or [], prompts=read_prompts(args),
                         negative_prompt=args.negative_prompt, image=args.image, guidance=args.guidance,
                         sampler=plan.sampler, steps=plan.steps, grid=args.grid, seed=args.seed, batch=args.batch,
                         callback=lambda info: bar.update(1))
    out = Path(args.out) if args.out else Path(args.run) / "samples" / f"{plan.sampler}-{plan.steps}-seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(unit="step", desc=f"sample {plan.sampler} x{plan.steps}", dynamic_ncols=True)
    t0 = time.time()
    chunks, records = [], []
    for b in batches:
        chunks.append(b.x)
        records += b.records
    bar.close()
    x = torch.cat(chunks)
    seconds = time.time() - t0
    if run.is_image:
        arr = ((x.clamp(-1, 1) + 1) / 2).numpy().astype(np.float32)  # (N, C, H, W) in [0, 1]
        np.save(out / "samples.npy", arr)
        for i in range(len(x)):
            to_pil(x[i]).save(out / f"{i:05d}.png")
        save_png(make_grid(x[: min(len(x), 256)], scale=grid_scale(x.shape[-2])), out / "grid.png")
    else:
        np.save(out / "samples.npy", x.numpy().astype(np.float32))  # (N, D) in data units
        save_png(scatter_image(x), out / "scatter.png")
    with (out / "samples.jsonl").open("w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    print(f"wrote {len(x)} samples to {out}/ ({plan.sampler}, {plan.steps} steps, {nfe(plan.sampler, plan.steps)} "
          f"NFE, {seconds:.1f} s)")
    return 0
