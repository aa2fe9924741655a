"""``unblur info``: describe a run."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    i = sub.add_parser("info", help="describe a run: config, parameters, FLOPs, steps, data")
    i.add_argument("run")
    i.set_defaults(fn=run_info)


def run_info(args) -> int:
    import torch

    from ..nets import count_parameters, forward_flops
    from ..runs import STATE_FILE, Run

    run = Run.load(args.run, device="cpu")
    info, net = run.data, run.net
    params = count_parameters(net, trainable_only=False)  # a loaded run has gradients off
    flops = forward_flops(net, torch.zeros(1, *info.shape), torch.zeros(1), None)
    steps = "?"
    metrics = Path(args.run) / "metrics.jsonl"
    if metrics.exists():
        lines = metrics.read_text().strip().splitlines()
        if lines:
            steps = json.loads(lines[-1])["step"]
    print(f"run:        {args.run}")
    print(f"data:       {info.source} ({info.kind}, shape {tuple(info.shape)}, {info.num_items} items"
          + (f", {len(info.class_names)} classes" if info.class_names else "") + ")")
    print(f"network:    {type(net).__name__}, {params:,} parameters, {flops / 1e6:.2f} MFLOP per sample forward")
    print(f"process:    {run.process!r}")
    print(f"trained:    {steps} steps" + ("" if (Path(args.run) / STATE_FILE).exists() else " (no resume state)"))
    print("config:")
    print(run.config.to_json())
    return 0
