"""What several commands share: config arguments, positive-number checks, progress bars."""

from __future__ import annotations

import argparse
import math

from ..config import Config


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.toml", help="a TOML file with [data], [model], [train], ... sections")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override one config key, e.g. --set train.lr=2e-4 (repeatable)")


def _number(text: str, cast, ok, want: str):
    try:
        v = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 and negatives are refused, never read as "not given")."""
    return _number(text, int, lambda v: v >= 1, "an integer >= 1")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(text, float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def resolve_config(args) -> tuple[Config, set[str]]:
    """The run's config (defaults, then --config, then --set, then the command's own options)
    and the keys the user gave; every process option is checked here, so ``--dry-run`` catches
    a bad one."""
    from ..config import apply_overrides, load_toml, parse_set
    from ..processes.cold import check_process_config

    toml = load_toml(args.config) if args.config else {}
    explicit = {f"{sec}.{k}" for sec, v in toml.items() if isinstance(v, dict) for k in v}
    over = parse_set(args.set)
    if getattr(args, "data", None):
        over["data.source"] = args.data
    if getattr(args, "steps", None) is not None:
        over["train.steps"] = args.steps
    if getattr(args, "minutes", None) is not None:
        over["train.minutes"] = args.minutes
        if getattr(args, "steps", None) is None:
            over["train.steps"] = 10**9  # the clock decides
    if getattr(args, "device", None):
        over["train.device"] = args.device
    if getattr(args, "process", None):
        over["process.kind"] = args.process
    if getattr(args, "blend_data", None):
        over["process.blend_data"] = args.blend_data
    cfg = apply_overrides(Config(), {**toml, **over})  # one resolve: the command line wins over the file
    check_process_config(cfg.process)
    return cfg, explicit | set(over)


def progress_factory(enabled: bool = True):
    """``progress(desc, total) -> update(k)``: a tqdm bar that closes itself when full."""
    from tqdm import tqdm

    def progress(desc: str, total: int):
        bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False, disable=not enabled)
        done = [0]

        def update(k: int) -> None:
            bar.update(k)
            done[0] += k
            if done[0] >= total:
                bar.close()

        return update

    return progress
