"""``unblur sample``: draw samples from a trained run."""

from __future__ import annotations

import json
import time
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


def add_parser(sub) -> None:
    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run", nargs="?", help="run folder (or its model.safetensors), or builtin:NAME; with --from-png, "
                   "by default the run the PNG names")
    s.add_argument("--from-png", metavar="FILE", help="make the image in a PNG written by unblur sample or unblur "
                   "serve again, from the settings it carries (bit for bit on the same machine); writes --out FILE.png")
    s.add_argument("--n", type=positive_int, default=16, help="number of samples")
    s.add_argument("--sampler", help=SAMPLER_HELP)
    s.add_argument("--steps", type=positive_int, help="sampler steps (default: the run's)")
    s.add_argument("--grid", help=GRID_HELP)
    s.add_argument("--seed", type=int, default=0, help="sample i uses seed + i, whatever the batch")
    s.add_argument("--batch", type=positive_int, default=64, help="samples per forward pass")
    s.add_argument("--out", help="output folder (default: RUN/samples/SAMPLER-STEPS-seedSEED-HASH, one per request)")
    s.add_argument("--overwrite", action="store_true", help="replace the samples already in --out")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_threads_arg(s)
    s.add_argument("--class", dest="class_", action="append", metavar="NAME|INDEX",
                   help="class to sample (repeatable; each gets --n samples, and grid.png a row). Without it a "
                   "class-conditional run's samples cycle through the classes, one class per row of grid.png when "
                   "--n is a multiple of the class count")
    s.add_argument("--prompt", action="append", metavar="TEXT", help="caption to sample (repeatable; each gets --n)")
    s.add_argument("--prompt-file", metavar="FILE", help="a text file with one prompt per line")
    s.add_argument("--negative-prompt", metavar="TEXT", help="caption to guide away from (instead of the null)")
    s.add_argument("--image", metavar="FILE", help="conditioning image, e.g. a low-resolution input")
    s.add_argument("--guidance", type=nonnegative_float, help="classifier-free guidance scale: 1 = conditional, 0 = "
                   "unconditional (default: cond.guidance for classes and prompts, 1 for an image)")
    u = s.add_argument_group("unCLIP (a decoder trained with --clip ENCODER)")
    u.add_argument("--prior", metavar="RUN", help="a prior (--model prior) of the decoder's encoder: each --prompt "
                   "goes text -> prior -> image embedding -> decoder (--n images per prompt)")
    u.add_argument("--prior-sampler", help="the prior's sampler (default: the prior run's)")
    u.add_argument("--prior-steps", type=positive_int, help="the prior's sampler steps (default: the prior run's)")
    u.add_argument("--prior-guidance", type=nonnegative_float, help="the prior's guidance scale (default: its "
                   "cond.guidance)")
    u.add_argument("--variations-of", nargs="+", metavar="IMAGE", help="decode each image's own embedding with new "
                   "noise: --n variations of each")
    u.add_argument("--interpolate", nargs=2, metavar=("IMAGE1", "IMAGE2"), help="decode --frames embeddings on the "
                   "great circle between two images' embeddings, all with the same noise")
    u.add_argument("--text-diff", nargs=2, metavar=("FROM", "TO"), help="with one --variations-of image: move its "
                   "embedding from caption FROM towards caption TO (--frames steps up to --amount), same noise")
    u.add_argument("--frames", type=positive_int, default=8, help="frames of --interpolate and --text-diff")
    u.add_argument("--amount", type=float, default=0.5, help="--text-diff: how far towards TO (0..1; 0.5 by default)")
    s.set_defaults(fn=run_sample)


UNCLIP_OPTIONS = ("prior", "variations_of", "interpolate", "text_diff")


def unclip_asked(args) -> bool:
    return any(getattr(args, k, None) for k in UNCLIP_OPTIONS)


def unclip_stream(args, run, prompts: list[str], plan, callback):
    """(the chain's checked stream, what the request records) for ``--prior`` / ``--variations-of``
    / ``--interpolate`` / ``--text-diff``: the flags are checked here, the rest by ``Unclip.sample``."""
    import hashlib

    import torch

    from ..images import read_image
    from ..runs import Run
    from ..runs.unclip import Unclip

    if args.class_ or args.image or args.negative_prompt:
        raise ValueError("--class, --image and --negative-prompt do not apply to a decoder of embeddings: drop them")
    asked = [k for k in ("variations_of", "interpolate") if getattr(args, k)] + (["prompt"] if prompts else [])
    if len(asked) != 1:
        given = ', '.join('--' + a.replace('_', '-') for a in asked)
        raise ValueError("give one of --prompt (with --prior), --variations-of IMAGE... or --interpolate IMAGE1 IMAGE2 "
                         f"to a decoder of embeddings (given: {given or 'none'})")
    if prompts and not args.prior:
        encoder = run.data.clip.path if run.data.clip is not None else "ENCODER"
        raise ValueError(f"a decoder of embeddings draws a prompt through a prior: add --prior RUN (a run trained with "
                         f"`unblur train --model prior --clip {encoder}`)")
    if args.text_diff and (not args.variations_of or len(args.variations_of) != 1):
        raise ValueError("--text-diff FROM TO moves one image's embedding: give exactly one --variations-of IMAGE")
    prior = Run.load(args.prior, device=run.device) if args.prior else None
    chain = Unclip(run, prior)
    C, H, W = chain.clip.image_shape

    def read(path: str):
        p = Path(path)
        x = read_image(p, channels=C, size=(H, W), option="--variations-of" if args.variations_of else
                       "--interpolate")[None]
        return x, {"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()[:16]}

    kw = dict(sampler=plan.sampler, steps=plan.steps, grid=plan.grid, guidance=args.guidance, seed=args.seed,
              batch=args.batch, callback=callback)
    record: dict = {}
    if prompts:
        stream = chain.sample(args.n, prompts=prompts, prior_sampler=args.prior_sampler, prior_steps=args.prior_steps,
                              prior_guidance=args.prior_guidance, **kw)
        record["prior"] = {"run": str(Path(args.prior).resolve()), "sampler": args.prior_sampler,
                           "steps": args.prior_steps, "guidance": args.prior_guidance}
    elif args.interpolate:
        (a, ra), (b, rb) = read(args.interpolate[0]), read(args.interpolate[1])
        stream = chain.sample(interpolate=torch.cat([a, b]), names=list(args.interpolate), frames=args.frames, **kw)
        record["interpolate"] = [ra, rb, args.frames]
    else:
        images = [read(p) for p in args.variations_of]
        x = torch.cat([x for x, _ in images])
        if args.text_diff:
            stream = chain.sample(variations_of=x, names=args.variations_of, text_diff=tuple(args.text_diff),
                                  frames=args.frames, amount=args.amount, **kw)
            record["text_diff"] = [images[0][1], *args.text_diff, args.frames, args.amount]
        else:
            stream = chain.sample(args.n, variations_of=x, names=args.variations_of, **kw)
            record["variations_of"] = [r for _, r in images]
    return stream, record


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompt_file:
        pf = Path(args.prompt_file)
        if not pf.is_file():
            raise ValueError(f"--prompt-file {str(pf)!r} does not exist: give a text file with one prompt per line")
        prompts += [line.strip() for line in pf.read_text(encoding="utf-8").splitlines() if line.strip()]
    return prompts


def request_of(args, plan) -> dict:
    """What decides the samples of an ``unblur sample`` call (the batch size does not)."""
    import hashlib

    image = None
    if args.image:
        p = Path(args.image)
        image = {"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else None}
    from ..runs.pretrained import is_builtin

    run = args.run if is_builtin(args.run) else str(Path(args.run).resolve())
    return {"run": run, "n": args.n, "classes": args.class_ or [],
            "prompts": read_prompts(args), "negative_prompt": args.negative_prompt, "image": image,
            "guidance": args.guidance, "sampler": plan.sampler, "steps": plan.steps, "grid": plan.grid,
            "seed": args.seed}


def default_out(args, plan, request: dict) -> Path:
    """RUN/samples/SAMPLER-STEPS-seedSEED-HASH (./samples/NAME/... for builtin:NAME, which lives in
    the package): a short hash of everything that changes the samples, so two different calls
    never share a folder."""
    import hashlib

    from ..runs.pretrained import is_builtin

    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:8]
    base = Path("samples") / args.run.split(":", 1)[1] if is_builtin(args.run) else Path(args.run) / "samples"
    return base / f"{plan.sampler}-{plan.steps}-seed{args.seed}-{key}"


def run_sample(args) -> int:
    from tqdm import tqdm

    from ..runs import Run
    from ..runs.catalog import nfe
    from ..runs.outputs import SampleFolder
    from ..runs.pnginfo import settings_of, text_chunks
    from ..runs.unclip import chain_fields

    if getattr(args, "from_png", None):
        return from_png(args)
    if not args.run:
        raise ValueError("give a run folder (or builtin:NAME) to sample from, or --from-png FILE")
    run = Run.load(args.run, device=args.device)
    plan = run.plan(args.sampler, args.steps, args.grid)
    request = request_of(args, plan)
    kind = "generate"

    def step(info) -> None:  # the sampler's steps move the bar, made once the request is checked
        bar.update(1)

    if unclip_asked(args) or run.data.clip is not None:  # a chain's run: its contexts come from the chain
        if not unclip_asked(args) and not request["prompts"]:
            raise ValueError(f"{run.name} decodes image embeddings: give --prompt with --prior RUN, --variations-of "
                             "IMAGE or --interpolate IMAGE1 IMAGE2")
        stream, extra = unclip_stream(args, run, request["prompts"], plan, step)  # checked before a folder is touched
        request.update(extra)
        kind = "unclip"
    else:
        stream = run.sample(args.n, classes=args.class_ or [], prompts=request["prompts"],
                            negative_prompt=args.negative_prompt, image=args.image, guidance=args.guidance,
                            sampler=plan.sampler, steps=plan.steps, grid=plan.grid, seed=args.seed, batch=args.batch,
                            callback=step)  # checked before a folder is touched
    out = Path(args.out) if args.out else default_out(args, plan, request)
    folder = SampleFolder(out, request, overwrite=args.overwrite)
    again = reproduction(args, request["prompts"], stream.total) if kind == "generate" else {}
    apply_threads(args)  # the request is checked: the work starts
    try:
        batches = stream.starting_at(folder.done)
        bar = tqdm(total=-(-(stream.total - folder.done) // args.batch) * plan.steps, unit="step",
                   desc=f"sample {plan.sampler} x{plan.steps}", dynamic_ncols=True)
        t0, made = time.time(), 0
        try:
            for b in batches:
                folder.write(b, [text_chunks(settings_of(run, r, kind=kind, **again, **chain_fields(r)))
                                 for r in b.records] if run.is_image else None)
                made += len(b.x)
        except KeyboardInterrupt:
            bar.close()
            raise KeyboardInterrupt(f"the {folder.done + made} samples made so far are kept in {out}/; run the "
                                    "same command again to continue") from None
        bar.close()
        picture = folder.finish()
    finally:
        folder.close()
    kept = f"; continued after {folder.done} kept samples" if folder.done else ""
    print(f"wrote {made} samples to {out}/ ({plan.sampler}, {plan.steps} steps, {nfe(plan.sampler, plan.steps)} "
          f"NFE, {time.time() - t0:.1f} s{kept}); {picture.name} shows {folder.shown}")
    return 0


MAX_ASKED = 64  # contexts recorded in each PNG for --from-png; more and it makes the image alone


def reproduction(args, prompts: list[str], total: int) -> dict:
    """What each PNG records beside its own context so that ``--from-png`` remakes its whole batch:
    the request seed, n and batch; that the classes were cycled (no --class on a class run); and
    every asked class and prompt when there were several (the batch mixes them)."""
    out = {"request_seed": args.seed, "n": args.n, "batch": args.batch, "contexts": total // args.n}
    if not args.class_:
        out["cycled"] = True
    if total // args.n > 1 and len(args.class_ or []) + len(prompts) <= MAX_ASKED:
        out["asked"] = {"classes": list(args.class_ or []), "prompts": prompts}
    return out


def from_png(args) -> int:
    """``unblur sample --from-png FILE``: the same request's batch made again, and the image taken."""
    import numpy as np
    from PIL import Image

    from ..images import write_image
    from ..runs import Run
    from ..runs.pnginfo import read_settings, settings_of, text_chunks

    src = Path(args.from_png)
    s = read_settings(src, name=f"--from-png {str(src)}")
    if s.get("kind", "generate") != "generate":
        what = ("unCLIP from embeddings (a prior's draw or an image's), which the PNG does not hold: run the same "
                "unblur sample command again" if s["kind"] == "unclip" else
                f"{s['kind']} of an uploaded image, which the PNG does not hold: use unblur edit / unblur restore "
                "with its settings")
        raise ValueError(f"--from-png {str(src)!r} was made by {what}")
    ref = args.run or s["run"]
    run = Run.load(ref, device=args.device)
    if s.get("model_hash") and run.weights_sha256 != s["model_hash"]:
        raise ValueError(f"--from-png {str(src)!r} was made by {s['run']} with weights sha256 "
                         f"{s['model_hash'][:16]}..., but {ref} has {run.weights_sha256[:16]}...: give the run that "
                         "made it")
    need = ("request_seed", "n", "batch", "index")
    if any(k not in s for k in need):
        raise ValueError(f"--from-png {str(src)!r} lacks {', '.join(k for k in need if k not in s)}: it was written by "
                         "an older unblur")
    index, batch = int(s["index"]), int(s["batch"])
    classes = [s["class"]] if s.get("class") is not None and not s.get("cycled") else []
    prompts = [s["prompt"]] if s.get("prompt") is not None else []
    if s.get("asked"):  # a request of several contexts: the same ones, so the batch is the same
        classes, prompts = s["asked"]["classes"], s["asked"]["prompts"]
    n, seed, start = int(s["n"]), int(s["request_seed"]), (index // batch) * batch
    if s.get("contexts", 1) > 1 and not s.get("asked"):  # too many to record: this image alone
        n, seed, batch, index, start = 1, int(s["seed"]), 1, 0, 0
        print(f"note: {str(src)!r} came from a request of {s['contexts']} contexts, not recorded; it is made "
              "alone, which may differ from it in the last bit")
    stream = run.sample(n, classes=classes, prompts=prompts, negative_prompt=s.get("negative_prompt"),
                        guidance=s.get("guidance"), sampler=s.get("sampler"), steps=s.get("steps"), grid=s.get("grid"),
                        seed=seed, batch=batch, start=start)
    b = next(iter(stream))
    rec = b.records[index - b.start]
    k = index - b.start
    if rec.get("seed") != s.get("seed") or rec.get("class") != s.get("class") or rec.get("prompt") != s.get("prompt"):
        raise ValueError(f"--from-png {str(src)!r}: its settings do not describe one sample of one request (seed "
                         f"{s.get('seed')}, index {s['index']}); it cannot be made again")
    out = Path(args.out) if args.out else src.with_name(src.stem + "-again.png")
    if out.exists() and not args.overwrite and out.resolve() != src.resolve():
        raise ValueError(f"--out {str(out)!r} exists: give another path or --overwrite")
    if out.resolve() == src.resolve():
        raise ValueError(f"--out {str(out)!r} is the PNG being reproduced: give another path")
    keep = {k2: s[k2] for k2 in ("request_seed", "n", "batch", "cycled", "asked", "contexts") if k2 in s}
    write_image(b.x[k], out, text_chunks(settings_of(run, rec, **keep)))
    same = np.array_equal(np.array(Image.open(out)), np.array(Image.open(src)))
    print(f"wrote {out} (seed {rec['seed']}, {rec['sampler']} {rec['steps']} steps): "
          f"{'identical to' if same else 'DIFFERENT from'} {src}'s pixels")
    return 0
