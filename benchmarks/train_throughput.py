"""Training and inference throughput of unblur's U-Net, against diffusers' UNet2DModel.

A script, not a test: it prints a table. Both networks get the same ADM-style architecture
(widths, blocks per level, attention levels, scale-shift conditioning), so that parameter
count and forward FLOPs match within a few percent (both are printed). The two libraries'
runs alternate for ``--rounds`` rounds and the table gives medians, because a shared CPU
drifts by tens of percent. Achieved GFLOP/s is measured against a torch.mm peak.

    python benchmarks/train_throughput.py --size 32 --batch 64 --rounds 3 --seconds 10
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
import warnings

import torch
from torch import nn

from unblur.nets import UNet, UNetConfig, count_parameters, forward_flops

warnings.filterwarnings("ignore", message=".*TF32.*")


DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def our_config(channels: int) -> UNetConfig:
    return UNetConfig(
        in_channels=channels,
        out_channels=channels,
        base_channels=32,
        channel_mult=(1, 2, 2, 4),
        num_res_blocks=2,
        attn_resolutions=(4, 8),
        head_channels=32,
        norm_groups=32,
    )


def diffusers_model(cfg: UNetConfig, size: int) -> nn.Module | None:
    """The same architecture in diffusers, or None when diffusers is not installed."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None
    levels = cfg.levels
    attn = [2**i in cfg.attn_resolutions for i in range(levels)]
    model = UNet2DModel(
        sample_size=size,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        block_out_channels=tuple(cfg.base_channels * m for m in cfg.channel_mult),
        layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        attention_head_dim=cfg.head_channels,
        norm_num_groups=cfg.norm_groups,
        resnet_time_scale_shift="scale_shift",
        add_attention=cfg.mid_attention,
        dropout=cfg.dropout,
    )

    class Wrapped(nn.Module):  # the Net contract: net(x, c_noise) -> tensor
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x, c_noise, cond=None):
            return self.model(x, c_noise).sample

    return Wrapped()


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 1.0) -> float:
    """GFLOP/s of a large square torch.mm (best of a few)."""
    if dtype == torch.bfloat16:
        n = 512  # without native bf16 this CPU takes seconds for a large bf16 product
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds or best == float("inf"):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def time_steps(fn, seconds: float) -> float:
    """Median seconds per call of ``fn`` over about ``seconds`` (one warm-up, two calls at least)."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < 2 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(net: nn.Module, x: torch.Tensor, *, train: bool, bf16: bool, seconds: float) -> float:
    """Images per second of a training step (forward, backward, AdamW) or a forward."""
    c_noise = torch.rand(x.shape[0])
    target = torch.randn_like(x)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net.train(train)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if not train:
                with torch.no_grad():
                    return net(x, c_noise)
            loss = (net(x, c_noise).float() - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return x.shape[0] / time_steps(step, seconds)


def conv_ceiling(net: nn.Module, x: torch.Tensor, *, bf16: bool, seconds: float) -> float:
    """Images per second if a training step cost only the network's convolutions.

    Every ``nn.Conv2d`` of one forward pass is recorded with its input shape, then each runs
    alone, forward and backward (input gradient wherever the network needs one), under the
    same autocast. No network built from these convolutions can train faster than this.
    """
    shapes: list[tuple[nn.Conv2d, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda m, inp, out: shapes.append((m, tuple(inp[0].shape))))
             for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(x, torch.rand(x.shape[0]))
    for h in hooks:
        h.remove()
    inputs = [torch.randn(shape, requires_grad=i > 0) for i, (_, shape) in enumerate(shapes)]

    def step():
        for (conv, _), inp in zip(shapes, inputs):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = conv(inp)
            out.backward(torch.ones_like(out))

    return x.shape[0] / time_steps(step, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--channels", type=int, default=3, help="image channels")
    parser.add_argument("--batch", type=int, default=64, help="images per step")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--seconds", type=float, default=10.0, help="time per measurement")
    parser.add_argument("--no-bf16", action="store_true", help="skip bf16 autocast runs")
    args = parser.parse_args()
    torch.manual_seed(0)

    cfg = our_config(args.channels)
    ours = UNet(cfg)
    theirs = diffusers_model(cfg, args.size)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    probe = x[:2], torch.rand(2)

    nets = {"unblur": ours} if theirs is None else {"unblur": ours, "diffusers": theirs}
    info = {name: (count_parameters(n), forward_flops(n, *probe)) for name, n in nets.items()}
    if theirs is None:
        print("diffusers is not importable: timing unblur alone")
    peaks = {"fp32": matmul_peak(torch.float32)}
    if not args.no_bf16:
        peaks["bf16"] = matmul_peak(torch.bfloat16)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, {args.channels}x{args.size}x{args.size}")
    for name, (params, flops) in info.items():
        print(f"{name:10s} params {params / 1e6:7.3f} M   forward {flops / 1e9:6.3f} GFLOP/sample")

    modes = [(train, dt) for dt in peaks for train in (True, False)]
    results: dict[tuple[str, bool, str, str], list[float]] = {}
    for r in range(args.rounds):
        for train, dt in modes:
            for name, net in nets.items():
                # Each library in both layouts; the table keeps its better one.
                for layout, inp in (("nchw", x), ("cl", x_cl)):
                    net.to(memory_format=torch.channels_last if layout == "cl" else
                           torch.contiguous_format)
                    if name == "unblur":
                        net.cfg = dataclasses.replace(net.cfg, channels_last=layout == "cl")
                    ips = measure(net, inp, train=train, bf16=dt == "bf16", seconds=args.seconds)
                    results.setdefault((name, train, dt, layout), []).append(ips)
        for dt in peaks:  # a busy machine lowers one measurement: keep the best seen
            peaks[dt] = max(peaks[dt], matmul_peak(getattr(torch, DTYPES[dt]), seconds=0.3))
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    print("matmul peak (best seen): " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()))
    print()
    header = f"{'network':10s} {'mode':6s} {'dtype':5s} {'layout':6s} {'img/s':>8s} {'GFLOP/s':>8s} {'% peak':>7s}"
    if theirs is not None:
        header += f" {'vs diffusers':>12s}"
    print(header)
    def best(name: str, train: bool, dt: str) -> tuple[float, str]:
        return max((statistics.median(results[(name, train, dt, lay)]), lay)
                   for lay in ("nchw", "cl"))

    for train, dt in modes:
        for name in nets:
            ips, layout = best(name, train, dt)
            flops = info[name][1] * (3 if train else 1)  # backward ~ 2x forward
            gflops = ips * flops / 1e9
            row = (f"{name:10s} {'train' if train else 'infer':6s} {dt:5s} {layout:6s} {ips:8.1f} "
                   f"{gflops:8.1f} {100 * gflops / peaks[dt]:6.1f}%")
            if theirs is not None:
                row += f" {ips / best('diffusers', train, dt)[0]:11.2f}x"
            print(row)
    print()
    print("ceiling: the same training step if only unblur's convolutions cost time (forward + backward)")
    for dt in peaks:
        ips = conv_ceiling(ours.to(memory_format=torch.contiguous_format), x, bf16=dt == "bf16",
                           seconds=args.seconds)
        best_theirs = f", {ips / best('diffusers', True, dt)[0]:.2f}x diffusers' {dt}" if theirs is not None else ""
        print(f"  {dt}: {ips:7.1f} img/s{best_theirs}")


if __name__ == "__main__":
    main()
