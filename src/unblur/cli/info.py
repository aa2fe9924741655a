"""``unblur info``: describe a run of any model kind."""

from __future__ import annotations


def add_parser(sub) -> None:
    i = sub.add_parser("info", help="describe a run: what kind it is, config, parameters, FLOPs, steps, data")
    i.add_argument("run")
    i.set_defaults(fn=run_info)


def run_info(args) -> int:
    from ..runs.describe import describe_folder

    print("\n".join(describe_folder(args.run)))
    return 0
