"""Latent diffusion on 64x64 ``builtin:shapes``: the autoencoder, training throughput, text-to-image
quality at equal CPU time, and sampling latency, latent against pixel.

    python benchmarks/latent.py ae --minutes 10            # autoencoder f=4, 4 channels: held-out PSNR/SSIM
    python benchmarks/latent.py throughput --seconds 20    # images/s, latent 16x16x4 vs pixel 64x64x3
    python benchmarks/latent.py latency --rounds 3         # 16 images, 20 steps, decode included
    python benchmarks/latent.py text --minutes 40          # equal total CPU time, autoencoder included

* ``ae``: ``unblur train --model autoencoder`` on 64x64 shapes (10,000 images drawn with the
  training seed; 5% held out) for ``--minutes``; the held-out PSNR and SSIM it logs.
* ``throughput``: training steps of the latent U-Net on 16x16x4 latents and of the pixel U-Net
  of the same width and depth on 64x64x3 images, batch ``--batch``, alternated for ``--rounds``
  rounds of ``--seconds`` each; medians and their ratio.
* ``latency``: 16 images at 64x64, dpmpp-2m 20 steps, text-conditioned as in ``text``: the pixel
  U-Net against the latent U-Net plus the autoencoder's decoder, alternated, medians.
* ``text``: text-to-image (MiniLM captions, six held-out (colour, shape) combinations never seen
  in training, as in ``conditioning.py``) at 64x64. Pixel: a U-Net trained for ``--minutes``.
  Latent: the ``ae`` run's minutes counted, then a latent U-Net for the rest. 200 held-out
  prompts at guidance 3, checked by ``unblur.data.shapes_check``; ``--pictures`` draws a grid of
  latent samples.

Runs are kept in ``--runs`` and reused when present.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from conditioning import HELD_OUT

from unblur.config import Config, apply_overrides
from unblur.training.trainer import Trainer
from unblur.utils import read_jsonl, seeded_generators

SIZE = 64
# The autoencoder's loss: the squared error alone (what PSNR measures) learns the colour of the small
# shapes within minutes, where SD's L1 leaves them the palette's mean brown (benchmarks/README.md).
AE_SET = {"autoencoder.rec_loss": "l2", "autoencoder.perceptual": "none"}
UNET = {"model.base_channels": 32, "model.channel_mult": (1, 2, 2), "model.num_res_blocks": 1,
        "model.attn_resolutions": ()}


def ae_config(args) -> Config:
    return apply_overrides(Config(), {
        "model.kind": "autoencoder", "data.source": "builtin:shapes", "data.size": SIZE,
        "autoencoder.downsampling": 4, "autoencoder.latent_channels": 4, "train.minutes": args.ae_minutes,
        "train.steps": 10**9, "train.batch_size": 16, "train.sample_every": 0, "train.checkpoint_every": 500,
        "sample.grid_n": 8, **AE_SET, **dict(kv.split("=", 1) for kv in args.ae_set)})


def get_ae(args) -> tuple[Path, float]:
    """The autoencoder run (trained now unless there) and the minutes it trained."""
    out = Path(args.runs) / "ae"
    if not (out / "model.safetensors").exists():
        tr = Trainer(ae_config(args), out, overwrite=True)
        tr.run()
        tr.close()
    rows = read_jsonl(out / "metrics.jsonl")
    seconds = max((r.get("time", 0) for r in rows), default=args.ae_minutes * 60)
    return out, seconds / 60


def cmd_ae(args) -> None:
    out, minutes = get_ae(args)
    held = [r for r in read_jsonl(out / "metrics.jsonl") if "heldout_psnr" in r]
    last = held[-1]
    print(f"autoencoder f=4, 4 latent channels, 64x64 shapes: {minutes:.1f} min, step {last['step']}")
    print("| held-out PSNR dB | held-out SSIM | scaling factor |")
    print("|---|---|---|")
    scale = last.get("scaling_factor", float("nan"))
    print(f"| {last['heldout_psnr']:.2f} | {last['heldout_ssim']:.4f} | {scale:.4f} |")


def text_config(minutes: float, **over) -> Config:
    return apply_overrides(Config(), {
        "data.source": "builtin:shapes", "data.size": SIZE, "cond.text_encoder": "minilm", "cond.dropout": 0.1,
        "train.minutes": minutes, "train.steps": 10**9, "train.batch_size": 32, "train.sample_every": 0,
        "train.checkpoint_every": 1000, "sample.grid_n": 16, **UNET, **over})


def nets(args):
    """(pixel U-Net, latent U-Net) of the same width and depth, text-conditioned, on the CPU."""
    from unblur.runs import build_net
    from unblur.types import DataInfo

    cfg = text_config(1)
    pix = build_net(cfg, DataInfo(kind="image", shape=(3, SIZE, SIZE), text_dim=384))
    lat = build_net(cfg, DataInfo(kind="image", shape=(4, SIZE // 4, SIZE // 4), text_dim=384))
    return pix, lat


def cmd_throughput(args) -> None:
    from unblur.nets import count_parameters

    pix, lat = nets(args)
    B = args.batch
    text = torch.randn(B, 12, 384)
    mask = torch.ones(B, 12, dtype=torch.bool)
    cases = {"pixel 64x64x3": (pix, torch.randn(B, 3, SIZE, SIZE)),
             "latent 16x16x4": (lat, torch.randn(B, 4, SIZE // 4, SIZE // 4))}
    speeds = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, (net, x) in cases.items():
            opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                out = net(x, torch.rand(B), {"text": text, "text_mask": mask})
                loss = (out - x).square().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n += B
            speeds[name].append(n / (time.perf_counter() - t0))
    print(f"training throughput, batch {B}, {args.rounds} rounds of {args.seconds:g} s alternated (medians)")
    print("| network | parameters | images/s |")
    print("|---|---|---|")
    for name, (net, _) in cases.items():
        print(f"| {name} | {count_parameters(net):,} | {statistics.median(speeds[name]):.1f} |")
    ratio = statistics.median(speeds["latent 16x16x4"]) / statistics.median(speeds["pixel 64x64x3"])
    print(f"| latent / pixel | | {ratio:.1f}x |")


def cmd_latency(args) -> None:
    from unblur.pipelines import load_autoencoder
    from unblur.sampling import generate

    pix, lat = nets(args)
    pix.eval().requires_grad_(False)
    lat.eval().requires_grad_(False)
    out, _ = get_ae(args)
    ae = load_autoencoder(out)
    from unblur.precond import EDMPrecond

    cond = {"text": torch.randn(16, 12, 384), "text_mask": torch.ones(16, 12, dtype=torch.bool)}
    cases = {"pixel 64x64": (EDMPrecond(pix, 0.5), (16, 3, SIZE, SIZE), None),
             "latent 16x16 + decode": (EDMPrecond(lat, 1.0), (16, 4, SIZE // 4, SIZE // 4), ae)}
    times = {k: [] for k in cases}
    from unblur.processes import EDMProcess

    for _ in range(args.rounds):
        for name, (den, shape, dec) in cases.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                x = generate(den, shape, process=EDMProcess(), sampler="dpmpp-2m", steps=20, cond=cond,
                             generator=seeded_generators(range(16)))
                if dec is not None:
                    x = dec.decode(x)
            times[name].append(time.perf_counter() - t0)
    print(f"sampling latency: 16 images at 64x64, dpmpp-2m 20 steps, {args.rounds} rounds alternated (medians)")
    print("| route | seconds |")
    print("|---|---|")
    for name in cases:
        print(f"| {name} | {statistics.median(times[name]):.2f} |")
    ratio = statistics.median(times["pixel 64x64"]) / statistics.median(times["latent 16x16 + decode"])
    print(f"| pixel / latent | {ratio:.1f}x |")


def score(run, items, guidance: float, steps: int = 20) -> tuple[float, float, torch.Tensor]:
    from unblur.data.shapes_check import check_item

    xs = []
    for s in range(0, len(items), 50):
        part = items[s : s + 50]
        for b in run.sample(1, prompts=[it.caption for it in part], guidance=guidance, sampler="dpmpp-2m",
                            steps=steps, seed=s, batch=50):
            xs.append(b.x)
    x = torch.cat(xs)
    res = [check_item(x[i], it) for i, it in enumerate(items)]
    return float(np.mean([r["colour"] for r in res])), float(np.mean([r["shape"] for r in res])), x


def latent_picture(run, items, path: Path, prompts: int = 6, per: int = 6) -> None:
    """Six held-out prompts (one per row, labelled) with six samples each, at guidance 3."""
    from unblur.images import save_png
    from unblur.show import labelled_grid

    chosen = [items[i] for i in range(0, len(items), max(1, len(items) // prompts))][:prompts]
    rows = [next(iter(run.sample(per, prompts=[it.caption], guidance=3.0, sampler="dpmpp-2m", steps=20, seed=7,
                                 batch=per))).x for it in chosen]
    save_png(labelled_grid(torch.cat(rows), per, [it.caption for it in chosen], scale=2), path)


def trained_minutes(out: Path) -> float:
    """Minutes of training in a run folder, over every resumed segment (each logs its own clock)."""
    total, last = 0.0, 0.0
    for r in read_jsonl(out / "metrics.jsonl"):
        if "time" not in r:
            continue
        if r["time"] < last:  # a new segment began
            total += last
        last = r["time"]
    return (total + last) / 60


def cmd_text(args) -> None:
    from unblur.data.shapes import load_shapes, make_items

    ae, ae_minutes = get_ae(args)
    data = load_shapes(n=10000, seed=0, size=SIZE, exclude=HELD_OUT)
    results = {}
    for route, minutes, over in [("latent", args.minutes - ae_minutes, {"data.latent": str(ae)}),
                                 ("pixel", args.minutes, {})]:
        out = Path(args.runs) / f"text-{route}"
        if not (out / "model.safetensors").exists():
            tr = Trainer(text_config(minutes, **over), out, overwrite=True, data=data)
            tr.run()
            tr.close()
        elif minutes - trained_minutes(out) > 0.5:  # a shorter run of the same route: continued to the budget
            tr = Trainer(text_config(minutes - trained_minutes(out), **over), out, resume=True, data=data,
                         explicit={"train.minutes"})
            tr.run()
            tr.close()
        minutes = trained_minutes(out)
        from unblur.runs import Run

        run = Run.load(out, device="cpu")
        items = make_items(args.prompts, seed=12345, only=HELD_OUT)
        c, s, x = score(run, items, 3.0)
        steps = max(r.get("step", 0) for r in read_jsonl(out / "metrics.jsonl"))
        results[route] = (minutes, steps, c, s)
        if route == "latent" and args.pictures:
            latent_picture(run, items, Path(args.pictures) / "latent_shapes_64.png")
    print(f"text-to-image at 64x64, {args.minutes:g} min CPU per route (latent: autoencoder {ae_minutes:.1f} min "
          f"included); {args.prompts} held-out prompts {HELD_OUT}, guidance 3, dpmpp-2m 20 steps")
    print("| route | diffusion minutes | steps | colour accuracy | shape accuracy |")
    print("|---|---|---|---|---|")
    for route, (m, st, c, s) in results.items():
        print(f"| {route} | {m:.1f} | {st} | {c:.3f} | {s:.3f} |")
    (Path(args.runs) / "text.json").write_text(json.dumps(results, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["ae", "throughput", "latency", "text"])
    ap.add_argument("--runs", default="runs/latent")
    ap.add_argument("--ae-minutes", type=float, default=10.0)
    ap.add_argument("--ae-set", action="append", default=[], metavar="KEY=VALUE", help="autoencoder config override")
    ap.add_argument("--minutes", type=float, default=40.0, help="text: total CPU minutes per route")
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pictures", help="folder for the latent sample grid (e.g. docs)")
    args = ap.parse_args()
    {"ae": cmd_ae, "throughput": cmd_throughput, "latency": cmd_latency, "text": cmd_text}[args.what](args)


if __name__ == "__main__":
    main()
