"""What several commands share: config arguments, positive-number checks, CPU threads, progress bars."""

from __future__ import annotations

import argparse
import math
import os
import sys

from ..config import Config
from ..runs.catalog import GRIDS, sampler_help

SAMPLER_HELP = sampler_help() + " (default: the run's)"  # from the sampler registry
GRID_HELP = (" | ".join(GRIDS) + " (default: the run's sample.grid; auto is trailing for a DDPM model, karras "
             "otherwise)")
DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps (auto: a GPU when there is one, else the CPU)"


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that appends "(default: X)" to an option's help, where X says something:
    not for None, a flag or an empty list, nor where the help already names its default."""

    @staticmethod
    def says(default: object) -> bool:
        """Whether a default is worth showing (not None, a flag's bool or an empty list)."""
        return default is not None and not isinstance(default, bool) and default != []

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not self.says(action.default) or "default" in text:
            return text
        return super()._get_help_string(action)


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


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """``--threads N``: PyTorch's CPU threads for this command (as ``train.threads`` for training)."""
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads PyTorch may use (torch.set_num_threads; default: PyTorch's, one per core); "
                   "on a machine shared with other work, --threads 1 is often faster")


def apply_threads(args) -> None:
    """Set ``--threads``; on a busy machine (1-minute load average above the core count) say so on
    stderr, and suggest --threads 1 unless it is given. Called once a command's request is
    checked, just before its work, so that a refused request still fails in one line."""
    import torch

    threads = getattr(args, "threads", None)
    if threads:
        torch.set_num_threads(threads)
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this system
        return
    if load > cores and threads != 1:
        print(f"note: this machine is busy (load average {load:.1f} on {cores} cores): PyTorch's threads will "
              "compete with the other work; --threads 1 is often faster here, and timings are not comparable "
              "with those of an idle machine", file=sys.stderr)


def resolve_config(args) -> tuple[Config, set[str]]:
    """The run's config (defaults, then --config, then --set, then the command's own options)
    and the keys the user gave; every process option is checked here, so ``--dry-run`` catches
    a bad one."""
    from ..config import apply_overrides, load_toml, parse_set
    from ..kinds import resolve

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
    if getattr(args, "model_kind", None):
        over["model.kind"] = args.model_kind
    if getattr(args, "latent", None):
        over["data.latent"] = args.latent
    if getattr(args, "embed_ae", False):
        over["data.embed_ae"] = "true"
    if getattr(args, "clip", None):
        over["cond.clip"] = args.clip
    cfg = apply_overrides(Config(), {**toml, **over})  # one resolve: the command line wins over the file
    given = explicit | set(over)
    cfg = resolve(cfg, given)  # the model kind's defaults where the user gave nothing, and its checks
    return cfg, given


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
