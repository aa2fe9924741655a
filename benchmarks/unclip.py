"""Acceptance measurements of the unCLIP chain (contrastive encoder, prior, decoder) on builtin:shapes.

    python benchmarks/unclip.py encoder --minutes 10
    python benchmarks/unclip.py chain --clip-minutes 3 --prior-minutes 1.5 --decoder-minutes 14.7 \
        --picture ../docs/unclip.png

Both train on 10,000 32x32 shape images from which the six (colour, shape) combinations held out
by the text-to-image benchmark (``conditioning.py text``) never appear; every figure is measured
on images or prompts of those held-out combinations only.

* ``encoder``: a contrastive encoder (``model.kind=clip``: the CNN image tower and a projection of
  frozen MiniLM caption features, InfoNCE with a learned temperature) trained for ``--minutes``.
  On ``--n`` held-out images: zero-shot colour accuracy (the nearest of the 6 prompts "a {colour}
  shape") and shape accuracy (the nearest of the 5 prompts "a {shape}"); the same judged jointly
  (the nearest of the 30 prompts "a {colour} {shape}", 24 of which name combinations seen in
  training: a test of composition); text->image retrieval top-1 among those images by their own
  captions (the exact image, and an image of the caption's colour and shape). The same figures on
  images of the seen combinations.
* ``chain``: encoder, prior (``model.kind=prior``: the prior transformer over sqrt(E)-scaled image
  embeddings, x0-prediction, cosine VP, condition dropout 0.1; ``--prior-set model.prior_net=mlp``
  for the residual MLP) and decoder (the text-to-image
  benchmark's U-Net: width 32, one residual block per level, attention in the middle block,
  batch 32, bf16, conditioned on image embeddings with condition dropout 0.1), each trained for
  its own minutes, together the direct model's 19.2 minutes. Then ``--prompts`` held-out prompts
  through prior (dpmpp-2m 20 steps, at each ``--prior-guidance``) and decoder (dpmpp-2m-sde 30
  steps at guidance 3, and dpmpp-2m 20 steps), checked by ``unblur.data.shapes_check``. Then
  variations: ``--variations`` held-out images, ``--per-image`` variations each at decoder
  guidance 3: the fraction that keep the image's colour and shape, and the mean absolute pixel
  distance (in [0, 1] units) between variations of one image and to the image itself. The
  picture (prompts -> samples, an image -> its variations, an interpolation strip) goes to
  ``--picture``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from conditioning import HELD_OUT, prompt_grid

from unblur.config import Config, apply_overrides, parse_set
from unblur.data.shapes import COLOURS, SHAPES, load_shapes, make_items, render
from unblur.data.shapes_check import check_item
from unblur.pipelines.unclip import load_clip
from unblur.training.trainer import Trainer

PRIOR = {"process.kind": "vp", "process.schedule": "cosine", "objective.prediction": "x0", "model.hidden": 256,
         "model.prior_net": "transformer"}


def train(cfg: Config, out: Path, data) -> float:
    t0 = time.time()
    tr = Trainer(cfg, out, overwrite=True, data=data, progress=False)
    summary = tr.run()
    seconds = time.time() - t0
    print(f"{out.name}: {summary['step']} steps in {seconds / 60:.2f} min (stopped by {summary['stopped_by']}), "
          f"last loss {summary.get('loss', float('nan')):.4f}", flush=True)
    return seconds


def images_of(items) -> torch.Tensor:
    px = np.stack([render(it) for it in items])
    return torch.from_numpy(px).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def train_clip(args, out: Path, minutes: float, data) -> float:
    cfg = apply_overrides(Config(), {
        "data.source": "builtin:shapes", "model.kind": "clip", "train.minutes": minutes, "train.steps": 10**9,
        "train.batch_size": args.clip_batch, "train.checkpoint_every": 0, "train.sample_every": 0,
        "train.threads": args.threads, **parse_set(args.clip_set)})
    return train(cfg, out, data)


def zero_shot(enc, zi: torch.Tensor, prompts: list[str]) -> list[int]:
    """Per image embedding, the index of the nearest prompt embedding."""
    return (zi @ enc.embed_texts(prompts).T).argmax(1).tolist()


def encoder_figures(clip_dir: Path, n: int, *, seen: bool = False) -> dict[str, float]:
    """Zero-shot and retrieval figures of an encoder on ``n`` images of the held-out combinations
    (of the seen ones with ``seen``)."""
    enc = load_clip(clip_dir)
    items = make_items(n, seed=2024, **({"exclude": HELD_OUT} if seen else {"only": HELD_OUT}))
    x = images_of(items)
    zi = enc.embed_images(x)
    colours, shapes = list(COLOURS), list(SHAPES)
    true_c = [it.shapes[0].colour for it in items]
    true_s = [it.shapes[0].shape for it in items]
    pc = zero_shot(enc, zi, [f"a {c} shape" for c in colours])  # one attribute at a time
    ps = zero_shot(enc, zi, [f"a {s}" for s in shapes])
    combos = [(c, s) for c in colours for s in shapes]
    pj = zero_shot(enc, zi, [f"a {c} {s}" for c, s in combos])  # both at once: 30 prompts
    zt = enc.embed_texts([it.caption for it in items])
    t2i = (zt @ zi.T).argmax(1).tolist()
    return {"colour": np.mean([colours[p] == c for p, c in zip(pc, true_c)]),
            "shape": np.mean([shapes[p] == s for p, s in zip(ps, true_s)]),
            "joint_colour": np.mean([combos[p][0] == c for p, c in zip(pj, true_c)]),
            "joint_shape": np.mean([combos[p][1] == s for p, s in zip(pj, true_s)]),
            "t2i_exact": np.mean([j == i for i, j in enumerate(t2i)]),
            "t2i_combo": np.mean([(true_c[j], true_s[j]) == (true_c[i], true_s[i]) for i, j in enumerate(t2i)]),
            "pair_cos": float((zi * zt).sum(1).mean())}


ENCODER_HEAD = ("| images | zero-shot colour (\"a {colour} shape\") | zero-shot shape (\"a {shape}\") | joint 30 "
                "prompts \"a {colour} {shape}\": colour / shape | text->image top-1: exact image / right colour and "
                "shape | mean image-caption cosine |\n|---|---|---|---|---|---|")


def encoder_row(name: str, f: dict) -> str:
    return (f"| {name} | {f['colour']:.3f} | {f['shape']:.3f} | {f['joint_colour']:.3f} / {f['joint_shape']:.3f} | "
            f"{f['t2i_exact']:.3f} / {f['t2i_combo']:.3f} | {f['pair_cos']:.3f} |")


def cmd_encoder(args) -> None:
    data = load_shapes(n=args.images, seed=0, exclude=HELD_OUT)
    out = Path(args.runs) / "clip-10min"
    if args.reuse and (out / "model.safetensors").exists():
        last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-2])  # the last training record
        seconds = float(last["time"])
        print(f"reusing {out}: {last['step']} steps")
    else:
        seconds = train_clip(args, out, args.minutes, data)
    print(f"\ncontrastive encoder on builtin:shapes: {seconds / 60:.1f} min CPU training on {len(data)} images; "
          f"{args.n} images each of the held-out combinations {HELD_OUT} and of the seen ones")
    print(ENCODER_HEAD)
    print(encoder_row("held-out combinations", encoder_figures(out, args.n)))
    print(encoder_row("seen combinations", encoder_figures(out, args.n, seen=True)))


def decode(run, z: torch.Tensor, labels, *, guidance: float, sampler: str, steps: int, seed: int = 0,
           shared_seed: bool = False) -> torch.Tensor:
    xs = [b.x.cpu() for b in run.sample(1, embeddings=z, embedding_labels=labels, guidance=guidance, sampler=sampler,
                                        steps=steps, seed=seed, batch=250, shared_seed=shared_seed)]
    return torch.cat(xs)


def score(x: torch.Tensor, items) -> tuple[float, float]:
    res = [check_item(x[i], it) for i, it in enumerate(items)]
    return float(np.mean([r["colour"] for r in res])), float(np.mean([r["shape"] for r in res]))


def cmd_chain(args) -> None:
    from unblur.runs import Run
    from unblur.runs.unclip import Unclip

    data = load_shapes(n=args.images, seed=0, exclude=HELD_OUT)
    root = Path(args.runs)
    clip_dir, prior_dir, dec_dir = root / "chain-clip", root / "chain-prior", root / "chain-decoder"
    t = {}
    if not args.reuse:
        t["encoder"] = train_clip(args, clip_dir, args.clip_minutes, data)
        cfg = apply_overrides(Config(), {
            "data.source": "builtin:shapes", "model.kind": "prior", "cond.clip": str(clip_dir), "cond.dropout": 0.1,
            **PRIOR, "train.minutes": args.prior_minutes, "train.steps": 10**9, "train.batch_size": 256,
            "train.checkpoint_every": 0, "train.sample_every": 0, "train.threads": args.threads,
            **parse_set(args.prior_set)})
        t["prior"] = train(cfg, prior_dir, data)
        cfg = apply_overrides(Config(), {
            "data.source": "builtin:shapes", "cond.clip": str(clip_dir), "cond.dropout": 0.1,
            "model.base_channels": 32, "model.num_res_blocks": 1, "model.attn_resolutions": (),
            "train.minutes": args.decoder_minutes, "train.steps": 10**9, "train.batch_size": 32, "train.bf16": True,
            "train.checkpoint_every": 0, "train.sample_every": 0, "sample.grid_n": 16, "train.threads": args.threads,
            **parse_set(args.decoder_set)})
        t["decoder"] = train(cfg, dec_dir, data)
    f = encoder_figures(clip_dir, 500)
    chain = Unclip(Run.load(dec_dir, device="cpu"), Run.load(prior_dir, device="cpu"))
    items = make_items(args.prompts, seed=12345, only=HELD_OUT)
    prompts = [it.caption for it in items]
    total = sum(t.values()) / 60 if t else float("nan")
    print(f"\nunCLIP chain on builtin:shapes: encoder {t.get('encoder', 0) / 60:.2f} + prior "
          f"{t.get('prior', 0) / 60:.2f} + decoder {t.get('decoder', 0) / 60:.2f} = {total:.2f} min CPU training; "
          f"encoder zero-shot colour {f['colour']:.3f} / shape {f['shape']:.3f} (joint prompts "
          f"{f['joint_colour']:.3f} / {f['joint_shape']:.3f}) on 500 held-out images")
    print(f"{len(items)} prompts of held-out combinations; prior dpmpp-2m 20 steps")
    print("| prior guidance | decoder | decoder guidance | colour accuracy | shape accuracy | prior sample: "
          "zero-shot colour / shape |")
    print("|---|---|---|---|---|---|")
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    zc = chain.clip.embed_texts([f"a {c} {s}" for c, s in combos])
    grid = None
    for pg in args.prior_guidance:
        z, labels = chain.from_prompts(prompts, 1, sampler="dpmpp-2m", steps=20, guidance=pg, seed=0)
        pred = (z @ zc.T).argmax(1).tolist()
        pc = np.mean([combos[p][0] == it.shapes[0].colour for p, it in zip(pred, items)])
        ps = np.mean([combos[p][1] == it.shapes[0].shape for p, it in zip(pred, items)])
        for sampler, steps in (("dpmpp-2m-sde", 30), ("dpmpp-2m", 20)):
            x = decode(chain.decoder, z, labels, guidance=3.0, sampler=sampler, steps=steps)
            c, s = score(x, items)
            print(f"| {pg:g} | {sampler} {steps} steps | 3 | {c:.3f} | {s:.3f} | {pc:.3f} / {ps:.3f} |", flush=True)
            if grid is None:
                grid = x
    # Variations of held-out images.
    vitems = make_items(args.variations, seed=999, only=HELD_OUT)
    src = images_of(vitems)
    z, labels = chain.variations(src)
    k = args.per_image
    zk = z.repeat_interleave(k, 0)
    lk = [lab for lab in labels for _ in range(k)]
    xv = decode(chain.decoder, zk, lk, guidance=3.0, sampler="dpmpp-2m-sde", steps=30, seed=7)
    keep = [check_item(xv[i], vitems[i // k]) for i in range(len(xv))]
    both = np.mean([r["colour"] and r["shape"] for r in keep])
    v01 = (xv.clamp(-1, 1) + 1) / 2
    s01 = (src + 1) / 2
    groups = v01.reshape(len(vitems), k, -1)
    between = float(np.mean([(groups[i, a] - groups[i, b]).abs().mean() for i in range(len(vitems))
                             for a in range(k) for b in range(a + 1, k)]))
    to_src = float((groups - s01.reshape(len(vitems), 1, -1)).abs().mean())
    recon = decode(chain.decoder, z, labels, guidance=3.0, sampler="dpmpp-2m-sde", steps=30, seed=8)
    sc, ss = score(recon, vitems)
    print(f"\nvariations: {len(vitems)} held-out images, {k} variations each (dpmpp-2m-sde 30 steps, guidance 3)")
    print("| keep colour and shape | keep colour | keep shape | mean pixel distance between variations | "
          "to the image |")
    print("|---|---|---|---|---|")
    print(f"| {both:.3f} | {np.mean([r['colour'] for r in keep]):.3f} | {np.mean([r['shape'] for r in keep]):.3f} | "
          f"{between:.3f} | {to_src:.3f} |")
    print(f"(another draw, one per image: colour {sc:.3f}, shape {ss:.3f})")
    if args.picture:
        picture(chain, grid[:12], prompts[:12], src[:3], xv[: 3 * k].reshape(3, k, *xv.shape[1:]), vitems,
                args.picture)


def picture(chain, samples, prompts, src, variations, vitems, path) -> None:
    """Three panels stacked: prompts -> samples; images -> their variations; an interpolation strip."""
    from PIL import Image, ImageDraw

    top = prompt_grid(samples, prompts, cols=6)
    rows = []
    for i in range(len(src)):
        rows.append(torch.cat([src[i : i + 1], variations[i]]))
    cap = [f"held-out image {i}" if j == 0 else "variation" for i in range(len(src)) for j in range(len(rows[0]))]
    mid = prompt_grid(torch.cat(rows), cap, cols=len(rows[0]))
    z, labels = chain.interpolation(src[0:1], src[1:2], 8, names=("image 0", "image 1"))
    strip = decode(chain.decoder, z, labels, guidance=3.0, sampler="dpmpp-2m", steps=20, seed=3, shared_seed=True)
    bot = prompt_grid(torch.cat([src[0:1], strip, src[1:2]]),
                      ["image 0"] + [f"slerp t={i / 7:.2f}" for i in range(8)] + ["image 1"], cols=10)
    titles = ["held-out prompts -> prior (guidance 1) -> decoder (guidance 3)", "held-out images -> their variations",
              "interpolation: slerp between the embeddings of image 0 and image 1, same noise"]
    panels = [top, mid, bot]
    W = max(p.width for p in panels)
    H = sum(p.height + 22 for p in panels)
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(canvas)
    y = 0
    for title, p in zip(titles, panels):
        d.text((6, y + 5), title, fill=(0, 0, 0))
        canvas.paste(p, (0, y + 22))
        y += p.height + 22
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    print(f"picture: {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["encoder", "chain"])
    p.add_argument("--runs", default="/tmp/unblur-bench-unclip")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--minutes", type=float, default=10.0, help="encoder: training minutes")
    p.add_argument("--n", type=int, default=500, help="encoder: held-out images")
    p.add_argument("--clip-batch", type=int, default=256)
    p.add_argument("--clip-minutes", type=float, default=3.0)
    p.add_argument("--prior-minutes", type=float, default=1.5)
    p.add_argument("--decoder-minutes", type=float, default=14.7)
    p.add_argument("--prompts", type=int, default=200)
    p.add_argument("--prior-guidance", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--variations", type=int, default=100)
    p.add_argument("--per-image", type=int, default=4)
    p.add_argument("--picture", default=None)
    p.add_argument("--reuse", action="store_true", help="evaluate the runs in --runs again instead of training")
    for part in ("clip", "prior", "decoder"):
        p.add_argument(f"--{part}-set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    {"encoder": cmd_encoder, "chain": cmd_chain}[args.what](args)


if __name__ == "__main__":
    main()
