"""``unblur data``: how a folder, a .npy file or a built-in set will be read, without training."""

from __future__ import annotations

from .common import positive_int


def add_parser(sub) -> None:
    d = sub.add_parser("data", help="show how a folder, FILE.npy or builtin:NAME will be read, without training")
    d.add_argument("source", metavar="PATH", help="folder | FILE.npy | builtin:digits | builtin:shapes | "
                   "builtin:toy2d:NAME")
    d.add_argument("--size", type=positive_int, help="image side to read at (default: the data's most common size)")
    d.add_argument("--channels", type=int, choices=(1, 3), help="1 (grayscale) or 3 (RGB); default: from the data")
    d.add_argument("--device", default="auto", help="the device whose model preset to show: auto | cpu | cuda")
    d.set_defaults(fn=run_data)


def run_data(args) -> int:
    """Print the data's summary, the conditioning and the model `unblur train --data PATH` would use."""
    from ..config import Config, apply_overrides
    from ..kinds import preview

    over = {"data.source": args.source, "train.device": args.device}
    if args.size:
        over["data.size"] = str(args.size)
    if args.channels:
        over["data.channels"] = args.channels
    print("\n".join(preview(apply_overrides(Config(), over))))
    sets = "".join(f" --set {k}={v}" for k, v in over.items() if k in ("data.size", "data.channels"))
    print(f"train on it: unblur train --data {args.source} --out RUN{sets}")
    return 0
