"""``unblur info``: describe a run."""

from __future__ import annotations

from pathlib import Path

from ..utils import read_jsonl


def add_parser(sub) -> None:
    i = sub.add_parser("info", help="describe a run: config, parameters, FLOPs, steps, data")
    i.add_argument("run")
    i.set_defaults(fn=run_info)


def run_info(args) -> int:
    import torch

    from ..nets import count_parameters, forward_flops
    from ..runs import MODEL_FILE, STATE_FILE, Run
    from ..runs.checkpoint import model_step

    run = Run.load(args.run, device="cpu")
    info, net = run.data, run.net
    params = count_parameters(net, trainable_only=False)  # a loaded run has gradients off
    flops = forward_flops(net, torch.zeros(1, *info.shape), torch.zeros(1), None)
    steps = model_step(Path(args.run) / MODEL_FILE)
    if steps is None:  # an export written before the step was recorded: the last whole metrics line
        steps = _last_logged_step(Path(args.run) / "metrics.jsonl")
    print(f"run:        {args.run}")
    print(f"data:       {info.source} ({info.kind}, shape {tuple(info.shape)}, {info.num_items} items"
          + (f", {len(info.class_names)} classes" if info.class_names else "") + ")")
    print(f"network:    {type(net).__name__}, {params:,} parameters, {flops / 1e6:.2f} MFLOP per sample forward")
    print(f"process:    {run.process!r}")
    print(f"trained:    {steps} steps" + ("" if (Path(args.run) / STATE_FILE).exists() else " (no resume state)"))
    print("config:")
    print(run.config.to_json())
    return 0


def _last_logged_step(path: Path) -> int | str:
    steps = [r["step"] for r in read_jsonl(path) if isinstance(r.get("step"), int)]
    return steps[-1] if steps else "?"
